//! Prometheus metrics (prometheus-client, OpenMetrics text format at `GET /metrics`).
//!
//! | metric | labels | meaning |
//! | --- | --- | --- |
//! | `http_requests_total` | route, method, status | requests answered |
//! | `http_request_duration_seconds` | route | latency histogram |
//! | `predictions_total` | label | instances scored, by predicted label |
//! | `unknown_category_total` | | instances whose `attr_b` was never seen in training |
//! | `model_info` | version | 1 for the model being served |
//! | `model_reloads_total` | result (ok, error) | reload attempts |
//! | `prediction_log_written_total` | sink (file, postgres) | records written by each prediction sink |
//! | `prediction_log_dropped_total` | sink (file, postgres) | records a sink dropped: its queue full or closed, or a failed write |
//! | `tls_certificate_expiry_seconds` | | notAfter of the certificate being served, Unix seconds (0: none; `--tls acme` only) |
//! | `tls_renewals_total` | result (ok, error) | certificate renewal attempts that issued or failed |
//!
//! `route` is the matched route (`/predict`, ...) or `unmatched`, never the raw path,
//! so a scan of random URLs cannot blow up the label set.

use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelLabels {
    pub label: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub predictions: Family<LabelLabels, Counter>,
    pub unknown_category: Counter,
    pub model_info: Family<VersionLabels, Gauge>,
    pub reloads: Family<ResultLabels, Counter>,
    /// Per sink; a sink takes its two counters once at start (no lookup per record).
    pub log_written: Family<SinkLabels, Counter>,
    pub log_dropped: Family<SinkLabels, Counter>,
    /// notAfter of the served certificate (Unix seconds).
    pub tls_expiry: Gauge,
    pub tls_renewals: Family<ResultLabels, Counter>,
    /// Serialises model_info updates (clear + set must not interleave).
    info_lock: Mutex<()>,
    /// `predictions_total{label}` for labels 0 and 1, looked up once.
    by_label: [OnceLock<Counter>; 2],
}

/// One route's hot series, looked up in the families on first use and kept (they
/// share their values with the registered series), so the request path neither hashes
/// labels nor takes the family's lock: the latency histogram, and the request counter
/// for the route's method and status 200. Other statuses go through the family.
#[derive(Debug, Default)]
pub struct RouteSeries {
    latency: OnceLock<Histogram>,
    ok: OnceLock<(&'static str, Counter)>,
}

/// Registers `metric` as `name` with its `help`, and returns it (the registry holds a
/// handle to the same values).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        // Fields are evaluated in the order written: the order of `/metrics`.
        Metrics {
            requests: register(
                &mut r,
                "http_requests",
                "HTTP requests answered, by route, method and status",
                Family::default(),
            ),
            latency: register(
                &mut r,
                "http_request_duration_seconds",
                "Time from request head to response, by route",
                Family::new_with_constructor(
                    (|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)))
                        as fn() -> Histogram,
                ),
            ),
            predictions: register(
                &mut r,
                "predictions",
                "Instances scored, by predicted label",
                Family::default(),
            ),
            unknown_category: register(
                &mut r,
                "unknown_category",
                "Instances whose attr_b was not seen in training (scored with the unknown bucket)",
                Counter::default(),
            ),
            model_info: register(
                &mut r,
                "model_info",
                "1 for the model version being served",
                Family::default(),
            ),
            reloads: register(
                &mut r,
                "model_reloads",
                "Model reload attempts, by result",
                Family::default(),
            ),
            log_written: register(
                &mut r,
                "prediction_log_written",
                "Prediction records written, by sink",
                Family::default(),
            ),
            log_dropped: register(
                &mut r,
                "prediction_log_dropped",
                "Prediction records dropped, by sink: its queue was full or closed, or the write failed",
                Family::default(),
            ),
            tls_expiry: register(
                &mut r,
                "tls_certificate_expiry_seconds",
                "notAfter of the TLS certificate being served, in Unix seconds (0: none)",
                Gauge::default(),
            ),
            tls_renewals: register(
                &mut r,
                "tls_renewals",
                "TLS certificate renewal attempts, by result",
                Family::default(),
            ),
            registry: r,
            info_lock: Mutex::new(()),
            by_label: Default::default(),
        }
    }

    /// Marks `version` as the one being served.
    pub fn set_model(&self, version: &str) {
        let _g = self.info_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.model_info.clear();
        self.model_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
    }

    pub fn observe_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        secs: f64,
    ) {
        self.count_request(route, method, status);
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(secs);
    }

    /// One request answered, through the family (its labels hashed, its lock taken).
    fn count_request(&self, route: &'static str, method: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// [`Metrics::observe_request`] with the route's series kept in `cache` (one per
    /// route, always used with the same route).
    pub fn observe_route(
        &self,
        cache: &RouteSeries,
        route: &'static str,
        method: &'static str,
        status: u16,
        secs: f64,
    ) {
        let counted = status == 200 && {
            let (m, c) = cache.ok.get_or_init(|| {
                let l = RequestLabels {
                    route,
                    method,
                    status,
                };
                (method, self.requests.get_or_create(&l).clone())
            });
            *m == method && {
                c.inc();
                true
            }
        };
        if !counted {
            self.count_request(route, method, status);
        }
        cache
            .latency
            .get_or_init(|| self.latency.get_or_create(&RouteLabels { route }).clone())
            .observe(secs);
    }

    /// Counts one scored instance under its predicted label.
    pub fn count_prediction(&self, label: u8) {
        let l = LabelLabels { label };
        match self.by_label.get(usize::from(label)) {
            Some(c) => c
                .get_or_init(|| self.predictions.get_or_create(&l).clone())
                .inc(),
            None => self.predictions.get_or_create(&l).inc(),
        };
    }

    /// The (written, dropped) counters of one prediction sink; they share their values
    /// with the registered series.
    pub fn sink_counters(&self, sink: &'static str) -> (Counter, Counter) {
        let l = SinkLabels { sink };
        (
            self.log_written.get_or_create(&l).clone(),
            self.log_dropped.get_or_create(&l).clone(),
        )
    }

    /// Counts one certificate renewal attempt.
    pub fn count_tls_renewal(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
