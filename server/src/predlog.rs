//! Prediction logging, off the request path, to one or two sinks.
//!
//! The handler hands each record to every configured sink's bounded channel with
//! `try_send` (never waits); when a channel is full the record is dropped for that sink
//! and `prediction_log_dropped_total{sink}` counts it. Each sink drains its own channel,
//! so a slow database never holds up the file, nor the file the database:
//!
//! * `file`: a dedicated thread appends JSON lines (one object per line); whatever is
//!   queued is written in one `write` call, so the file is current whenever the channel
//!   runs empty. A failed write counts its records as dropped.
//! * `postgres` ([`pg`]): a task writes batches into the `predictions` table with one
//!   binary `COPY` per batch (up to N records, or what arrived within T ms of the first),
//!   reconnecting with backoff. See [`pg`] for failures and TLS.
//!
//! Requests never notice a sink's trouble. On shutdown the channels are closed and each
//! sink writes what is queued, within a deadline; what is left then is counted dropped.
//!
//! Record (JSON lines): `{"ts", "idx", "features": {...}, "label", "probability",
//! "model_version", "latency_us"}`; the table has the same fields as columns.

pub mod pg;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One logged prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When the prediction was made; formatted by the sink, not on the request path.
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    pub idx: i64,
    pub features: model::Features,
    pub label: u8,
    pub probability: f64,
    #[serde(serialize_with = "arc_str")]
    pub model_version: Arc<str>,
    pub latency_us: u64,
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn rfc3339<S: serde::Serializer>(v: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*v))
}

/// RFC 3339 in UTC with milliseconds, `2026-11-24T17:00:00.123Z` (times before 1970,
/// a broken clock, read as the epoch).
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.max(std::time::UNIX_EPOCH)).to_string()
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum PredLogError {
    #[error("cannot open the prediction log {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the prediction log writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Database(#[from] pg::ConfigError),
}

/// What one sink shares between the request path and its writer.
#[derive(Debug, Clone)]
pub(crate) struct SinkCounters {
    pub written: Counter,
    pub dropped: Counter,
    /// Records accepted into the queue and not yet written or counted as dropped: what
    /// a writer stopped at the shutdown deadline leaves behind.
    pub pending: Arc<AtomicU64>,
}

impl SinkCounters {
    fn new(metrics: &Metrics, sink: &'static str) -> SinkCounters {
        let (written, dropped) = metrics.sink_counters(sink);
        SinkCounters {
            written,
            dropped,
            pending: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn wrote(&self, n: u64) {
        self.written.inc_by(n);
        self.pending.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn lost(&self, n: u64) {
        self.dropped.inc_by(n);
        self.pending.fetch_sub(n, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Sink {
    name: &'static str,
    tx: ArcSwapOption<mpsc::Sender<Arc<Record>>>,
    counters: SinkCounters,
}

#[derive(Debug)]
enum Writer {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// The sending side, shared by all requests.
#[derive(Debug)]
pub struct PredLog {
    sinks: Vec<Sink>,
    writers: std::sync::Mutex<Vec<(usize, Writer)>>,
}

impl PredLog {
    /// No sinks yet: add them with [`PredLog::with_file`] and [`PredLog::with_postgres`].
    pub fn new() -> PredLog {
        PredLog {
            sinks: Vec::new(),
            writers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    fn add(
        &mut self,
        name: &'static str,
        metrics: &Metrics,
        capacity: usize,
    ) -> (mpsc::Receiver<Arc<Record>>, SinkCounters) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = SinkCounters::new(metrics, name);
        self.sinks.push(Sink {
            name,
            tx: ArcSwapOption::from_pointee(tx),
            counters: counters.clone(),
        });
        (rx, counters)
    }

    /// Adds the JSON lines sink: opens (appends to) `path` and starts its writer thread.
    pub fn with_file(
        mut self,
        path: &Path,
        capacity: usize,
        metrics: &Metrics,
    ) -> Result<PredLog, PredLogError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| PredLogError::File {
                path: path.to_path_buf(),
                source,
            })?;
        let (rx, counters) = self.add("file", metrics, capacity);
        let p = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("prediction-log".into())
            .spawn(move || file_writer(rx, file, p, counters))
            .map_err(PredLogError::Thread)?;
        let i = self.sinks.len() - 1;
        self.writers_mut().push((i, Writer::Thread(thread)));
        Ok(self)
    }

    /// Adds the PostgreSQL sink and spawns its writer on the current tokio runtime. It
    /// connects in the background: an unreachable database is not a startup error.
    pub fn with_postgres(mut self, cfg: pg::PgSinkConfig, metrics: &Metrics) -> PredLog {
        let (rx, counters) = self.add("postgres", metrics, cfg.capacity);
        let task = tokio::spawn(pg::writer(rx, cfg, counters));
        let i = self.sinks.len() - 1;
        self.writers_mut().push((i, Writer::Task(task)));
        self
    }

    fn writers_mut(&mut self) -> &mut Vec<(usize, Writer)> {
        self.writers.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record for every sink, or drops it (and counts it) for a sink whose
    /// queue is full or closed.
    pub fn log(&self, r: Record) {
        if self.sinks.is_empty() {
            return;
        }
        let r = Arc::new(r);
        for s in &self.sinks {
            let tx = s.tx.load();
            let queued = match tx.as_ref() {
                Some(tx) => {
                    s.counters.pending.fetch_add(1, Ordering::Relaxed);
                    let ok = tx.try_send(r.clone()).is_ok();
                    if !ok {
                        s.counters.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                    ok
                }
                None => false,
            };
            if !queued {
                s.counters.dropped.inc();
            }
        }
    }

    /// Closes the queues and waits for each writer to write what it holds, each within
    /// `deadline`; what a writer still holds then is counted as dropped.
    pub async fn close(&self, deadline: Duration) {
        for s in &self.sinks {
            s.tx.store(None);
        }
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, w) in writers {
            let sink = &self.sinks[i];
            let finished = match w {
                Writer::Thread(h) => {
                    let join = tokio::task::spawn_blocking(move || h.join());
                    tokio::time::timeout(deadline, join).await.is_ok()
                }
                Writer::Task(mut h) => match tokio::time::timeout(deadline, &mut h).await {
                    Ok(_) => true,
                    Err(_) => {
                        h.abort();
                        let _ = h.await;
                        false
                    }
                },
            };
            if finished {
                tracing::info!(sink = sink.name, "prediction sink flushed");
            } else {
                let left = sink.counters.pending.swap(0, Ordering::Relaxed);
                sink.counters.dropped.inc_by(left);
                tracing::error!(
                    sink = sink.name,
                    dropped = left,
                    deadline_s = deadline.as_secs_f64(),
                    "prediction sink did not flush within the shutdown deadline; its queued records are dropped"
                );
            }
        }
    }
}

impl Default for PredLog {
    fn default() -> Self {
        Self::new()
    }
}

fn file_writer(
    mut rx: mpsc::Receiver<Arc<Record>>,
    mut file: std::fs::File,
    path: PathBuf,
    c: SinkCounters,
) {
    // Batches: everything queued is serialised into one buffer and written with one
    // call; a failed write counts the whole batch as dropped.
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        buf.clear();
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(r) = next {
            if serde_json::to_writer(&mut buf, &*r).is_ok() {
                buf.push(b'\n');
                n += 1;
            } else {
                c.lost(1);
            }
            next = if buf.len() < 1 << 20 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        match file.write_all(&buf) {
            Ok(()) => {
                c.wrote(n);
                if failing {
                    tracing::info!(path = %path.display(), "prediction log writes recovered");
                }
                failing = false;
            }
            Err(e) => {
                c.lost(n);
                if !failing {
                    tracing::error!(path = %path.display(), error = %e, "prediction log write failed; dropping records");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc3339_millis;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_539_600); // 2026-11-24T17:00:00Z
        assert_eq!(
            rfc3339_millis(t + Duration::from_millis(7)),
            "2026-11-24T17:00:00.007Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
