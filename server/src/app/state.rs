//! The state every request shares: the settings, the model being served (swapped
//! atomically on reload), the metrics and the prediction log.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use super::ROUTES;
use crate::metrics::{Metrics, RouteSeries};
use crate::predlog::PredLog;
use crate::source::Fetcher;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The release name `/version` reports.
    pub release: String,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Most instances in one batch.
    pub max_batch: usize,
    /// The admin token; `None` disables `/admin/reload`.
    pub admin_token: Option<String>,
}

/// The model being served, with where and when it was loaded.
#[derive(Debug)]
pub struct Loaded {
    pub artifact: model::Artifact,
    pub version: Arc<str>,
    pub source: String,
    pub loaded_at: String,
}

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub config: AppConfig,
    pub model: ArcSwapOption<Loaded>,
    pub metrics: Arc<Metrics>,
    pub predlog: Option<PredLog>,
    pub fetcher: Fetcher,
    /// Why the model is not loaded / why the last reload failed.
    pub(super) last_error: std::sync::Mutex<Option<String>>,
    reload_lock: tokio::sync::Mutex<()>,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Each route's metric series (index as in `ROUTES`, then `unmatched`).
    pub(super) route_series: [RouteSeries; ROUTES.len() + 1],
}

/// The result of a successful reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub version: String,
    pub previous: Option<String>,
}

impl AppState {
    pub fn new(
        config: AppConfig,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
        predlog: Option<PredLog>,
    ) -> AppState {
        AppState {
            config,
            model: ArcSwapOption::empty(),
            metrics,
            predlog,
            fetcher,
            last_error: std::sync::Mutex::new(Some("loading the model".into())),
            reload_lock: tokio::sync::Mutex::new(()),
            shutting_down: Default::default(),
            route_series: Default::default(),
        }
    }

    /// Fetches the model and swaps it in atomically. On failure the current model (if
    /// any) keeps serving and the error says why. Reloads are serialised.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let _g = self.reload_lock.lock().await;
        let previous = self.model.load().as_ref().map(|m| m.version.to_string());
        match self.fetcher.fetch().await {
            Ok(artifact) => {
                let version: Arc<str> = Arc::from(artifact.version());
                self.model.store(Some(Arc::new(Loaded {
                    artifact,
                    version: version.clone(),
                    source: self.fetcher.source.to_string(),
                    loaded_at: crate::predlog::rfc3339_millis(SystemTime::now()),
                })));
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                self.metrics.set_model(&version);
                self.metrics
                    .reloads
                    .get_or_create(&crate::metrics::ResultLabels { result: "ok" })
                    .inc();
                tracing::info!(model_version = %version, previous = ?previous, source = %self.fetcher.source, "model loaded");
                Ok(Reloaded {
                    version: version.to_string(),
                    previous,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                self.metrics
                    .reloads
                    .get_or_create(&crate::metrics::ResultLabels { result: "error" })
                    .inc();
                tracing::error!(error = %msg, still_serving = ?previous, source = %self.fetcher.source, "model load failed");
                Err(msg)
            }
        }
    }

    /// Whether a model is loaded.
    pub fn has_model(&self) -> bool {
        self.model.load().is_some()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Readiness goes false (new connections should go elsewhere) while draining.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn not_ready_reason(&self) -> Option<String> {
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Some("shutting down".into());
        }
        if self.model.load().is_some() {
            return None;
        }
        Some(
            self.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "no model loaded".into()),
        )
    }
}
