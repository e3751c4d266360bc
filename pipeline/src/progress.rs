//! Progress of long work: an indicatif bar on a terminal, nothing otherwise (the
//! loads log one line per file instead, plain or JSON by `LOG_FORMAT`).

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Every bar of the process draws through this, so log lines can be written above the
/// bars instead of through them ([`LogWriter`]).
fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(MultiProgress::new)
}

/// Standard error for log lines: clears the bars, writes, redraws them. Without bars
/// on screen it is plain stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes (a spinner when the size is unknown), if `enabled`.
    pub fn new(enabled: bool, label: &str, total: Option<u64>) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = match total {
            Some(t) => {
                let b = ProgressBar::new(t);
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            }
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(label.to_string());
        Progress {
            bar: Some(multi().add(bar)),
        }
    }

    /// A bar over `total` items.
    pub fn items(enabled: bool, label: &str, total: u64) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let b = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} {eta}") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(label.to_string());
        Progress {
            bar: Some(multi().add(b)),
        }
    }

    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
