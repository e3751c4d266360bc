//! Every route and every error case, over real HTTP on loopback against the binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn served() -> (tempfile::TempDir, String, Server) {
    let root = tempfile::tempdir().unwrap();
    let version = publish(root.path(), -0.2, 0);
    let s = Server::start(
        root.path().to_str().unwrap(),
        &["--body-limit", "4096", "--max-batch", "5"],
        &[("RELEASE", "release-42".into())],
    );
    s.wait_ready(200);
    (root, version, s)
}

fn assert_json_error(r: &Resp, status: u16) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], status);
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    v
}

#[test]
fn predict_answers_the_original_request() {
    let (_root, version, s) = served();
    let r = s.post("/predict", ORIGINAL);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["idx"], 150000);
    assert!(v["label"].is_u64(), "label is an integer: {v}");
    assert_eq!(v["model_version"], version.as_str());
    let want = model(-0.2)
        .predict(&model::Features {
            attr_a: 1,
            attr_b: "c".into(),
            scd_a: 0.55,
            scd_b: 3,
        })
        .unwrap();
    assert_eq!(v["probability"].as_f64().unwrap(), want.probability);
    assert_eq!(v["label"].as_u64().unwrap(), u64::from(want.label));
}

#[test]
fn batch_predicts_in_order_and_unseen_category_is_scored() {
    let (_root, version, s) = served();
    let body = r#"{"instances": [
        {"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}},
        {"idx": 2, "features": {"attr_a": 0, "attr_b": "zz-never-seen", "scd_a": -3, "scd_b": 0}}]}"#;
    let r = s.post("/predict/batch", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["model_version"], version.as_str());
    let p = v["predictions"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["idx"], 1);
    assert_eq!(p[1]["idx"], 2);
    let single = s.post("/predict", ORIGINAL).json();
    assert_eq!(p[0]["probability"], single["probability"]);
    // batch over the limit: 422 naming `instances`
    let one = r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;
    let six = format!(r#"{{"instances": [{}]}}"#, [one; 6].join(","));
    let v = assert_json_error(&s.post("/predict/batch", &six), 422);
    assert_eq!(v["field"], "instances");
    let m = s.get("/metrics").body;
    assert!(m.contains("unknown_category_total 1"), "{m}");
}

#[test]
fn validation_errors() {
    let (_root, _v, s) = served();
    // 400: not JSON
    for body in ["{", "not json", r#"{"idx": NaN}"#, ""] {
        let v = assert_json_error(&s.post("/predict", body), 400);
        assert!(v["error"].as_str().unwrap().contains("malformed"), "{v}");
    }
    // 422: the field is named
    let cases = [
        (
            r#"{"features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#,
            "idx",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55}}"#,
            "features.scd_b",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3, "x": 1}}"#,
            "features.x",
        ),
        (
            r#"{"idx": 1, "extra": true, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#,
            "extra",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": "1", "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#,
            "features.attr_a",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": 7, "scd_a": 0.55, "scd_b": 3}}"#,
            "features.attr_b",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": "0.55", "scd_b": 3}}"#,
            "features.scd_a",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 1e999, "scd_b": 3}}"#,
            "features.scd_a",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": -1e400, "scd_b": 3}}"#,
            "features.scd_a",
        ),
        (
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 3.5}}"#,
            "features.scd_b",
        ),
        (
            r#"{"idx": "150000", "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#,
            "idx",
        ),
        (r#"{"idx": 1, "features": null}"#, "features"),
        (r#"[1, 2, 3]"#, "(body)"),
    ];
    for (body, field) in cases {
        let v = assert_json_error(&s.post("/predict", body), 422);
        assert_eq!(v["field"], field, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().starts_with(field), "{v}");
    }
    let v = assert_json_error(
        &s.post(
            "/predict/batch",
            r#"{"instances": [{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": true, "scd_b": 3}}]}"#,
        ),
        422,
    );
    assert_eq!(v["field"], "instances[0].features.scd_a");
}

#[test]
fn body_over_the_limit_is_413() {
    let (_root, _v, s) = served();
    // By Content-Length, answered before the body is read.
    let big = format!(r#"{{"idx": 1, "pad": "{}"}}"#, "x".repeat(5000));
    assert_json_error(&s.post("/predict", &big), 413);
    // Chunked, with no Content-Length: caught while reading.
    let mut c = Conn::open(s.port).unwrap();
    let chunk = "y".repeat(3000);
    let req = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    std::io::Write::write_all(c.stream(), req.as_bytes()).unwrap();
    assert_json_error(&c.read_response().unwrap(), 413);
    // Just under the limit is still parsed (and refused for its content, not its size).
    let ok_size = format!(r#"{{"idx": 1, "pad": "{}"}}"#, "x".repeat(3000));
    assert_json_error(&s.post("/predict", &ok_size), 422);
}

#[test]
fn unknown_route_404_wrong_method_405() {
    let (_root, _v, s) = served();
    assert_json_error(&s.get("/nope"), 404);
    assert_json_error(&s.post("/predict/", ORIGINAL), 404);
    let r = s.get("/predict");
    assert_json_error(&r, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = request(s.port, "DELETE", "/healthz", &[], b"");
    assert_json_error(&r, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    assert_json_error(&s.post("/metrics", ""), 405);
}

#[test]
fn operator_endpoints() {
    let (_root, version, s) = served();
    let r = s.get("/healthz");
    assert_eq!((r.status, r.json()["status"].clone()), (200, "ok".into()));
    let r = s.get("/readyz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model_version"], version.as_str());

    let v = s.get("/version").json();
    assert_eq!(
        v,
        serde_json::json!({"release": "release-42", "model_version": version})
    );

    let m = s.get("/model").json();
    assert_eq!(m["model_version"], version.as_str());
    assert_eq!(m["family"], "logistic_regression");
    assert_eq!(m["metrics"]["roc_auc"], 0.8);
    assert_eq!(m["created_at"], "2026-11-24T17:00:00Z");
    assert_eq!(
        m["features"]["encoding"]["categories"],
        serde_json::json!(["a", "b", "c", "d"])
    );
    assert_eq!(m["features"]["columns"][0], "attr_a");

    let doc = s.get("/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/predict",
        "/predict/batch",
        "/healthz",
        "/readyz",
        "/model",
        "/version",
        "/metrics",
        "/openapi.json",
        "/admin/reload",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    // Every status the scoring routes answer is documented (500: a model that cannot
    // score a valid instance, see the NaN-model tests).
    for p in ["/predict", "/predict/batch"] {
        for code in ["200", "400", "413", "422", "500", "503"] {
            assert!(
                doc["paths"][p]["post"]["responses"].get(code).is_some(),
                "openapi lacks {code} for {p}"
            );
        }
    }

    s.post("/predict", ORIGINAL);
    s.get("/nope");
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("openmetrics-text")
    );
    let m = r.body;
    for want in [
        r#"http_requests_total{route="/predict",method="POST",status="200"} 1"#,
        r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"http_request_duration_seconds_bucket{le="#,
        "predictions_total{label=",
        &format!(r#"model_info{{version="{version}"}} 1"#),
        r#"model_reloads_total{result="ok"} 1"#,
    ] {
        assert!(m.contains(want), "metrics lack {want}:\n{m}");
    }
    // No prediction sink configured: no per-sink series.
    assert!(!m.contains("prediction_log_dropped_total{"), "{m}");
}

#[test]
fn not_ready_without_a_model_then_ready_after_reload() {
    let root = tempfile::tempdir().unwrap();
    let token = harness::unique("tok");
    // One load attempt only: this test drives the reload itself.
    let s = Server::start(
        root.path().to_str().unwrap(),
        &[],
        &[
            ("SERVER_ADMIN_TOKEN", token.clone()),
            ("SERVER_FIRST_LOAD_MAX_BACKOFF", "0".into()),
        ],
    );
    // The first load runs beside the listener: until it has failed, the reason is
    // "loading the model" (a race this test lost under load).
    let mut r = s.wait_ready(503);
    let start = std::time::Instant::now();
    while r.json()["reason"] == "loading the model" && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        r = s.wait_ready(503);
    }
    assert_eq!(r.json()["status"], "not_ready");
    assert!(
        r.json()["reason"].as_str().unwrap().contains("latest"),
        "{}",
        r.body
    );
    assert_json_error(&s.post("/predict", ORIGINAL), 503);
    assert_json_error(&s.get("/model"), 503);
    assert_eq!(
        s.get("/version").json()["model_version"],
        serde_json::Value::Null
    );
    assert_eq!(s.get("/healthz").status, 200);

    let version = publish(root.path(), 0.1, 0);
    let auth = format!("Bearer {token}");
    let r = s.reload(&auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model_version"], version.as_str());
    assert_eq!(r.json()["previous_version"], serde_json::Value::Null);
    s.wait_ready(200);
    assert_eq!(s.post("/predict", ORIGINAL).status, 200);
}

#[test]
fn admin_reload_needs_the_token() {
    let (_root, _v, s) = served();
    // No token configured: disabled.
    assert_json_error(&s.post("/admin/reload", ""), 403);

    let root = tempfile::tempdir().unwrap();
    publish(root.path(), 0.0, 0);
    let (s, token) = Server::start_with_admin_token(root.path());
    let r = s.post("/admin/reload", "");
    assert_json_error(&r, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong = format!("Bearer {token}x");
    assert_json_error(&s.reload(&wrong), 401);
    let raw = token.clone();
    assert_json_error(&s.reload(&raw), 401);
    let right = format!("Bearer {token}");
    assert_eq!(s.reload(&right).status, 200);
}

#[test]
fn failed_reload_keeps_the_old_model_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let v1 = publish(root.path(), 0.0, 0);
    let (s, token) = Server::start_with_admin_token(root.path());
    // A new version whose parameters were tampered with after the checksums were made.
    let a = artifact(1.0, 60);
    let dir = a.save(root.path()).unwrap();
    let p = dir.join("model.json");
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"intercept\":1.0", "\"intercept\":9.0");
    std::fs::write(&p, t).unwrap();
    std::fs::write(root.path().join("latest"), format!("{}\n", a.version())).unwrap();

    let auth = format!("Bearer {token}");
    let r = s.reload(&auth);
    assert_eq!(r.status, 409, "{}", r.body);
    let v = r.json();
    assert_eq!(v["model_version"], v1.as_str());
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("checksum mismatch") && reason.contains("model.json"),
        "{reason}"
    );
    // Still serving v1, still ready.
    assert_eq!(
        s.post("/predict", ORIGINAL).json()["model_version"],
        v1.as_str()
    );
    assert_eq!(s.get("/readyz").status, 200);
    // SIGHUP fails the same way, and says so in the log.
    s.signal("HUP");
    let start = std::time::Instant::now();
    while !s
        .get("/metrics")
        .body
        .contains(r#"model_reloads_total{result="error"} 2"#)
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", s.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.logs().contains("checksum mismatch"), "{}", s.logs());
    assert_eq!(s.get("/version").json()["model_version"], v1.as_str());
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), 0.0, 0);
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("predictions.jsonl");
    let mut s = Server::start(
        root.path().to_str().unwrap(),
        &[
            "--prediction-log",
            log.to_str().unwrap(),
            "--shutdown-timeout",
            "5",
        ],
        &[],
    );
    s.wait_ready(200);
    for _ in 0..3 {
        assert_eq!(s.post("/predict", ORIGINAL).status, 200);
    }
    // An in-flight request: headers and half the body sent before SIGTERM.
    let mut c = Conn::open(s.port).unwrap();
    let body = ORIGINAL.as_bytes();
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(c.stream(), head.as_bytes()).unwrap();
    std::io::Write::write_all(c.stream(), &body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // No new connections are accepted while draining.
    assert!(
        Conn::open(s.port)
            .and_then(|mut c| c.send("GET", "/healthz", &[], b"", true))
            .is_err()
    );
    std::io::Write::write_all(c.stream(), &body[10..]).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}: {}", s.logs());
    // The prediction log holds all four, flushed at exit.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0]["idx"], 150000);
    assert_eq!(lines[0]["features"]["attr_b"], "c");
    assert!(lines[0]["model_version"].is_string());
    assert!(lines[0]["latency_us"].is_u64());
    assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn sigterm_deadline_bounds_a_stuck_request() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), 0.0, 0);
    let mut s = Server::start(
        root.path().to_str().unwrap(),
        &["--shutdown-timeout", "1"],
        &[],
    );
    s.wait_ready(200);
    // A client that never finishes its body.
    let mut c = Conn::open(s.port).unwrap();
    std::io::Write::write_all(
        c.stream(),
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(s.logs().contains("deadline"), "{}", s.logs());
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    let out = std::process::Command::new(server_bin())
        .args(["--model", "ftp://x/y", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: --model"), "{err}");
}

#[test]
fn prediction_log_failures_are_counted_and_never_fail_requests() {
    let root = tempfile::tempdir().unwrap();
    publish(root.path(), 0.0, 0);
    // /dev/full: every write fails with ENOSPC.
    let s = Server::start(
        root.path().to_str().unwrap(),
        &["--prediction-log", "/dev/full"],
        &[],
    );
    s.wait_ready(200);
    for _ in 0..5 {
        assert_eq!(s.post("/predict", ORIGINAL).status, 200);
    }
    let start = std::time::Instant::now();
    while !s
        .get("/metrics")
        .body
        .contains(r#"prediction_log_dropped_total{sink="file"} 5"#)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            s.get("/metrics").body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        s.logs().contains("prediction log write failed"),
        "{}",
        s.logs()
    );
}
