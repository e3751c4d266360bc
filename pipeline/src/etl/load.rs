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
use std::time::Instant;

use sqlx::postgres::PgDatabaseError;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pgcopy;
use super::source::ObjectReader;
use super::spec::{self, FileSpec, Kind};
use super::validate::Validator;
use super::{EtlError, Month, Source};
use crate::progress::Progress;
use crate::quality::{self, CheckResult, CustomerTables};

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
    budget: Arc<Semaphore>,
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

/// COPY data goes to the connection in messages of at most this size.
const SEND_PIECE_BYTES: usize = 256 << 10;

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
            let report = self
                .load_customers_in_place(&mut tx, specs, readers, checks)
                .await?;
            let results = customer_table_checks(&mut tx, &report, CustomerTables::LIVE).await?;
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
    ) -> Result<LoadReport, EtlError> {
        let mut report = LoadReport::default();
        for (s, reader) in specs.into_iter().zip(readers) {
            let table = s.table;
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
            let n = self
                .copy_file(&mut *tx, s, table, reader, checks, false)
                .await?;
            report.tables.push((table.to_string(), n));
            report.rows_loaded += n;
        }
        Ok(report)
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
        let (sa, sp, sl) = tokio::join!(self.stage(a, ra), self.stage(p, rp), self.stage(l, rl));
        let mut report = LoadReport::default();
        let mut failed = None;
        for staged in [sa, sp, sl] {
            match staged {
                Ok((table, n, results)) => {
                    checks.extend(results);
                    report.tables.push((table.to_string(), n));
                    report.rows_loaded += n;
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
        let results = customer_table_checks(&mut tx, &report, staged).await?;
        if quality::blocking_summary(&results).is_none() {
            swap_in(&mut tx).await?;
        }
        commit_unless_blocked(tx, results, checks).await?;
        Ok(report)
    }

    /// Loads one file into a new table `<table>_loading` (the table's columns,
    /// defaults, constraints and indexes) on a connection of its own, in one
    /// transaction that creates, fills and commits it. The rows are written frozen
    /// (`COPY ... FREEZE`, allowed because the table is created in the same
    /// transaction): once swapped in they are visible to every snapshot, so even a
    /// repeatable-read reader that took its snapshot before the load sees the new rows
    /// rather than an empty table.
    async fn stage(
        &self,
        spec: FileSpec,
        reader: ObjectReader,
    ) -> Result<(&'static str, u64, Vec<CheckResult>), (EtlError, Vec<CheckResult>)> {
        let table = spec.table;
        let mut results = Vec::new();
        let r: Result<u64, EtlError> = async {
            let next = staging_name(table);
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {next}; \
                 CREATE TABLE {next} (LIKE {table} INCLUDING ALL)"
            )))
            .execute(&mut *tx)
            .await?;
            let n = self
                .copy_file(&mut tx, spec, &next, reader, &mut results, true)
                .await?;
            tx.commit().await?;
            Ok(n)
        }
        .await;
        match r {
            Ok(n) => Ok((table, n, results)),
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
        self.copy_file(&mut tx, stores, "stores_in", stores_reader, checks, false)
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
            .copy_file(&mut tx, sales, "sales", sales_reader, checks, false)
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
        freeze: bool,
    ) -> Result<u64, EtlError> {
        let started = Instant::now();
        let location = reader.location().to_string();
        // A frozen load needs COPY (an INSERT cannot write frozen rows).
        if !freeze
            && reader
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
            "COPY {target} ({}) FROM STDIN WITH (FORMAT binary{})",
            spec.column_list(),
            if freeze { ", FREEZE" } else { "" }
        );
        let v = Validator::new(spec, location.clone());
        let mut copy = conn.copy_in_raw(&statement).await?;

        // Read and validate on a task of its own while this one feeds COPY, so polars'
        // parsing overlaps PostgreSQL's ingest. A chunk is parsed only under a permit
        // of the loader's budget, held until its rows are sent: memory is bounded by
        // [`CHUNKS_IN_FLIGHT`] chunks however large the files and however many load at
        // once (the three customer files, the months of a catch-up).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, OwnedSemaphorePermit)>(1);
        let chunk_bytes = self.chunk_bytes;
        let budget = self.budget.clone();
        let bar = progress.clone();
        let producer = tokio::spawn(async move {
            let mut v = v;
            let r: Result<(), EtlError> = async {
                let mut out = pgcopy::HEADER.to_vec();
                loop {
                    let more = reader.read_into(v.buffer()).await?;
                    if v.buffered() >= chunk_bytes || !more {
                        let permit = budget
                            .clone()
                            .acquire_owned()
                            .await
                            .map_err(|_| EtlError::Config("the chunk budget closed".into()))?;
                        if let Some(df) = v.take_frame(!more)? {
                            pgcopy::encode(&v, &df, &types, &mut out)?;
                        }
                        if !more {
                            out.extend_from_slice(pgcopy::TRAILER);
                        }
                        if !out.is_empty()
                            && tx.send((std::mem::take(&mut out), permit)).await.is_err()
                        {
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
        'recv: while let Some((rows, _permit)) = rx.recv().await {
            // In pieces: sqlx copies each CopyData message into the connection's write
            // buffer, which keeps the capacity of the largest message it ever held.
            for piece in rows.chunks(SEND_PIECE_BYTES) {
                if let Err(e) = copy.send(piece).await {
                    sent = Err(EtlError::Db(e));
                    break 'recv;
                }
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

/// The table checks of a customer load: row counts from the load itself, the history
/// and relationship checks as one query over `tables`, then whatever else is left.
async fn customer_table_checks(
    conn: &mut PgConnection,
    report: &LoadReport,
    tables: CustomerTables<'_>,
) -> Result<Vec<CheckResult>, EtlError> {
    let mut to_run = quality::for_load(quality::customer_checks());
    let mut results = Vec::new();
    for (table, rows) in &report.tables {
        results.extend(quality::row_count_from_load(&mut to_run, table, *rows));
    }
    results.extend(quality::run_history_checks(&mut *conn, &mut to_run, tables).await?);
    results.extend(quality::run_checks(&mut *conn, &to_run).await?);
    Ok(results)
}

/// The tables `load-customers` replaces, in file order.
const CUSTOMER_TABLES: [&str; 3] = ["customer_activity", "customer_profiles", "labels"];

/// The table a customer file is loaded into before it is swapped in.
fn staging_name(table: &str) -> String {
    format!("{table}_loading")
}

/// Whether this role can load the customer tables by swapping: it owns them (or is a
/// member of their owner), may create tables in `public`, and nothing else (a view, a
/// foreign key) depends on them. Otherwise the load replaces the rows in place.
async fn can_swap(conn: &mut PgConnection) -> Result<bool, EtlError> {
    let ok: Option<bool> = sqlx::query_scalar(
        "SELECT count(*) = 3 AND has_schema_privilege('public', 'CREATE') \
                AND bool_and(pg_has_role(current_user, c.relowner, 'USAGE')) \
                AND NOT bool_or(EXISTS (SELECT 1 FROM pg_depend d \
                    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid \
                      AND d.deptype = 'n' \
                      AND d.classid IN ('pg_rewrite'::regclass, 'pg_constraint'::regclass))) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname = ANY($1)",
    )
    .bind(CUSTOMER_TABLES)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ok == Some(true))
}

/// Locks the three tables for the swap. A reader holding one of them is waited for;
/// but a reader that goes on to another table the swap already holds would deadlock
/// with it, so each attempt gives up after a short `lock_timeout` (well before
/// PostgreSQL's one-second deadlock check), releases what it took and tries again; the
/// last attempt waits as long as it takes.
async fn lock_for_swap(conn: &mut PgConnection) -> Result<(), EtlError> {
    const ATTEMPTS: u32 = 8;
    for attempt in 0..ATTEMPTS {
        let last = attempt + 1 == ATTEMPTS;
        let timeout_ms = if last { 0 } else { 100u64 << attempt.min(3) };
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SAVEPOINT swap_lock; SET LOCAL lock_timeout = {timeout_ms}"
        )))
        .execute(&mut *conn)
        .await?;
        let locked = sqlx::query(
            "LOCK TABLE customer_activity, customer_profiles, labels IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *conn)
        .await;
        match locked {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT swap_lock; SET LOCAL lock_timeout = 0")
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            Err(e) if !last && is_lock_timeout(&e) => {
                tracing::debug!(attempt, "the customer tables are busy; retrying the swap");
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT swap_lock")
                    .execute(&mut *conn)
                    .await?;
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(4))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// `lock_not_available`: a `lock_timeout` ran out.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// Inside the publishing transaction: the loaded tables take the place of the old
/// ones, with their names, owner, grants and index names. Readers see the old tables
/// until the commit and the new ones after (the rows are frozen, so whatever their
/// snapshot); one that is reading a table when the swap begins is waited for.
async fn swap_in(conn: &mut PgConnection) -> Result<(), EtlError> {
    lock_for_swap(conn).await?;
    for table in CUSTOMER_TABLES {
        let next = staging_name(table);
        let mut statements: Vec<String> = sqlx::query_scalar(
            "SELECT format('GRANT %s ON %I TO %s%s', a.privilege_type, $2::text, \
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                         ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) \
             FROM pg_class c, aclexplode(c.relacl) a \
             WHERE c.oid = $1::regclass AND a.grantee <> c.relowner",
        )
        .bind(table)
        .bind(&next)
        .fetch_all(&mut *conn)
        .await?;
        let owner: String = sqlx::query_scalar(
            "SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        // The new table's indexes, paired with the old ones by definition.
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "WITH i AS (SELECT x.indrelid, c.relname::text AS name, x.indisunique, \
                          x.indisprimary, \
                          regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', '') AS def \
                        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
                        WHERE x.indrelid IN ($1::regclass, $2::regclass)) \
             SELECT n.name, o.name FROM i n JOIN i o \
               ON n.indrelid = $2::regclass AND o.indrelid = $1::regclass \
              AND n.def = o.def AND n.indisunique = o.indisunique \
              AND n.indisprimary = o.indisprimary",
        )
        .bind(table)
        .bind(&next)
        .fetch_all(&mut *conn)
        .await?;
        statements.push(format!("ALTER TABLE {next} OWNER TO {owner}"));
        statements.push(format!("DROP TABLE {table}"));
        statements.push(format!("ALTER TABLE {next} RENAME TO {table}"));
        for (new, old) in indexes {
            if new != old {
                statements.push(format!("ALTER INDEX \"{new}\" RENAME TO \"{old}\""));
            }
        }
        sqlx::raw_sql(AssertSqlSafe(statements.join(";\n")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
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
