//! Loads: validated rows streamed into `COPY ... FROM STDIN`, one publishing
//! transaction per load.
//!
//! - `load_customers` loads `customer_activity`, `customer_profiles` and `labels` at
//!   once, each file on its own connection into a new table written frozen
//!   (`COPY ... FREEZE` in the transaction that creates it), checks the new tables,
//!   then swaps all three in with one transaction: readers see the three old tables or
//!   the three new ones, whatever their isolation level (frozen rows are visible to
//!   snapshots older than the load, so a swap no longer shows them empty tables, as
//!   TRUNCATE or a plain swap would). A role that cannot swap the tables (not their
//!   owner, or something depends on them) replaces their rows with `DELETE` + `COPY`
//!   in one transaction instead, one file after the other.
//! - `load_sales` upserts `stores.csv` into `store_locations`, then replaces one month
//!   of `sales` and its `monthly_sales` aggregate in one transaction.
//!
//! Both take a transaction-scoped advisory lock, so two loads of the same thing run one
//! after the other; both run their table checks before the commit, and an error-level
//! failure rolls everything back (and drops a customer load's new tables). Every file
//! is opened before the transaction starts: a missing file touches nothing.

use std::io::IsTerminal;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::Semaphore;

use super::ingest::{Copied, Ingest};
use super::source::ObjectReader;
use super::spec::{self, FileSpec};
use super::swap::{CUSTOMER_TABLES, can_swap, index_like, staging_name, swap_in};
use super::{EtlError, Month, Source};
use crate::quality::{self, CheckResult, CustomerTables, FileFacts};

/// The facts each customer file gathers as it streams, in file order (activity,
/// profiles, labels): they answer the history and relationship checks.
fn customer_facts() -> [FileFacts; 3] {
    [FileFacts::history(), FileFacts::ids(), FileFacts::ids()]
}

/// What a load did, and its data-quality results (kept when it failed too).
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<LoadReport, EtlError>,
    pub checks: Vec<CheckResult>,
}

/// Rows written per table; `rows_loaded` counts the input rows (what the ledger
/// records), not upserted stores or computed aggregates.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub tables: Vec<(String, u64)>,
    pub rows_loaded: u64,
}

impl LoadReport {
    pub fn rows(&self) -> u64 {
        self.rows_loaded
    }

    pub fn rows_of(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
    }
}

/// Loads files from a source into a database.
#[derive(Debug, Clone)]
pub struct Loader {
    pub pool: PgPool,
    pub source: Source,
    /// Bytes parsed and sent per chunk; bounds memory.
    pub chunk_bytes: usize,
    /// Draw progress bars (default: when stderr is a terminal).
    pub progress: bool,
    /// Months loaded at once by catch-up and backfill (1 ..= [`crate::runs::MAX_JOBS`]).
    pub jobs: usize,
    /// Chunks parsed or queued for COPY at once, over every file this loader (and its
    /// clones) is loading.
    pub(super) budget: Arc<Semaphore>,
}

/// The loader's budget of chunks in memory at once: one per customer file loading
/// concurrently, and one more so that parsing the next chunk overlaps sending one.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// Default chunk: 1 MiB of text (30,000 activity lines, 110,000 label lines). What
/// a chunk costs in memory is dominated by polars' frame of it (every column as text,
/// then typed, then the check masks: 10-30 times the bytes for the narrow files), and
/// three files load at once, each with a chunk being parsed and two encoded ones
/// queued: memory stays ~100 MB whatever the files' size. Larger chunks do not load
/// faster (measured at 1, 2 and 8 MiB on the 1.5 M-customer files).
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Months loaded at once by default.
pub const DEFAULT_JOBS: usize = 4;

impl Loader {
    pub fn new(pool: PgPool, source: Source) -> Loader {
        Loader {
            pool,
            source,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            progress: std::io::stderr().is_terminal(),
            jobs: DEFAULT_JOBS,
            budget: Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT)),
        }
    }

    /// The one-off load of the customer tables, atomically.
    pub async fn load_customers(&self) -> Outcome {
        let mut checks = Vec::new();
        let result = self.load_customers_inner(&mut checks).await;
        Outcome { result, checks }
    }

    async fn load_customers_inner(
        &self,
        checks: &mut Vec<CheckResult>,
    ) -> Result<LoadReport, EtlError> {
        let specs = [
            spec::customer_activity(),
            spec::customer_profiles(),
            spec::labels(),
        ];
        let mut readers = Vec::new();
        for s in &specs {
            readers.push(self.source.open(&s.file).await?);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.load-customers'), 0)")
            .execute(&mut *tx)
            .await?;
        if !can_swap(&mut tx).await? {
            let (report, facts) = self
                .load_customers_in_place(&mut tx, specs, readers, checks)
                .await?;
            let results =
                customer_table_checks(&mut tx, &report, CustomerTables::LIVE, facts).await?;
            commit_unless_blocked(tx, results, checks).await?;
            return Ok(report);
        }
        let published = self.load_customers_staged(tx, specs, readers, checks).await;
        if published.is_err() {
            self.drop_staged().await;
        }
        published
    }

    /// The three files one after the other on `tx`'s connection: DELETE + COPY into
    /// the tables themselves (when the loading role cannot swap tables).
    async fn load_customers_in_place(
        &self,
        tx: &mut PgConnection,
        specs: [FileSpec; 3],
        readers: Vec<ObjectReader>,
        checks: &mut Vec<CheckResult>,
    ) -> Result<(LoadReport, Option<[FileFacts; 3]>), EtlError> {
        let mut report = LoadReport::default();
        let mut gathered = Vec::new();
        for ((s, reader), facts) in specs.into_iter().zip(readers).zip(customer_facts()) {
            let table = s.table;
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
            let how = Ingest {
                freeze: false,
                facts: Some(facts),
            };
            let copied = self
                .copy_file(&mut *tx, s, table, reader, checks, how)
                .await?;
            report.tables.push((table.to_string(), copied.rows));
            report.rows_loaded += copied.rows;
            gathered.extend(copied.facts);
        }
        Ok((report, gathered.try_into().ok()))
    }

    /// The three files at once, each on its own connection into a new table
    /// (`<table>_loading`, committed frozen: see [`Loader::stage`]), checked, then
    /// swapped in for the old tables on `tx`, whose commit publishes all three at once.
    async fn load_customers_staged(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        specs: [FileSpec; 3],
        readers: Vec<ObjectReader>,
        checks: &mut Vec<CheckResult>,
    ) -> Result<LoadReport, EtlError> {
        let [a, p, l] = specs;
        let mut readers = readers.into_iter();
        let (ra, rp, rl) = (
            readers.next().expect("three readers"),
            readers.next().expect("three readers"),
            readers.next().expect("three readers"),
        );
        let [fa, fp, fl] = customer_facts();
        let (sa, sp, sl) = tokio::join!(
            self.stage(a, ra, fa),
            self.stage(p, rp, fp),
            self.stage(l, rl, fl)
        );
        let mut report = LoadReport::default();
        let mut failed = None;
        let mut gathered = Vec::new();
        for staged in [sa, sp, sl] {
            match staged {
                Ok((table, copied, results)) => {
                    checks.extend(results);
                    report.tables.push((table.to_string(), copied.rows));
                    report.rows_loaded += copied.rows;
                    gathered.extend(copied.facts);
                }
                // The first file's error (in file order) is the one reported.
                Err((e, results)) => {
                    checks.extend(results);
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // The table checks read the new tables before they are swapped in: readers
        // are not kept waiting while they run.
        let names = CUSTOMER_TABLES.map(staging_name);
        let staged = CustomerTables {
            activity: &names[0],
            profiles: &names[1],
            labels: &names[2],
        };
        let facts = gathered.try_into().ok();
        let results = customer_table_checks(&mut tx, &report, staged, facts).await?;
        if quality::blocking_summary(&results).is_none() {
            swap_in(&mut tx).await?;
        }
        commit_unless_blocked(tx, results, checks).await?;
        Ok(report)
    }

    /// Loads one file into a new table `<table>_loading` on a connection of its own,
    /// in one transaction that creates, fills and commits it: the table's columns,
    /// defaults and constraints, then the rows, then its indexes (built once over the
    /// loaded rows, which is cheaper than keeping them up to date row by row; a
    /// duplicate key then shows when the unique index is built, and is traced back to
    /// its lines). The rows are written frozen (`COPY ... FREEZE`, allowed because the
    /// table is created in the same transaction): once swapped in they are visible to
    /// every snapshot, so even a repeatable-read reader that took its snapshot before
    /// the load sees the new rows rather than an empty table.
    async fn stage(
        &self,
        spec: FileSpec,
        reader: ObjectReader,
        facts: FileFacts,
    ) -> Result<(&'static str, Copied, Vec<CheckResult>), (EtlError, Vec<CheckResult>)> {
        let table = spec.table;
        let mut results = Vec::new();
        let r: Result<Copied, EtlError> = async {
            let next = staging_name(table);
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {next}; \
                 CREATE TABLE {next} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES)"
            )))
            .execute(&mut *tx)
            .await?;
            let how = Ingest {
                freeze: true,
                facts: Some(facts),
            };
            let copied = self
                .copy_file(&mut tx, spec.clone(), &next, reader, &mut results, how)
                .await?;
            if let Err(e) = index_like(&mut tx, table, &next).await {
                return Err(self.duplicate_or(e, spec).await);
            }
            tx.commit().await?;
            Ok(copied)
        }
        .await;
        match r {
            Ok(copied) => Ok((table, copied, results)),
            Err(e) => Err((e, results)),
        }
    }

    /// Removes whatever staging tables a failed load left (best effort: the next load
    /// drops them too).
    async fn drop_staged(&self) {
        let names: Vec<String> = CUSTOMER_TABLES.iter().map(|t| staging_name(t)).collect();
        let sql = format!("DROP TABLE IF EXISTS {}", names.join(", "));
        if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await {
            tracing::warn!(error = %e, "dropping the staging tables failed");
        }
    }

    /// One month of sales (and the store list), replacing that month.
    pub async fn load_sales(&self, month: Month) -> Outcome {
        let mut checks = Vec::new();
        let result = self.load_sales_inner(month, &mut checks).await;
        Outcome { result, checks }
    }

    async fn load_sales_inner(
        &self,
        month: Month,
        checks: &mut Vec<CheckResult>,
    ) -> Result<LoadReport, EtlError> {
        let stores = spec::stores();
        let sales = spec::sales(month);
        // The month's file first: when it is not there yet, the month is waiting.
        let sales_reader = self.source.open(&sales.file).await?;
        let stores_reader = self.source.open(&stores.file).await?;
        let first = month.first_day();

        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.load-sales'), $1)")
            .bind(month.year() * 100 + month.month() as i32)
            .execute(&mut *tx)
            .await?;
        let mut report = LoadReport::default();

        sqlx::query(
            "CREATE TEMP TABLE stores_in (idx integer PRIMARY KEY, location text NOT NULL) \
             ON COMMIT DROP",
        )
        .execute(&mut *tx)
        .await?;
        let how = Ingest::default();
        self.copy_file(&mut tx, stores, "stores_in", stores_reader, checks, how)
            .await?;
        let upserted = sqlx::query(
            // Only new or changed stores: an unchanged row is not touched, so months
            // loading at once do not wait on each other's row locks.
            "INSERT INTO store_locations (idx, location) \
             SELECT i.idx, i.location FROM stores_in i WHERE NOT EXISTS \
               (SELECT 1 FROM store_locations l WHERE l.idx = i.idx AND l.location = i.location) \
             ORDER BY i.idx \
             ON CONFLICT (idx) DO UPDATE SET location = EXCLUDED.location",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        report
            .tables
            .push(("store_locations".to_string(), upserted));

        sqlx::query("DELETE FROM sales WHERE sale_month = $1")
            .bind(first)
            .execute(&mut *tx)
            .await?;
        let how = Ingest::default();
        let n = self
            .copy_file(&mut tx, sales, "sales", sales_reader, checks, how)
            .await?
            .rows;
        report.tables.push(("sales".to_string(), n));
        report.rows_loaded = n;

        sqlx::query("DELETE FROM monthly_sales WHERE sale_month = $1")
            .bind(first)
            .execute(&mut *tx)
            .await?;
        let agg = sqlx::query(
            "INSERT INTO monthly_sales (store_idx, location, sale_month, value) \
             SELECT s.store_idx, l.location, s.sale_month, sum(s.value) \
             FROM sales s JOIN store_locations l ON l.idx = s.store_idx \
             WHERE s.sale_month = $1 GROUP BY s.store_idx, l.location, s.sale_month",
        )
        .bind(first)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        report.tables.push(("monthly_sales".to_string(), agg));

        let mut to_check = quality::store_checks();
        to_check.extend(quality::sales_checks(Some(month)));
        let mut to_run = quality::for_load(to_check);
        let mut results: Vec<CheckResult> = quality::row_count_from_load(&mut to_run, "sales", n)
            .into_iter()
            .collect();
        results.extend(quality::run_checks(&mut tx, &to_run).await?);
        commit_unless_blocked(tx, results, checks).await?;
        Ok(report)
    }
}

/// The table checks of a customer load: row counts from the load itself, the history
/// and relationship checks from the facts the files gathered as they streamed (or, when
/// the activity file was not sorted, as one query over `tables`), then whatever else is
/// left.
async fn customer_table_checks(
    conn: &mut PgConnection,
    report: &LoadReport,
    tables: CustomerTables<'_>,
    facts: Option<[FileFacts; 3]>,
) -> Result<Vec<CheckResult>, EtlError> {
    let mut to_run = quality::for_load(quality::customer_checks());
    let mut results = Vec::new();
    for (table, rows) in &report.tables {
        results.extend(quality::row_count_from_load(&mut to_run, table, *rows));
    }
    let streamed = facts.and_then(|[activity, profiles, labels]| {
        quality::history_from_facts(&mut to_run, activity, &profiles, &labels)
    });
    match streamed {
        Some(r) => results.extend(r),
        None => results.extend(quality::run_history_checks(&mut *conn, &mut to_run, tables).await?),
    }
    results.extend(quality::run_checks(&mut *conn, &to_run).await?);
    Ok(results)
}

/// Keeps `results` in `checks`, then commits `tx`, or rolls it back when an error-level
/// check failed ([`EtlError::Quality`]): the load's table checks gate its commit.
pub(crate) async fn commit_unless_blocked(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    results: Vec<CheckResult>,
    checks: &mut Vec<CheckResult>,
) -> Result<(), EtlError> {
    let blocking = quality::blocking_summary(&results);
    checks.extend(results);
    if let Some(b) = blocking {
        tx.rollback().await?;
        return Err(EtlError::Quality(b));
    }
    tx.commit().await?;
    Ok(())
}
