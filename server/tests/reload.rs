//! A reload during load: clients hammer `/predict` over keep-alive connections while the
//! model is swapped many times (SIGHUP and the admin call); not one request may fail,
//! and each answer must come from a whole model (its probability is the one that
//! model's version computes).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

#[test]
fn reload_during_load_fails_no_request() {
    let root = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    let features = model::Features {
        attr_a: 1,
        attr_b: "c".into(),
        scd_a: 0.55,
        scd_b: 3,
    };
    let v0 = publish(root.path(), 0.0, 0);
    expected.insert(v0, model(0.0).predict_proba(&features).unwrap());
    let (s, token) = Server::start_with_admin_token(root.path());

    let stop = Arc::new(AtomicBool::new(false));
    let port = s.port;
    let clients: Vec<_> = (0..4u32)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut failures = Vec::new();
                let mut conn = Conn::open(port).unwrap();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Every 50th request on a fresh connection, the rest keep-alive.
                    n += 1;
                    if n.is_multiple_of(50) {
                        conn = Conn::open(port).unwrap();
                    }
                    let body = if i.is_multiple_of(2) {
                        ORIGINAL.to_string()
                    } else {
                        format!(r#"{{"instances": [{ORIGINAL}, {ORIGINAL}]}}"#)
                    };
                    let path = if i.is_multiple_of(2) {
                        "/predict"
                    } else {
                        "/predict/batch"
                    };
                    match conn.send("POST", path, &[], body.as_bytes(), false) {
                        Ok(r) if r.status == 200 => {
                            let v = r.json();
                            let p = if i.is_multiple_of(2) {
                                v["probability"].as_f64().unwrap()
                            } else {
                                v["predictions"][1]["probability"].as_f64().unwrap()
                            };
                            seen.push((v["model_version"].as_str().unwrap().to_string(), p));
                        }
                        Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                        Err(e) => {
                            failures.push(e.to_string());
                            conn = Conn::open(port).unwrap();
                        }
                    }
                }
                (seen, failures)
            })
        })
        .collect();

    let auth = format!("Bearer {token}");
    for k in 1..=8u64 {
        std::thread::sleep(Duration::from_millis(150));
        let intercept = k as f64 * 0.1;
        let v = publish(root.path(), intercept, k * 60);
        expected.insert(
            v.clone(),
            model(intercept).predict_proba(&features).unwrap(),
        );
        if k.is_multiple_of(2) {
            s.signal("HUP");
            let start = std::time::Instant::now();
            while s.get("/version").json()["model_version"] != v.as_str() {
                assert!(start.elapsed() < Duration::from_secs(10), "{}", s.logs());
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            let r = s.reload(&auth);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["model_version"], v.as_str());
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut versions = BTreeSet::new();
    for c in clients {
        let (seen, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        for (v, p) in &seen {
            let want = expected
                .get(v)
                .unwrap_or_else(|| panic!("unknown version {v}"));
            assert_eq!(p, want, "answer from {v} does not match that model");
            versions.insert(v.clone());
        }
        total += seen.len();
    }
    assert!(total > 200, "only {total} requests");
    assert!(versions.len() >= 5, "saw only {versions:?}");
    eprintln!(
        "{total} requests, 0 failed, across {} model versions",
        versions.len()
    );
}
