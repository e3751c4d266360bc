//! The first model load is retried with backoff: a server that boots before its model
//! can be read (S3 not reachable yet, the artifact not published yet) becomes ready by
//! itself once it can, without SIGHUP or an admin call.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn first_load_is_retried_until_the_model_can_be_read() {
    let root = tempfile::tempdir().unwrap();
    let s = Server::start(
        root.path().to_str().unwrap(),
        &[],
        &[("SERVER_FIRST_LOAD_MAX_BACKOFF", "1".into())],
    );
    // Nothing published yet: not ready, for the model's reason.
    let start = Instant::now();
    let mut r = s.wait_ready(503);
    while r.json()["reason"] == "loading the model" && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        r = s.wait_ready(503);
    }
    assert_eq!(r.json()["status"], "not_ready", "{}", r.body);
    // Still not ready a moment later: nothing to load.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.get("/readyz").status, 503);

    // Publish; no reload is sent. The retry loop picks it up.
    let version = publish(root.path(), 0.1, 0);
    let r = s.wait_ready(200);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/version").json()["model_version"], version.as_str());
    assert_eq!(s.post("/predict", ORIGINAL).status, 200);
}
