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

use crate::etl::Month;

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

const ROW_COUNT: &str = "row_count(>0)";

const BY_FILE_RULES: Option<&str> = Some("the file's row rules");
const BY_PRIMARY_KEY: Option<&str> = Some("the primary key");

impl SqlCheck {
    fn guaranteed_by(mut self, by: Option<&'static str>) -> SqlCheck {
        self.guaranteed_by = by;
        self
    }
}

fn check(
    table: &'static str,
    name: impl Into<String>,
    severity: Severity,
    failing: impl Into<String>,
    detail: &'static str,
) -> SqlCheck {
    SqlCheck {
        table,
        name: name.into(),
        severity,
        failing: failing.into(),
        detail,
        guaranteed_by: None,
    }
}

fn row_count(table: &'static str, filter: &str) -> SqlCheck {
    check(
        table,
        ROW_COUNT,
        Severity::Error,
        format!("SELECT count(*) AS rows FROM {table} {filter} HAVING count(*) = 0"),
        "the table holds rows",
    )
}

fn unique(table: &'static str, key: &str, filter: &str) -> SqlCheck {
    check(
        table,
        format!("unique({key})"),
        Severity::Error,
        format!(
            "SELECT {key}, count(*) AS n FROM {table} {filter} GROUP BY {key} HAVING count(*) > 1"
        ),
        "the key is unique",
    )
    .guaranteed_by(BY_PRIMARY_KEY)
}

/// Checks of the three customer tables (`customer_activity`, `customer_profiles`,
/// `labels`).
pub fn customer_checks() -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    vec![
        row_count("customer_profiles", ""),
        unique("customer_profiles", "idx", ""),
        check(
            "customer_profiles",
            "range(attr_a)",
            Error,
            "SELECT idx, attr_a FROM customer_profiles WHERE attr_a NOT BETWEEN 1 AND 5",
            "attr_a in 1..=5",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_profiles",
            "accepted_values(attr_b)",
            Error,
            "SELECT idx, attr_b FROM customer_profiles WHERE attr_b NOT IN ('a','b','c','d')",
            "attr_b in a, b, c, d",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_profiles",
            "accepted_values(attr_c)",
            Error,
            "SELECT idx, attr_c FROM customer_profiles WHERE attr_c NOT IN ('yes','no')",
            "attr_c in yes, no",
        )
        .guaranteed_by(BY_FILE_RULES),
        row_count("labels", ""),
        unique("labels", "idx", ""),
        check(
            "labels",
            "accepted_values(label)",
            Error,
            "SELECT idx, label FROM labels WHERE label NOT IN (0, 1)",
            "label in 0, 1",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "labels",
            "relationships(idx -> customer_profiles)",
            Warn,
            "SELECT l.idx FROM labels l WHERE NOT EXISTS \
             (SELECT 1 FROM customer_profiles p WHERE p.idx = l.idx)",
            "every label belongs to a known customer",
        ),
        row_count("customer_activity", ""),
        unique("customer_activity", "idx, valid_from", ""),
        check(
            "customer_activity",
            "valid_from_before_valid_to",
            Error,
            "SELECT idx, valid_from, valid_to FROM customer_activity WHERE valid_to <= valid_from",
            "every closed period ends after it starts",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_activity",
            "no_overlapping_periods",
            Error,
            "SELECT idx, valid_from, valid_to, next_from FROM (\
               SELECT idx, valid_from, valid_to, \
                      lead(valid_from) OVER (PARTITION BY idx ORDER BY valid_from) AS next_from \
               FROM customer_activity) s \
             WHERE valid_to IS NOT NULL AND next_from IS NOT NULL AND valid_to > next_from",
            "closed periods [valid_from, valid_to) of a customer do not overlap",
        ),
        check(
            "customer_activity",
            "at_most_one_current_row",
            Warn,
            "SELECT idx, count(*) AS current_rows FROM customer_activity \
             WHERE valid_to IS NULL GROUP BY idx HAVING count(*) > 1",
            "one open (valid_to empty) row per customer; build-features takes the latest",
        ),
        check(
            "customer_activity",
            "finite(scd_a)",
            Error,
            "SELECT idx, valid_from, scd_a FROM customer_activity \
             WHERE scd_a IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            "scd_a is a finite number",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_activity",
            "relationships(idx -> customer_profiles)",
            Warn,
            "SELECT DISTINCT a.idx FROM customer_activity a WHERE NOT EXISTS \
             (SELECT 1 FROM customer_profiles p WHERE p.idx = a.idx)",
            "every activity row belongs to a known customer",
        ),
        check(
            "customer_profiles",
            "has_current_activity",
            Warn,
            "SELECT p.idx FROM customer_profiles p WHERE NOT EXISTS \
             (SELECT 1 FROM customer_activity a WHERE a.idx = p.idx AND a.valid_to IS NULL)",
            "every customer has a current activity row (else no features)",
        ),
    ]
}

/// Checks of `store_locations`.
pub fn store_checks() -> Vec<SqlCheck> {
    vec![
        row_count("store_locations", ""),
        unique("store_locations", "idx", ""),
        check(
            "store_locations",
            "not_blank(location)",
            Severity::Error,
            "SELECT idx, location FROM store_locations WHERE btrim(location) = ''",
            "every store has a location",
        )
        .guaranteed_by(BY_FILE_RULES),
    ]
}

/// Checks of `sales` and `monthly_sales`, for one month or all.
pub fn sales_checks(month: Option<Month>) -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    let (filter, and) = match month {
        Some(m) => {
            let d = m.first_day().format("%Y-%m-%d");
            (
                format!("WHERE sale_month = DATE '{d}'"),
                format!("AND s.sale_month = DATE '{d}'"),
            )
        }
        None => (String::new(), String::new()),
    };
    vec![
        row_count("sales", &filter),
        unique("sales", "sale_month, idx", &filter),
        check(
            "sales",
            "range(value)",
            Warn,
            format!(
                "SELECT s.sale_month, s.idx, s.value FROM sales s \
                 WHERE (s.value < 0 OR s.value > 10) {and}"
            ),
            "value in 0..=10",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "sales",
            "relationships(store_idx -> store_locations)",
            Error,
            format!(
                "SELECT s.sale_month, s.idx, s.store_idx FROM sales s WHERE NOT EXISTS \
                 (SELECT 1 FROM store_locations l WHERE l.idx = s.store_idx) {and}"
            ),
            "every sale is in a known store",
        ),
        check(
            "monthly_sales",
            "reconciles_with(sales)",
            Error,
            format!(
                "SELECT coalesce(m.store_idx, s.store_idx) AS store_idx, \
                        coalesce(m.sale_month, s.sale_month) AS sale_month, \
                        m.value AS monthly, s.value AS summed \
                 FROM (SELECT * FROM monthly_sales {filter}) m \
                 FULL JOIN (SELECT store_idx, sale_month, sum(value) AS value \
                            FROM sales {filter} GROUP BY 1, 2) s \
                   ON m.store_idx = s.store_idx AND m.sale_month = s.sale_month \
                 WHERE m.value IS NULL OR s.value IS NULL OR abs(m.value - s.value) > 1e-6"
            ),
            "monthly_sales holds the sum of sales per store and month",
        ),
    ]
}

/// Checks of `feature_store`.
pub fn feature_checks() -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    vec![
        row_count("feature_store", ""),
        unique("feature_store", "idx", ""),
        check(
            "feature_store",
            "accepted_values(attr_b)",
            Error,
            "SELECT idx, attr_b FROM feature_store WHERE attr_b NOT IN ('a','b','c','d')",
            "attr_b in a, b, c, d",
        ),
        check(
            "feature_store",
            "accepted_values(label)",
            Error,
            "SELECT idx, label FROM feature_store WHERE label NOT IN (0, 1)",
            "label in 0, 1 (or empty)",
        ),
        check(
            "feature_store",
            "not_null(label)",
            Warn,
            "SELECT idx FROM feature_store WHERE label IS NULL",
            "customers without a label are kept for scoring, not for training",
        ),
    ]
}

/// Every table check.
pub fn all_checks() -> Vec<SqlCheck> {
    let mut v = customer_checks();
    v.extend(store_checks());
    v.extend(sales_checks(None));
    v.extend(feature_checks());
    v
}

/// Runs `checks` on `conn` (inside the caller's transaction, when it has one).
/// `work_mem` for the check queries (one sort or hash table each).
const CHECK_WORK_MEM: &str = "128MB";

pub async fn run_checks(
    conn: &mut PgConnection,
    checks: &[SqlCheck],
) -> Result<Vec<CheckResult>, sqlx::Error> {
    let mut out = Vec::with_capacity(checks.len());
    // The checks sort and hash whole tables (window over the type-2 history,
    // anti-joins for relationships): with the default 4 MB they spill to disk. Raised
    // for this transaction only.
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL work_mem = '{CHECK_WORK_MEM}'"
    )))
    .execute(&mut *conn)
    .await?;
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
