//! The ETL: input files from S3 (or a directory) into PostgreSQL.
//!
//! Data flow for every file: the object is read as a stream of byte chunks
//! ([`source`]); each chunk is cut at a line end, checked for structure (UTF-8, field
//! count per line, BOM and CRLF handled) and parsed with polars into a typed frame
//! whose row checks are frame expressions ([`validate`]); the validated rows are
//! written in PostgreSQL's binary COPY format ([`pgcopy`]) and sent straight into
//! `COPY ... FROM STDIN` ([`load`]: the customer files at once into new tables swapped
//! in by one transaction, a month in one transaction); a small file goes in with one
//! `INSERT ... unnest` instead. A failure anywhere (bad line, failed error-level
//! check, lost connection) rolls back, so nothing of the file is ever visible. Memory
//! is bounded by the loader's budget of chunks in flight, whatever the files' size;
//! nothing is written to disk but the tables.

mod duplicate;
mod ingest;
pub mod load;
pub mod month;
pub mod pgcopy;
pub mod source;
pub mod spec;
mod swap;
pub mod validate;

pub use month::Month;
pub use source::Source;

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    /// The file is not (yet) there: a month in this state is "waiting", not failed.
    #[error("{location}: not found")]
    Missing { location: String },
    /// A line of a file breaks the format or an error-level row check.
    #[error("{location}, line {line}, column {column}: {message}")]
    Invalid {
        location: String,
        line: u64,
        /// 1-based position and name, e.g. `3 (date)`.
        column: String,
        message: String,
    },
    /// Error-level data-quality checks failed after the rows were staged; the
    /// transaction was rolled back.
    #[error("data quality checks failed: {0}")]
    Quality(String),
    /// Reading the source failed.
    #[error("reading {location}: {message}")]
    Source {
        location: String,
        message: String,
        transient: bool,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("parsing with polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("{0}")]
    Config(String),
}

impl EtlError {
    /// Worth retrying: network, throttling, a lost or refused database connection,
    /// serialization failures. Bad data and missing files are not.
    pub fn is_transient(&self) -> bool {
        match self {
            EtlError::Source { transient, .. } => *transient,
            EtlError::Db(e) => db_error_is_transient(e),
            _ => false,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, EtlError::Missing { .. })
    }
}

fn db_error_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            // connection exceptions, serialization/deadlock, insufficient resources,
            // operator intervention (shutdown, crash recovery).
            code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code.starts_with("53")
                || code.starts_with("57P")
        }
        _ => false,
    }
}
