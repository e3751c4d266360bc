//! Property tests of request parsing: arbitrary bytes, and arbitrary JSON in the
//! request's shape, never panic and never give a 5xx. In-process through the same
//! handler the server runs (many cases), and over real HTTP (fewer cases).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use model::Location;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use server::app::{AppConfig, AppState};
use server::metrics::Metrics;
use server::source::{Fetcher, ModelSource};

struct Env {
    rt: tokio::runtime::Runtime,
    state: Arc<AppState>,
    _root: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        common::publish(root.path(), 0.0, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(AppState::new(
            AppConfig {
                release: "t".into(),
                body_limit: 64 * 1024,
                max_batch: 50,
                admin_token: None,
            },
            Fetcher::new(ModelSource {
                location: Location::Dir(root.path().to_path_buf()),
                version: None,
            }),
            Arc::new(Metrics::new()),
            None,
        ));
        rt.block_on(state.reload()).unwrap();
        Env {
            rt,
            state,
            _root: root,
        }
    }

    fn call(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.rt.block_on(async {
            let r = server::app::handle(self.state.clone(), req).await;
            let status = r.status().as_u16();
            (status, r.into_body().collect().await.unwrap().to_bytes())
        })
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    })
}

fn check(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500,
        "status {status}: {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
    if status != 200 {
        prop_assert!(v["error"].is_string(), "{v}");
    }
    Ok(())
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-e]{0,3}".prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,7}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Something shaped like a request, with each field sometimes wrong or missing.
fn request_like() -> impl Strategy<Value = serde_json::Value> {
    let field = |good: BoxedStrategy<serde_json::Value>| prop_oneof![3 => good.prop_map(Some), 1 => json_value().prop_map(Some), 1 => Just(None)];
    (
        field(any::<i64>().prop_map(serde_json::Value::from).boxed()),
        field(any::<i64>().prop_map(serde_json::Value::from).boxed()),
        field("[a-f]".prop_map(serde_json::Value::from).boxed()),
        field(any::<f64>().prop_map(serde_json::Value::from).boxed()),
        field(any::<i64>().prop_map(serde_json::Value::from).boxed()),
        prop::option::of(("[a-z]{1,5}", json_value())),
    )
        .prop_map(|(idx, a, b, sa, sb, extra)| {
            let mut f = serde_json::Map::new();
            for (k, v) in [("attr_a", a), ("attr_b", b), ("scd_a", sa), ("scd_b", sb)] {
                if let Some(v) = v {
                    f.insert(k.into(), v);
                }
            }
            let mut top = serde_json::Map::new();
            if let Some(v) = idx {
                top.insert("idx".into(), v);
            }
            top.insert("features".into(), f.into());
            if let Some((k, v)) = extra {
                top.insert(k, v);
            }
            serde_json::Value::Object(top)
        })
}

#[test]
fn arbitrary_bytes_never_5xx() {
    let e = Env::new();
    runner(2000)
        .run(
            &(prop::collection::vec(any::<u8>(), 0..512), any::<bool>()),
            |(body, batch)| {
                let path = if batch { "/predict/batch" } else { "/predict" };
                let (status, out) = e.call("POST", path, body);
                check(status, &out)?;
                prop_assert!(status == 400 || status == 422, "{status}");
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn json_ish_text_never_5xx() {
    let e = Env::new();
    runner(2000)
        .run(&r#"[\[\]{}",:0-9eE.+\- a-z_\\]{0,120}"#, |body| {
            let (status, out) = e.call("POST", "/predict", body.into_bytes());
            check(status, &out)
        })
        .unwrap();
}

#[test]
fn request_shaped_json_is_200_or_named_422() {
    let e = Env::new();
    runner(2000)
        .run(&(request_like(), any::<bool>()), |(req, batch)| {
            let (path, body) = if batch {
                ("/predict/batch", serde_json::json!({"instances": [req]}))
            } else {
                ("/predict", req)
            };
            let (status, out) = e.call("POST", path, serde_json::to_vec(&body).unwrap());
            check(status, &out)?;
            prop_assert!(status == 200 || status == 422, "{status}");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            if status == 422 {
                prop_assert!(v["field"].is_string(), "422 without a field: {v}");
            } else {
                let p = if batch {
                    v["predictions"][0]["probability"].as_f64()
                } else {
                    v["probability"].as_f64()
                };
                prop_assert!(p.is_some_and(|p| (0.0..=1.0).contains(&p)), "{v}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_paths_and_methods_never_5xx() {
    let e = Env::new();
    let methods = vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];
    runner(1000)
        .run(
            &(
                "/[a-z/._-]{0,20}",
                prop::sample::select(methods),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            |(path, method, body)| {
                let (status, out) = e.call(method, &path, body);
                prop_assert!(status < 500, "{status} for {method} {path}");
                if path != "/metrics" {
                    check(status, &out)?;
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Over the wire: hyper's own parsing in front of ours.
#[test]
fn over_http_arbitrary_bodies_never_5xx() {
    let root = tempfile::tempdir().unwrap();
    common::publish(root.path(), 0.0, 0);
    let s = common::Server::start(
        root.path().to_str().unwrap(),
        &["--body-limit", "1024"],
        &[],
    );
    s.wait_ready(200);
    runner(150)
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |body| {
            let r = common::request(s.port, "POST", "/predict", &[], &body);
            prop_assert!(
                [400, 413, 422].contains(&r.status),
                "{} {}",
                r.status,
                r.body
            );
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            prop_assert!(v["error"].is_string());
            Ok(())
        })
        .unwrap();
}
