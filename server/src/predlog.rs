//! Prediction logging, off the request path.
//!
//! The handler hands each record to a bounded channel with `try_send` (never waits);
//! when the channel is full the record is dropped and `prediction_log_dropped_total`
//! counts it. A dedicated thread drains the channel into a JSON lines file (one object
//! per line, appended): whatever is queued is written in one `write` call, so the file
//! is current whenever the channel runs empty. A failed write counts its records as
//! dropped too; requests never notice. On shutdown the sender is closed and the thread
//! writes what is queued and ends.
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

fn writer(mut rx: mpsc::Receiver<Record>, mut file: std::fs::File, path: PathBuf, m: Arc<Metrics>) {
    // Batches: everything queued is serialised into one buffer and written with one
    // call; a failed write counts the whole batch as dropped.
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut failing = false;
    while let Some(first) = rx.blocking_recv() {
        buf.clear();
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(r) = next {
            if serde_json::to_writer(&mut buf, &r).is_ok() {
                buf.push(b'\n');
                n += 1;
            } else {
                m.log_dropped.inc();
            }
            next = if buf.len() < 1 << 20 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        match file.write_all(&buf) {
            Ok(()) => {
                m.log_written.inc_by(n);
                if failing {
                    tracing::info!(path = %path.display(), "prediction log writes recovered");
                }
                failing = false;
            }
            Err(e) => {
                m.log_dropped.inc_by(n);
                if !failing {
                    tracing::error!(path = %path.display(), error = %e, "prediction log write failed; dropping records");
                    failing = true;
                }
            }
        }
    }
}
