//! One file into one table: its rows validated chunk by chunk and streamed as binary
//! `COPY` (a small file as one `INSERT ... unnest`), under the loader's budget of chunks
//! in memory; a database error is mapped back to the file and line it came from.

use std::time::Instant;

use sqlx::postgres::PgDatabaseError;
use sqlx::{AssertSqlSafe, PgConnection};
use tokio::sync::OwnedSemaphorePermit;

use super::EtlError;
use super::duplicate::key_detail;
use super::load::Loader;
use super::pgcopy;
use super::source::ObjectReader;
use super::spec::{FileSpec, Kind};
use super::validate::Validator;
use crate::progress::Progress;
use crate::quality::{CheckResult, FileFacts};

/// COPY data goes to the connection in messages of at most this size.
const SEND_PIECE_BYTES: usize = 256 << 10;

/// Files up to this size go in with one `INSERT ... unnest` rather than COPY (see
/// [`insert_small`]); above it COPY's streaming ingest is the faster path.
const SMALL_FILE_BYTES: usize = 1 << 20;

/// How a file goes into its table.
#[derive(Debug, Default)]
pub(super) struct Ingest {
    /// `COPY ... FREEZE` (the table was created in this transaction).
    pub freeze: bool,
    /// Gather these facts of the rows as they stream (see [`FileFacts`]).
    pub facts: Option<FileFacts>,
}

/// What [`Loader::copy_file`] wrote.
#[derive(Debug)]
pub(super) struct Copied {
    pub rows: u64,
    /// The facts gathered, when [`Ingest::facts`] asked for them.
    pub facts: Option<FileFacts>,
}

impl Loader {
    /// Streams one file through the validator into `COPY target`.
    pub(super) async fn copy_file(
        &self,
        conn: &mut PgConnection,
        spec: FileSpec,
        target: &str,
        mut reader: ObjectReader,
        checks: &mut Vec<CheckResult>,
        how: Ingest,
    ) -> Result<Copied, EtlError> {
        let started = Instant::now();
        let location = reader.location().to_string();
        let mut v = Validator::new(spec, location.clone());
        if let Some(f) = how.facts {
            v.gather(f);
        }
        // A frozen load needs COPY (an INSERT cannot write frozen rows).
        if !how.freeze
            && reader
                .size()
                .is_some_and(|s| s <= SMALL_FILE_BYTES.min(self.chunk_bytes) as u64)
        {
            let n = insert_small(conn, &mut v, target, reader).await;
            checks.extend(v.results());
            return n.map(|rows| Copied {
                rows,
                facts: v.take_facts(),
            });
        }
        let progress = Progress::new(self.progress, &v.spec().file, reader.size());
        let types = pgcopy::column_types(conn, target, v.spec()).await?;
        let statement = format!(
            "COPY {target} ({}) FROM STDIN WITH (FORMAT binary{})",
            v.spec().column_list(),
            if how.freeze { ", FREEZE" } else { "" }
        );
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
                    let more = fill(&mut reader, &mut v, chunk_bytes).await?;
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
                    if !out.is_empty() && tx.send((std::mem::take(&mut out), permit)).await.is_err()
                    {
                        // COPY failed: the consumer reports why.
                        return Ok(());
                    }
                    bar.set(v.consumed());
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
        let (mut v, produced) = producer
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
                Ok(Copied {
                    rows: n,
                    facts: v.take_facts(),
                })
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

/// Reads `reader` into `v`'s buffer (at least one piece, so a line longer than a
/// chunk still grows it) until it holds `chunk_bytes` or the file ends; `false` once
/// the file has ended (what is buffered is then its last chunk).
pub(super) async fn fill(
    reader: &mut ObjectReader,
    v: &mut Validator,
    chunk_bytes: usize,
) -> Result<bool, EtlError> {
    loop {
        if !reader.read_into(v.buffer()).await? {
            return Ok(false);
        }
        if v.buffered() >= chunk_bytes {
            return Ok(true);
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
    fill(&mut reader, v, usize::MAX).await?;
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
                .or_else(|| pg.detail().and_then(key_detail).map(|(names, _)| names))
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
