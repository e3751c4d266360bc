//! Prediction logging, off the request path.
//!
//! The handler hands each record to a bounded channel with `try_send` (never waits);
//! when the channel is full the record is dropped and `prediction_log_dropped_total`
//! counts it. A dedicated thread drains the channel into a JSON lines file (one object
//! per line, appended), flushing whenever the channel runs empty. On shutdown the
//! sender is closed and the thread writes what is queued, flushes, and ends.
//!
//! Record: `{"ts", "idx", "features": {...}, "label", "probability", "model_version",
//! "latency_us"}`.
//!
//! A PostgreSQL sink is deliberately not here: it would pull a database driver into the
//! server's tree. A loader can `COPY` these files, or a later sink can follow the same
//! channel design.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One logged prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub ts: String,
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

/// The sending side, shared by all requests.
#[derive(Debug)]
pub struct PredLog {
    tx: ArcSwapOption<mpsc::Sender<Record>>,
    metrics: Arc<Metrics>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PredLog {
    /// Opens (appends to) `path` and starts the writer thread.
    pub fn start(path: &Path, capacity: usize, metrics: Arc<Metrics>) -> std::io::Result<PredLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let m = metrics.clone();
        let p = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("prediction-log".into())
            .spawn(move || writer(rx, file, p, m))?;
        Ok(PredLog {
            tx: ArcSwapOption::from_pointee(tx),
            metrics,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Queues a record, or drops it (and counts it) if the queue is full or closed.
    pub fn log(&self, r: Record) {
        let tx = self.tx.load();
        match tx.as_ref() {
            Some(tx) if tx.try_send(r).is_ok() => {}
            _ => {
                self.metrics.log_dropped.inc();
            }
        }
    }

    /// Closes the queue and waits for the writer to flush what it holds.
    pub fn close(&self) {
        self.tx.store(None);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn writer(mut rx: mpsc::Receiver<Record>, file: std::fs::File, path: PathBuf, m: Arc<Metrics>) {
    let mut out = std::io::BufWriter::new(file);
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(r) = next {
            let mut line = serde_json::to_vec(&r).unwrap_or_default();
            line.push(b'\n');
            match out.write_all(&line) {
                Ok(()) => {
                    m.log_written.inc();
                    failing = false;
                }
                Err(e) => {
                    m.log_dropped.inc();
                    if !failing {
                        tracing::error!(path = %path.display(), error = %e, "prediction log write failed");
                        failing = true;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            tracing::error!(path = %path.display(), error = %e, "prediction log flush failed");
        }
    }
    let _ = out.flush();
}
