//! Data-quality checks in the manner of dbt tests and Great Expectations.
//!
//! Two layers, same names and severities:
//! - row checks (not null, type, accepted values, ranges, `valid_from < valid_to`,
//!   dates inside the month) run as polars expressions while a file is parsed
//!   ([`crate::etl::spec`]); an error-level failure rejects the file with its line;
//! - table checks (unique keys, type-2 history consistency, referential integrity, row
//!   counts, reconciliation of aggregates) run as SQL, inside the load's transaction
//!   before it commits, and on demand with `pipeline check`.
//!
//! Every result is stored in `dq_results` (with the run it belongs to) and shown as a
//! table with a sample of failing rows. A failed `error` check stops the load and the
//! transaction rolls back, leaving the previous data; a failed `warn` check is recorded
//! and the load goes on.

use std::fmt::Write as _;

use serde::Serialize;
// Check queries are built from this module's constant text and typed dates only.
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

mod checks;
mod facts;
mod history;

use checks::ROW_COUNT;
pub use checks::{all_checks, customer_checks, feature_checks, sales_checks, store_checks};
pub use facts::{FileFacts, history_from_facts};
pub use history::{CustomerTables, HISTORY_CHECKS, run_history_checks};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warn,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warn => "warn",
            Severity::Error => "error",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub table: String,
    pub check: String,
    pub severity: Severity,
    pub passed: bool,
    pub failing_rows: i64,
    /// A few failing rows, as JSON objects.
    pub sample: serde_json::Value,
    pub detail: String,
}

impl CheckResult {
    /// A failed error-level check: blocks a load.
    pub fn is_blocking(&self) -> bool {
        !self.passed && self.severity == Severity::Error
    }
}

/// The blocking failures of `results`, as one line, or `None` when nothing blocks.
pub fn blocking_summary(results: &[CheckResult]) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.is_blocking())
        .map(|r| format!("{}.{} ({} rows)", r.table, r.check, r.failing_rows))
        .collect();
    (!failed.is_empty()).then(|| failed.join(", "))
}

/// A table check: `failing` is a query returning the rows that break it.
#[derive(Clone, Debug)]
pub struct SqlCheck {
    pub table: &'static str,
    pub name: String,
    pub severity: Severity,
    pub failing: String,
    pub detail: &'static str,
    /// What already guarantees this check when a load has just replaced the table's
    /// rows: the file's row rules (run by the validator on every row) or the table's
    /// primary key (COPY fails on a duplicate). Loads skip such checks
    /// ([`for_load`]); `pipeline check`, which audits tables whoever wrote them, runs
    /// them all.
    pub guaranteed_by: Option<&'static str>,
}

/// The checks a load runs inside its transaction: those its own validation and the
/// table's constraints do not already guarantee (each costs a scan of the table).
pub fn for_load(checks: Vec<SqlCheck>) -> Vec<SqlCheck> {
    checks
        .into_iter()
        .filter(|c| c.guaranteed_by.is_none())
        .collect()
}

/// A load knows how many rows it has just written to a table it replaced: takes that
/// table's `row_count` check out of `checks` and returns its result, the same as the
/// query would give, without a scan.
pub fn row_count_from_load(
    checks: &mut Vec<SqlCheck>,
    table: &str,
    rows: u64,
) -> Option<CheckResult> {
    let at = checks
        .iter()
        .position(|c| c.table == table && c.name == ROW_COUNT)?;
    let c = checks.remove(at);
    Some(CheckResult {
        table: c.table.to_string(),
        check: c.name,
        severity: c.severity,
        passed: rows > 0,
        failing_rows: i64::from(rows == 0),
        sample: if rows == 0 {
            serde_json::json!([{ "rows": 0 }])
        } else {
            serde_json::json!([])
        },
        detail: c.detail.to_string(),
    })
}

/// `work_mem` for the check queries (one sort or hash table each).
const CHECK_WORK_MEM: &str = "128MB";

/// Runs `checks` on `conn` (inside the caller's transaction, when it has one).
pub async fn run_checks(
    conn: &mut PgConnection,
    checks: &[SqlCheck],
) -> Result<Vec<CheckResult>, sqlx::Error> {
    let mut out = Vec::with_capacity(checks.len());
    if checks.is_empty() {
        return Ok(out);
    }
    raise_work_mem(conn).await?;
    for c in checks {
        let started = std::time::Instant::now();
        let sql = format!(
            "WITH f AS ({}) SELECT (SELECT count(*) FROM f)::bigint, \
             (SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]'::jsonb) FROM \
               (SELECT * FROM f LIMIT 5) s)::text",
            c.failing
        );
        let (failing, sample): (i64, String) = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await?;
        tracing::debug!(
            table = c.table,
            check = %c.name,
            ms = started.elapsed().as_millis() as u64,
            "check ran"
        );
        out.push(CheckResult {
            table: c.table.to_string(),
            check: c.name.clone(),
            severity: c.severity,
            passed: failing == 0,
            failing_rows: failing,
            sample: serde_json::from_str(&sample).unwrap_or(serde_json::Value::Null),
            detail: c.detail.to_string(),
        });
    }
    Ok(out)
}

/// Runs `checks` on the live tables as [`run_checks`] does, with the customer history
/// and relationship checks combined into one query ([`run_history_checks`]); results
/// in the order of `checks`.
pub async fn run_checks_combined(
    conn: &mut PgConnection,
    checks: &[SqlCheck],
) -> Result<Vec<CheckResult>, sqlx::Error> {
    let mut rest = checks.to_vec();
    let mut out = run_history_checks(&mut *conn, &mut rest, CustomerTables::LIVE).await?;
    out.extend(run_checks(&mut *conn, &rest).await?);
    out.sort_by_key(|r| {
        checks
            .iter()
            .position(|c| c.table == r.table && c.name == r.check)
            .unwrap_or(usize::MAX)
    });
    Ok(out)
}

/// The checks sort and hash whole tables (window over the type-2 history, anti-joins
/// for relationships): with the default 4 MB they spill to disk. Raised for the
/// caller's transaction only.
async fn raise_work_mem(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL work_mem = '{CHECK_WORK_MEM}'"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores results in `dq_results`, attached to a run of the ledger when there is one.
pub async fn record(
    pool: &PgPool,
    run_id: Option<i64>,
    results: &[CheckResult],
) -> Result<(), sqlx::Error> {
    if results.is_empty() {
        return Ok(());
    }
    // One statement for the lot: a load records dozens of results.
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "table_name": r.table,
                "check_name": r.check,
                "severity": r.severity.as_str(),
                "passed": r.passed,
                "failing_rows": r.failing_rows,
                "sample": r.sample,
                "detail": r.detail,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO dq_results \
           (run_id, table_name, check_name, severity, passed, failing_rows, sample, detail) \
         SELECT $1, x.table_name, x.check_name, x.severity, x.passed, x.failing_rows, \
                x.sample, x.detail \
         FROM jsonb_to_recordset($2::jsonb) AS x(table_name text, check_name text, \
              severity text, passed boolean, failing_rows bigint, sample jsonb, detail text)",
    )
    .bind(run_id)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(pool)
    .await?;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The results as a table for a terminal, failing checks with a sample of their rows.
pub fn render(results: &[CheckResult]) -> String {
    let rows: Vec<[String; 6]> = results
        .iter()
        .map(|r| {
            let status = match (r.passed, r.severity) {
                (true, _) => "pass",
                (false, Severity::Warn) => "WARN",
                (false, Severity::Error) => "FAIL",
            };
            let sample = match &r.sample {
                serde_json::Value::Array(a) if !a.is_empty() && !r.passed => a
                    .iter()
                    .take(2)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            [
                status.to_string(),
                r.severity.as_str().to_string(),
                r.table.clone(),
                truncate(&r.check, 48),
                r.failing_rows.to_string(),
                truncate(&sample, 70),
            ]
        })
        .collect();
    let head = ["result", "severity", "table", "check", "failing", "sample"];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let _ = write!(out, "{c}{}", " ".repeat(pad));
            if i + 1 < cells.len() {
                out.push_str("  ");
            }
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let blocking = results.iter().filter(|r| r.is_blocking()).count();
    let _ = writeln!(
        out,
        "{} checks: {} passed, {} warnings, {} errors",
        results.len(),
        results.len() - failed,
        failed - blocking,
        blocking
    );
    out
}
