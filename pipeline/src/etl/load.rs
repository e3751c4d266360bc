//! Loads: validated rows streamed into `COPY ... FROM STDIN`, one transaction per load.
//!
//! - `load_customers` replaces `customer_activity`, `customer_profiles` and `labels`
//!   with `DELETE` + `COPY` in one transaction: MVCC readers see the old tables until
//!   the commit and the new ones after, never a half (TRUNCATE would not be MVCC-safe,
//!   and a table swap breaks the readers' snapshots the same way).
//! - `load_sales` upserts `stores.csv` into `store_locations`, then replaces one month
//!   of `sales` and its `monthly_sales` aggregate in one transaction.
//!
//! Both take a transaction-scoped advisory lock, so two loads of the same thing run one
//! after the other; both run their table checks before the commit, and an error-level
//! failure rolls everything back. Every file is opened before the transaction starts:
//! a missing file touches nothing.

use std::io::IsTerminal;
use std::time::Instant;

use sqlx::postgres::PgDatabaseError;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::pgcopy;
use super::source::ObjectReader;
use super::spec::{self, FileSpec, Kind};
use super::validate::Validator;
use super::{EtlError, Month, Source};
use crate::progress::Progress;
use crate::quality::{self, CheckResult};

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
}

/// Default chunk: large enough for polars' parallel parser, small enough to bound
/// memory (a chunk is held about three times: raw, frame, CSV out).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// Months loaded at once by default.
pub const DEFAULT_JOBS: usize = 4;

/// Files up to this size go in with one `INSERT ... unnest` rather than COPY (see
/// [`insert_small`]); above it COPY's streaming ingest is the faster path.
const SMALL_FILE_BYTES: usize = 1 << 20;

impl Loader {
    pub fn new(pool: PgPool, source: Source) -> Loader {
        Loader {
            pool,
            source,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            progress: std::io::stderr().is_terminal(),
            jobs: DEFAULT_JOBS,
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
        let mut report = LoadReport::default();
        for (s, reader) in specs.into_iter().zip(readers) {
            let table = s.table;
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
            let n = self.copy_file(&mut tx, s, table, reader, checks).await?;
            report.tables.push((table.to_string(), n));
            report.rows_loaded += n;
        }
        let mut to_run = quality::for_load(quality::customer_checks());
        let mut results = Vec::new();
        for (table, rows) in &report.tables {
            results.extend(quality::row_count_from_load(&mut to_run, table, *rows));
        }
        results.extend(quality::run_checks(&mut tx, &to_run).await?);
        commit_unless_blocked(tx, results, checks).await?;
        Ok(report)
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
        self.copy_file(&mut tx, stores, "stores_in", stores_reader, checks)
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
        let n = self
            .copy_file(&mut tx, sales, "sales", sales_reader, checks)
            .await?;
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

    /// Streams one file through the validator into `COPY target`. Returns rows copied.
    async fn copy_file(
        &self,
        conn: &mut PgConnection,
        spec: FileSpec,
        target: &str,
        mut reader: ObjectReader,
        checks: &mut Vec<CheckResult>,
    ) -> Result<u64, EtlError> {
        let started = Instant::now();
        let location = reader.location().to_string();
        if reader
            .size()
            .is_some_and(|s| s <= SMALL_FILE_BYTES.min(self.chunk_bytes) as u64)
        {
            let mut v = Validator::new(spec, location);
            let n = insert_small(conn, &mut v, target, reader).await;
            checks.extend(v.results());
            return n;
        }
        let progress = Progress::new(self.progress, &spec.file, reader.size());
        let types = pgcopy::column_types(conn, target, &spec).await?;
        let statement = format!(
            "COPY {target} ({}) FROM STDIN WITH (FORMAT binary)",
            spec.column_list()
        );
        let v = Validator::new(spec, location.clone());
        let mut copy = conn.copy_in_raw(&statement).await?;

        // Read and validate on a task of its own while this one feeds COPY, so polars'
        // parsing overlaps PostgreSQL's ingest. The channel holds two chunks: memory
        // stays bounded by a few chunks whatever the file size.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let chunk_bytes = self.chunk_bytes;
        let bar = progress.clone();
        let producer = tokio::spawn(async move {
            let mut v = v;
            let r: Result<(), EtlError> = async {
                let mut out = pgcopy::HEADER.to_vec();
                loop {
                    let more = reader.read_into(v.buffer()).await?;
                    if v.buffered() >= chunk_bytes || !more {
                        if let Some(df) = v.take_frame(!more)? {
                            pgcopy::encode(&v, &df, &types, &mut out)?;
                        }
                        if !more {
                            out.extend_from_slice(pgcopy::TRAILER);
                        }
                        if !out.is_empty() && tx.send(std::mem::take(&mut out)).await.is_err() {
                            // COPY failed: the consumer reports why.
                            return Ok(());
                        }
                        bar.set(v.consumed());
                    }
                    if !more {
                        return Ok(());
                    }
                }
            }
            .await;
            (v, r)
        });
        let mut sent: Result<(), EtlError> = Ok(());
        while let Some(rows) = rx.recv().await {
            if let Err(e) = copy.send(rows).await {
                sent = Err(EtlError::Db(e));
                break;
            }
        }
        drop(rx);
        let (v, produced) = producer
            .await
            .map_err(|e| EtlError::Config(format!("the validating task failed: {e}")))?;
        // A bad line is the cause when there is one; else whatever COPY said.
        let streamed = produced.and(sent);
        checks.extend(v.results());
        progress.finish();
        match streamed {
            Ok(()) => {
                let n = copy.finish().await.map_err(|e| map_copy_error(e, &v))?;
                tracing::info!(
                    file = %location,
                    table = target,
                    rows = n,
                    secs = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "loaded"
                );
                Ok(n)
            }
            Err(e) => {
                let e = match e {
                    EtlError::Db(d) => map_copy_error(d, &v),
                    other => other,
                };
                // The transaction is rolled back by the caller dropping it; end the
                // COPY cleanly so the connection goes back to the pool usable.
                let _ = copy.abort(e.to_string()).await;
                Err(e)
            }
        }
    }
}

/// A file that fits in one chunk goes in with one `INSERT ... SELECT FROM unnest(...)`
/// of typed arrays rather than COPY: same validation, one round trip, and no wait on
/// the client's Nagle delay between the last CopyData and CopyDone (sqlx does not set
/// TCP_NODELAY; two small writes in a row cost a 40 ms delayed ACK per COPY, which
/// dominated the monthly loads).
async fn insert_small(
    conn: &mut PgConnection,
    v: &mut Validator,
    target: &str,
    mut reader: ObjectReader,
) -> Result<u64, EtlError> {
    let started = Instant::now();
    while reader.read_into(v.buffer()).await? {}
    let Some(df) = v.take_frame(true)? else {
        return Ok(0);
    };
    let spec = v.spec();
    let mut params = Vec::new();
    let mut names = Vec::new();
    let mut selects = Vec::new();
    for (i, c) in spec.columns.iter().enumerate() {
        let p = i + 1;
        let ty = match c.kind {
            Kind::Int => "int8[]",
            Kind::Float => "float8[]",
            Kind::Date => "int4[]",
            Kind::Text => "text[]",
        };
        params.push(format!("${p}::{ty}"));
        names.push(format!("c{p}"));
        selects.push(match c.kind {
            Kind::Date => format!("DATE '1970-01-01' + c{p}"),
            _ => format!("c{p}"),
        });
    }
    let sql = format!(
        "INSERT INTO {target} ({}) SELECT {} FROM unnest({}) AS u({})",
        spec.column_list(),
        selects.join(", "),
        params.join(", "),
        names.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for c in &spec.columns {
        let column = df.column(c.name)?;
        q = match c.kind {
            Kind::Int => {
                let v: Vec<Option<i64>> = column.as_materialized_series().i64()?.iter().collect();
                q.bind(v)
            }
            Kind::Float => {
                let v: Vec<Option<f64>> = column.as_materialized_series().f64()?.iter().collect();
                q.bind(v)
            }
            Kind::Date => {
                let days = column.cast(&polars::prelude::DataType::Int32)?;
                let v: Vec<Option<i32>> = days.as_materialized_series().i32()?.iter().collect();
                q.bind(v)
            }
            Kind::Text => {
                let v: Vec<Option<String>> = column
                    .as_materialized_series()
                    .str()?
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect();
                q.bind(v)
            }
        };
    }
    let n = q.execute(&mut *conn).await?.rows_affected();
    tracing::info!(
        file = %v.location(),
        table = target,
        rows = n,
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "loaded"
    );
    Ok(n)
}

/// Maps a database error raised by COPY (a duplicate key, a value out of range) back
/// to the file's line: the rows are sent in file order, one per line, so COPY's
/// `line N` is file line N + 1 (the header).
fn map_copy_error(e: sqlx::Error, v: &Validator) -> EtlError {
    let Some(pg) = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
    else {
        return EtlError::Db(e);
    };
    let line = pg
        .r#where()
        .and_then(|w| w.split("line ").nth(1))
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        });
    match line {
        Some(n) => {
            // The column PostgreSQL names, or the file's columns among a key's
            // ("Key (sale_month, idx)=(...) already exists": sale_month is generated).
            let key: Vec<String> = pg
                .column()
                .map(|c| vec![c.to_string()])
                .or_else(|| {
                    pg.detail()
                        .and_then(|d| d.strip_prefix("Key ("))
                        .and_then(|d| d.split(')').next())
                        .map(|k| k.split(", ").map(str::to_string).collect())
                })
                .unwrap_or_default();
            let in_file: Vec<String> = key
                .iter()
                .filter(|k| v.spec().columns.iter().any(|c| c.name == k.as_str()))
                .map(|k| v.column_label(k))
                .collect();
            let column = if in_file.is_empty() {
                key.join(", ")
            } else {
                in_file.join(", ")
            };
            let mut message = pg.message().to_string();
            if let Some(d) = pg.detail() {
                message.push_str(": ");
                message.push_str(d);
            }
            EtlError::Invalid {
                location: v.location().to_string(),
                line: n + 1,
                column,
                message,
            }
        }
        None => EtlError::Db(e),
    }
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
