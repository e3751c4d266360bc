//! The PostgreSQL prediction sink: batches of records into the `predictions` table
//! (migrations/0003_predictions.sql), one binary `COPY … FROM STDIN` per batch, with
//! `tokio-postgres` (not sqlx: the server's dependency tree stays small).
//!
//! * **Batching**: the writer waits for a first record, then takes whatever else arrives
//!   until it holds `batch` records or `flush_interval` has passed since the first.
//!   A COPY is one statement, so a batch lands whole or not at all.
//! * **Failures**: while there is no connection the writer takes nothing from its queue,
//!   so records wait there (bounded) and what overflows is counted as dropped. A COPY
//!   that fails because the connection was lost is retried once on a new connection
//!   (a lost acknowledgement can then write a batch twice: at-least-once for that
//!   batch); any other failure (table missing, permission denied, bad value) drops the
//!   batch and counts it. Reconnects back off exponentially (100 ms up to 5 s).
//! * **TLS**: not compiled in; connections are plain TCP (`NoTls`). A URL asking for
//!   `sslmode=require`, `verify-ca` or `verify-full` is refused at startup, naming the
//!   setting; `prefer` (the default) connects without TLS. Use it on a trusted network
//!   or through a local TLS tunnel until TLS is added.
//! * **Secrets**: the URL is never logged; logs name host, port, database and user.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::{Record, SinkCounters};

/// The setting's name, as an operator sets it.
pub const SETTING: &str = "PREDICTION_DATABASE_URL (--prediction-database-url)";

const COPY: &str = "COPY predictions (ts, idx, attr_a, attr_b, scd_a, scd_b, label, \
                    probability, model_version, latency_us) FROM STDIN (FORMAT binary)";
const TYPES: [Type; 10] = [
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::FLOAT8,
    Type::INT8,
    Type::INT2,
    Type::FLOAT8,
    Type::TEXT,
    Type::INT8,
];
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A COPY that takes longer is abandoned (the connection is dropped, the batch counted).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A database URL the sink refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{SETTING} asks for sslmode={mode}, but the prediction sink has no TLS support yet \
         (plain TCP only): use sslmode=disable or prefer on a trusted network or a local TLS tunnel"
    )]
    TlsUnsupported { mode: String },
    // tokio-postgres's parse errors name the option, never its value.
    #[error("{SETTING} is not a valid PostgreSQL URL: {reason}")]
    Invalid { reason: String },
}

/// The PostgreSQL sink's settings.
#[derive(Clone)]
pub struct PgSinkConfig {
    config: tokio_postgres::Config,
    /// Most records in one COPY.
    pub batch: usize,
    /// Longest a record waits for its batch to fill.
    pub flush_interval: Duration,
    /// Records the queue holds before it drops (and counts) them.
    pub capacity: usize,
}

// No Debug derive: keep the URL's parts out of any `{:?}` by construction.
impl std::fmt::Debug for PgSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSinkConfig")
            .field("target", &self.target())
            .field("batch", &self.batch)
            .field("flush_interval", &self.flush_interval)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl PgSinkConfig {
    /// Parses and checks a connection URL (`postgres://…` or `key=value …`).
    pub fn parse(url: &str) -> Result<PgSinkConfig, ConfigError> {
        if let Some(mode) = ssl_mode(url)
            && matches!(mode.as_str(), "require" | "verify-ca" | "verify-full")
        {
            return Err(ConfigError::TlsUnsupported { mode });
        }
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| ConfigError::Invalid {
                reason: e.to_string(),
            })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(ConfigError::TlsUnsupported {
                mode: "require".into(),
            });
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(ConfigError::Invalid {
                reason: "it names no host".into(),
            });
        }
        if config.get_application_name().is_none() {
            config.application_name("prediction-server");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        Ok(PgSinkConfig {
            config,
            batch: 1000,
            flush_interval: Duration::from_millis(200),
            capacity: 10_000,
        })
    }

    /// `user@host:port/dbname`, without the password: what logs may show.
    pub fn target(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => c
                .get_hostaddrs()
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            c.get_user().unwrap_or("(default user)"),
            c.get_dbname().unwrap_or("(default database)")
        )
    }
}

/// The `sslmode` a URL or key-value string asks for, lower-cased, if any.
fn ssl_mode(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let at = lower.find("sslmode")?;
    let rest = lower[at + "sslmode".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let rest = rest.trim_start_matches(['\'', '"']);
    let end = rest
        .find(|c: char| c == '&' || c == '\'' || c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

async fn connect(cfg: &PgSinkConfig) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = cfg.config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "prediction database connection ended");
        }
    });
    Ok(client)
}

#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("the COPY took longer than {0:?}")]
    Timeout(Duration),
}

async fn copy(client: &Client, batch: &[Arc<Record>]) -> Result<u64, CopyError> {
    let work = async {
        let sink = client.copy_in(COPY).await?;
        let writer = BinaryCopyInWriter::new(sink, &TYPES);
        let mut writer = std::pin::pin!(writer);
        for r in batch {
            let f = &r.features;
            // PostgreSQL text cannot hold NUL; a client may send "\u0000". Replacing it
            // keeps one odd request from failing its whole batch.
            let attr_b: Cow<'_, str> = if f.attr_b.contains('\0') {
                Cow::Owned(f.attr_b.replace('\0', "\u{FFFD}"))
            } else {
                Cow::Borrowed(&f.attr_b)
            };
            let model_version: &str = &r.model_version;
            let label = i16::from(r.label);
            let latency = i64::try_from(r.latency_us).unwrap_or(i64::MAX);
            let row: [&(dyn ToSql + Sync); 10] = [
                &r.ts,
                &r.idx,
                &f.attr_a,
                &attr_b.as_ref(),
                &f.scd_a,
                &f.scd_b,
                &label,
                &r.probability,
                &model_version,
                &latency,
            ];
            writer.as_mut().write(&row).await?;
        }
        writer.as_mut().finish().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, work).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(CopyError::Timeout(WRITE_TIMEOUT)),
    }
}

/// The sink's writer task: runs until its queue is closed and drained.
pub(crate) async fn writer(
    mut rx: mpsc::Receiver<Arc<Record>>,
    cfg: PgSinkConfig,
    c: SinkCounters,
) {
    let target = cfg.target();
    let max = cfg.batch.max(1);
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    let mut failing = false; // logs once per outage, not once per retry
    let mut batch: Vec<Arc<Record>> = Vec::with_capacity(max);
    let mut retried = false;
    tracing::info!(target_db = %target, batch = max, flush_ms = cfg.flush_interval.as_millis() as u64, "prediction database sink starting");
    loop {
        if client.as_ref().is_none_or(|cl| cl.is_closed()) {
            client = None;
            if batch.is_empty() && rx.is_closed() && rx.is_empty() {
                break;
            }
            match connect(&cfg).await {
                Ok(cl) => {
                    if failing {
                        tracing::info!(target_db = %target, "prediction database reachable again");
                    } else {
                        tracing::info!(target_db = %target, "prediction database connected");
                    }
                    failing = false;
                    backoff = BACKOFF_MIN;
                    client = Some(cl);
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(target_db = %target, error = %e, "cannot connect to the prediction database; records queue (bounded) and overflow is dropped; retrying with backoff");
                        failing = true;
                    } else {
                        tracing::debug!(target_db = %target, error = %e, "prediction database still unreachable");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let Some(cl) = client.as_ref() else { continue };

        if batch.is_empty() {
            retried = false;
            if rx.recv_many(&mut batch, max).await == 0 {
                break; // closed and drained
            }
            let deadline = Instant::now() + cfg.flush_interval;
            while batch.len() < max {
                let room = max - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break, // closed, or the batch's time is up
                    Ok(_) => {}
                }
            }
        }

        let n = batch.len() as u64;
        match copy(cl, &batch).await {
            Ok(_) => {
                c.wrote(n);
                batch.clear();
            }
            Err(e) => {
                let lost = match &e {
                    CopyError::Timeout(_) => true,
                    CopyError::Db(d) => d.is_closed() || cl.is_closed(),
                };
                if lost {
                    client = None;
                }
                if lost && !retried {
                    // Once more on a fresh connection.
                    retried = true;
                    tracing::warn!(target_db = %target, error = %e, records = n, "prediction database connection lost during a COPY; retrying the batch once");
                    continue;
                }
                c.lost(n);
                batch.clear();
                tracing::error!(target_db = %target, error = %e, records = n, "prediction COPY failed; batch dropped");
            }
        }
    }
    tracing::info!(target_db = %target, "prediction database sink stopped");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_are_refused_naming_the_setting() {
        for url in [
            "postgres://u@localhost/db?sslmode=require",
            "postgres://u@localhost/db?application_name=x&sslmode=verify-full",
            "host=localhost user=u sslmode = verify-ca",
            "postgresql://u@localhost/db?SSLMODE=REQUIRE",
        ] {
            let e = PgSinkConfig::parse(url).unwrap_err().to_string();
            assert!(e.contains("PREDICTION_DATABASE_URL"), "{e}");
            assert!(e.contains("sslmode="), "{e}");
            assert!(e.contains("no TLS"), "{e}");
        }
        for url in [
            "postgres://u@localhost/db",
            "postgres://u@localhost/db?sslmode=disable",
            "host=localhost user=u sslmode=prefer",
        ] {
            assert!(PgSinkConfig::parse(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn target_never_shows_the_password() {
        let pw = format!("pw{}", std::process::id());
        let cfg = PgSinkConfig::parse(&format!("postgres://writer:{pw}@localhost:5433/preds"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.target(), "writer@localhost:5433/preds");
        assert!(!format!("{cfg:?}").contains(&pw));
        let e = PgSinkConfig::parse(&format!("postgres://writer:{pw}@localhost:notaport/db"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&pw), "{e}");
        assert!(e.contains("PREDICTION_DATABASE_URL"), "{e}");
    }
}
