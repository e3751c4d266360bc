//! The application: shared state, routing and handlers. Transport-agnostic: [`handle`]
//! takes any `http` request whose body yields `Bytes`, so tests can call it in-process.
//!
//! Routes (the OpenAPI document at `GET /openapi.json` is the reference):
//!
//! | route | method | answer |
//! | --- | --- | --- |
//! | `/predict` | POST | `{"idx", "label", "probability", "model_version"}` |
//! | `/predict/batch` | POST | `{"model_version", "predictions": [{"idx", "label", "probability"}]}` |
//! | `/healthz` | GET | liveness: 200 while the process serves |
//! | `/readyz` | GET | readiness: 200 with a model loaded, else 503 with the reason |
//! | `/model` | GET | the loaded model's manifest (version, metrics, created_at, schema...) |
//! | `/version` | GET | `{"release": "...", "model_version": "..." \| null}` |
//! | `/metrics` | GET | Prometheus / OpenMetrics text |
//! | `/openapi.json` | GET | this API's OpenAPI 3.1 document |
//! | `/admin/reload` | POST | reload the model; `Authorization: Bearer $SERVER_ADMIN_TOKEN` |
//!
//! Errors are JSON: `{"status": 422, "error": "features.scd_a: expected a number, got a
//! string", "field": "features.scd_a"}` (`field` only when one is to blame).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::api::{self, ParseError};
use crate::predlog::Record;

mod state;

pub use state::{AppConfig, AppState, Loaded, Reloaded};

type Resp = Response<Full<Bytes>>;

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json_response(
        status,
        &json!({"status": status.as_u16(), "error": msg.into()}),
    )
}

fn parse_error(e: ParseError) -> Resp {
    match e {
        ParseError::Malformed(m) => error(StatusCode::BAD_REQUEST, format!("malformed JSON: {m}")),
        ParseError::Invalid { field, reason } => json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"status": 422, "error": format!("{field}: {reason}"), "field": field}),
        ),
    }
}

const ROUTES: &[(&str, &[Method])] = &[
    ("/predict", &[Method::POST]),
    ("/predict/batch", &[Method::POST]),
    ("/healthz", &[Method::GET]),
    ("/readyz", &[Method::GET]),
    ("/model", &[Method::GET]),
    ("/version", &[Method::GET]),
    ("/metrics", &[Method::GET]),
    ("/openapi.json", &[Method::GET]),
    ("/admin/reload", &[Method::POST]),
];

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Answers one request. Never fails and never panics on client input.
pub async fn handle<B>(state: Arc<AppState>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let start = Instant::now();
    let method = method_label(req.method());
    let (i, resp) = route(&state, req, start).await;
    let name = ROUTES.get(i).map_or("unmatched", |r| r.0);
    state.metrics.observe_route(
        &state.route_series[i],
        name,
        method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Answers; returns the route's index in `ROUTES` (`ROUTES.len()`: unmatched).
async fn route<B>(state: &AppState, req: Request<B>, start: Instant) -> (usize, Resp)
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    let Some(i) = ROUTES.iter().position(|(p, _)| *p == path) else {
        return (
            ROUTES.len(),
            error(StatusCode::NOT_FOUND, format!("no route {path}")),
        );
    };
    let (route, methods) = ROUTES[i];
    if !methods.contains(req.method()) {
        let allow = methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {route}; use {allow}", req.method()),
        );
        if let Ok(v) = HeaderValue::from_str(&allow) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        return (i, r);
    }
    let resp = match route {
        "/predict" => match body(state, req).await {
            Ok(b) => predict(state, &b, start),
            Err(r) => r,
        },
        "/predict/batch" => match body(state, req).await {
            Ok(b) => predict_batch(state, &b, start),
            Err(r) => r,
        },
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => match state.not_ready_reason() {
            None => json_response(
                StatusCode::OK,
                &json!({"status": "ready", "model_version": current_version(state)}),
            ),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": reason}),
            ),
        },
        "/model" => model_info(state),
        "/version" => {
            let v = api::VersionInfo {
                release: state.config.release.clone(),
                model_version: current_version(state),
            };
            json_response(StatusCode::OK, &v)
        }
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/openapi.json" => {
            let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        // Boxed: a reload's future (an S3 fetch) is ~12 KB, and every request's future
        // would otherwise be that large, created and moved (memcpy) per request.
        "/admin/reload" => Box::pin(admin_reload(state, req)).await,
        _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    };
    (i, resp)
}

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../openapi.json");

fn current_version(state: &AppState) -> Option<String> {
    state.model.load().as_ref().map(|m| m.version.to_string())
}

/// Reads the body, refusing more than the limit with 413 (by `Content-Length` before
/// reading, or while reading a chunked body).
async fn body<B>(state: &AppState, req: Request<B>) -> Result<Bytes, Resp>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = state.config.body_limit;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > limit as u64 => return Err(too_large()),
            Some(_) => {}
            None => return Err(error(StatusCode::BAD_REQUEST, "invalid Content-Length")),
        }
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
    }
}

fn no_model(state: &AppState) -> Resp {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "no model loaded: {}",
            state.not_ready_reason().unwrap_or_else(|| "loading".into())
        ),
    )
}

fn score(
    state: &AppState,
    m: &Loaded,
    r: &api::PredictRequest,
    field_prefix: &str,
) -> Result<model::Prediction, Box<Resp>> {
    let model = &m.artifact.model;
    if !model.encoding.is_known_category(&r.features.attr_b) {
        state.metrics.unknown_category.inc();
    }
    model.predict(&r.features).map_err(|e| {
        // A valid input the loaded model cannot score is the server's failure, not the
        // client's: 500, so the error rate shows a bad model.
        if matches!(e, model::EncodeError::NotScorable) {
            return Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("model {}: {e}", m.version),
            ));
        }
        let field = match &e {
            model::EncodeError::NonFinite { field, .. }
            | model::EncodeError::OutOfRange { field, .. } => {
                format!("{field_prefix}features.{field}")
            }
            _ => format!("{field_prefix}features"),
        };
        Box::new(parse_error(ParseError::Invalid {
            field,
            reason: e.to_string(),
        }))
    })
}

fn record(
    state: &AppState,
    m: &Loaded,
    r: api::PredictRequest,
    p: model::Prediction,
    start: Instant,
) {
    state.metrics.count_prediction(p.label);
    if let Some(log) = &state.predlog {
        log.log(Record {
            ts: SystemTime::now(),
            idx: r.idx,
            features: r.features,
            label: p.label,
            probability: p.probability,
            model_version: m.version.clone(),
            latency_us: start.elapsed().as_micros() as u64,
        });
    }
}

fn predict(state: &AppState, body: &[u8], start: Instant) -> Resp {
    let req = match api::parse_predict(body) {
        Ok(r) => r,
        Err(e) => return parse_error(e),
    };
    let guard = state.model.load();
    let Some(m) = guard.as_ref() else {
        return no_model(state);
    };
    let p = match score(state, m, &req, "") {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let out = api::PredictResponseRef {
        idx: req.idx,
        label: p.label,
        probability: p.probability,
        model_version: &m.version,
    };
    record(state, m, req, p, start);
    json_response(StatusCode::OK, &out)
}

fn predict_batch(state: &AppState, body: &[u8], start: Instant) -> Resp {
    let reqs = match api::parse_batch(body, state.config.max_batch) {
        Ok(r) => r,
        Err(e) => return parse_error(e),
    };
    // One model for the whole batch, even if a reload lands meanwhile.
    let guard = state.model.load();
    let Some(m) = guard.as_ref() else {
        return no_model(state);
    };
    let mut preds = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        match score(state, m, r, &format!("instances[{i}].")) {
            Ok(p) => preds.push(p),
            Err(resp) => return *resp,
        }
    }
    let out = api::BatchResponse {
        model_version: m.version.to_string(),
        predictions: reqs
            .iter()
            .zip(&preds)
            .map(|(r, p)| api::BatchItem {
                idx: r.idx,
                label: p.label,
                probability: p.probability,
            })
            .collect(),
    };
    for (r, p) in reqs.into_iter().zip(preds) {
        record(state, m, r, p, start);
    }
    json_response(StatusCode::OK, &out)
}

fn model_info(state: &AppState) -> Resp {
    let guard = state.model.load();
    let Some(m) = guard.as_ref() else {
        return no_model(state);
    };
    let man = &m.artifact.manifest;
    json_response(
        StatusCode::OK,
        &json!({
            "model_version": man.model_version,
            "created_at": man.created_at,
            "code_version": man.code_version,
            "training_data": man.training_data,
            "family": man.model.family,
            "threshold": man.threshold,
            "metrics": man.metrics,
            "schema_version": man.schema_version,
            "features": {
                "input": {
                    "attr_a": "integer",
                    "attr_b": "string (unseen categories are scored as all-zeros one-hot)",
                    "scd_a": "number (finite)",
                    "scd_b": "integer",
                },
                "columns": m.artifact.model.encoding.feature_names(),
                "encoding": man.features,
            },
            "source": m.source,
            "loaded_at": m.loaded_at,
        }),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn admin_reload<B>(state: &AppState, req: Request<B>) -> Resp {
    let Some(want) = &state.config.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: no SERVER_ADMIN_TOKEN is configured",
        );
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if !given.is_some_and(|g| token_matches(g, want.as_bytes())) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    drop(req);
    match state.reload().await {
        Ok(r) => json_response(
            StatusCode::OK,
            &json!({"status": "reloaded", "model_version": r.version, "previous_version": r.previous}),
        ),
        // 409: the request was fine, the artifact is not; the old model keeps serving.
        Err(reason) => json_response(
            StatusCode::CONFLICT,
            &json!({
                "status": 409,
                "error": "reload failed; the previous model keeps serving",
                "reason": reason,
                "model_version": current_version(state),
            }),
        ),
    }
}
