//! The PostgreSQL prediction sink, over real HTTP against the binary and a real
//! PostgreSQL from the harness: values land exactly, many requests land as one row each
//! in few COPYs, a database that is away never fails a request (drops are counted), lost
//! connections reconnect, SIGTERM flushes the queue, and a bad URL stops startup.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const MIGRATIONS: [&str; 3] = [
    include_str!("../../migrations/0001_schema.sql"),
    include_str!("../../migrations/0002_roles.sql"),
    include_str!("../../migrations/0003_predictions.sql"),
];

/// A fresh database with the project's migrations applied.
fn migrated() -> harness::TestDb {
    let db = harness::postgres().database();
    for m in MIGRATIONS {
        db.psql(m).unwrap();
    }
    db
}

/// A login of its own in `mle_user_role` (the grants the migrations give the server's
/// user), with a generated password; returns its URL and password.
fn writer_url(db: &harness::TestDb) -> (String, String) {
    let name = harness::unique("pred_writer").replace('-', "_");
    let pw = harness::unique("pw");
    db.psql(&format!(
        "CREATE ROLE {name} LOGIN IN ROLE mle_user_role PASSWORD {}",
        sql_quote(&pw)
    ))
    .unwrap();
    (db.url_as(&name, &pw), pw)
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn count(db: &harness::TestDb) -> i64 {
    db.psql("SELECT count(*) FROM predictions")
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of one series on `/metrics` (0 if absent).
fn metric(s: &Server, series: &str) -> f64 {
    let body = s.get("/metrics").body;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const WRITTEN: &str = r#"prediction_log_written_total{sink="postgres"}"#;
const DROPPED: &str = r#"prediction_log_dropped_total{sink="postgres"}"#;

fn instance(idx: i64, attr_b: &str) -> String {
    serde_json::json!({
        "idx": idx,
        "features": {"attr_a": idx % 3, "attr_b": attr_b, "scd_a": idx as f64 / 7.0, "scd_b": idx % 5}
    })
    .to_string()
}

fn model_root() -> (tempfile::TempDir, String) {
    let root = tempfile::tempdir().unwrap();
    let version = publish(root.path(), -0.2, 0);
    (root, version)
}

/// A server on a model of its own (`model_root`) writing its predictions to `url`,
/// started with `args` and ready: the model's folder (kept as long as the server runs),
/// the model's version and the server.
fn sink_server(url: String, args: &[&str]) -> (tempfile::TempDir, String, Server) {
    let (root, version) = model_root();
    let s = Server::start(
        root.path().to_str().unwrap(),
        args,
        &[("PREDICTION_DATABASE_URL", url)],
    );
    s.wait_ready(200);
    (root, version, s)
}

#[test]
fn predictions_land_in_the_table_with_the_right_values() {
    let db = migrated();
    let (url, pw) = writer_url(&db);
    let (_root, version, s) = sink_server(url, &["--prediction-database-flush-ms", "20"]);
    let t0 = std::time::SystemTime::now();
    let single = s.post("/predict", ORIGINAL);
    assert_eq!(single.status, 200, "{}", single.body);
    // A batch, one of whose categories carries a NUL (which PostgreSQL text refuses).
    let batch = s.post(
        "/predict/batch",
        &format!(
            r#"{{"instances": [{}, {}]}}"#,
            instance(7, "b"),
            instance(8, "x\u{0}y")
        ),
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    wait_for("3 rows", Duration::from_secs(20), || count(&db) == 3);

    let out = db
        .psql(
            "SELECT idx, attr_a, attr_b, scd_a, scd_b, label, probability, model_version, \
             latency_us, extract(epoch FROM ts) FROM predictions ORDER BY id",
        )
        .unwrap();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let single = single.json();
    let batch = batch.json();
    let want = [
        (150000, 1, "c", 0.55, 3, &single),
        (7, 1, "b", 1.0, 2, &batch["predictions"][0]),
        (8, 2, "x\u{FFFD}y", 8.0 / 7.0, 3, &batch["predictions"][1]),
    ];
    let t1 = std::time::SystemTime::now();
    let epoch = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap();
    for (row, (idx, a, b, scd_a, scd_b, resp)) in rows.iter().zip(want) {
        assert_eq!(row[0].parse::<i64>().unwrap(), idx, "{row:?}");
        assert_eq!(row[1].parse::<i64>().unwrap(), a, "{row:?}");
        assert_eq!(row[2], b, "{row:?}");
        assert_eq!(row[3].parse::<f64>().unwrap(), scd_a, "{row:?}");
        assert_eq!(row[4].parse::<i64>().unwrap(), scd_b, "{row:?}");
        assert_eq!(
            row[5].parse::<u64>().unwrap(),
            resp["label"].as_u64().unwrap()
        );
        // Bit-exact: float8 in binary COPY, printed shortest-exact by PostgreSQL.
        assert_eq!(
            row[6].parse::<f64>().unwrap(),
            resp["probability"].as_f64().unwrap(),
            "{row:?}"
        );
        assert_eq!(row[7], version);
        assert!(row[8].parse::<i64>().unwrap() > 0, "{row:?}");
        let ts = row[9].parse::<f64>().unwrap();
        assert!(
            ts >= epoch(t0).as_secs_f64() - 1.0 && ts <= epoch(t1).as_secs_f64() + 1.0,
            "{row:?}"
        );
    }
    assert_eq!(metric(&s, WRITTEN), 3.0);
    assert_eq!(metric(&s, DROPPED), 0.0);
    assert!(!s.logs().contains(&pw), "the password leaked into the logs");
    assert!(
        s.logs().contains("prediction database connected"),
        "{}",
        s.logs()
    );
}

#[test]
fn many_requests_land_as_one_row_each_in_few_copies() {
    let db = migrated();
    let (url, _pw) = writer_url(&db);
    let (_root, _version, s) = sink_server(
        url,
        &[
            "--prediction-database-batch",
            "100",
            "--prediction-database-flush-ms",
            "50",
        ],
    );
    let (threads, per) = (4i64, 150i64);
    std::thread::scope(|sc| {
        for t in 0..threads {
            let port = s.port;
            sc.spawn(move || {
                let mut c = Conn::open(port).unwrap();
                for i in 0..per {
                    let body = instance(1_000_000 + t * per + i, "a");
                    let r = c
                        .send("POST", "/predict", &[], body.as_bytes(), false)
                        .unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            });
        }
    });
    let n = threads * per;
    wait_for("every request as a row", Duration::from_secs(30), || {
        count(&db) == n
    });
    let out = db
        .psql(
            "SELECT count(DISTINCT idx), min(idx), max(idx), count(DISTINCT xmin::text) \
             FROM predictions",
        )
        .unwrap();
    let f: Vec<i64> = out.split('|').map(|v| v.parse().unwrap()).collect();
    assert_eq!(f[..3], [n, 1_000_000, 1_000_000 + n - 1], "{out}");
    // One COPY is one transaction: rows share their xmin per batch.
    assert!(
        f[3] >= n / 100 && f[3] < n / 2,
        "{} transactions for {n} rows",
        f[3]
    );
    assert_eq!(metric(&s, WRITTEN), n as f64);
    assert_eq!(metric(&s, DROPPED), 0.0);
}

#[test]
fn an_unreachable_database_never_fails_a_request_and_drops_are_counted() {
    let pw = harness::unique("pw");
    // Nothing listens on this port.
    let url = format!(
        "postgres://writer:{pw}@127.0.0.1:{}/predictions_db",
        harness::free_port()
    );
    let (_root, _version, mut s) = sink_server(
        url,
        &[
            "--prediction-database-capacity",
            "10",
            "--shutdown-timeout",
            "1",
        ],
    );
    for i in 0..40 {
        let r = s.post("/predict", &instance(i, "a"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The writer takes nothing while it has no connection: 10 wait, 30 are dropped.
    wait_for("30 drops", Duration::from_secs(10), || {
        metric(&s, DROPPED) == 30.0
    });
    assert_eq!(s.wait_ready(200).status, 200);
    assert!(
        s.logs()
            .contains("cannot connect to the prediction database"),
        "{}",
        s.logs()
    );
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}: {}", s.logs());
    assert!(s.logs().contains("did not flush"), "{}", s.logs());
    assert!(!s.logs().contains(&pw), "the password leaked into the logs");
}

#[test]
fn a_stopped_database_is_survived_without_a_failed_request() {
    // A cluster of our own, stopped in the middle.
    let cluster = harness::PgCluster::start().unwrap();
    for m in MIGRATIONS {
        cluster.psql("postgres", m).unwrap();
    }
    let (_root, _version, s) = sink_server(
        cluster.admin_url("postgres"),
        &[
            "--prediction-database-flush-ms",
            "20",
            "--prediction-database-batch",
            "5",
            "--prediction-database-capacity",
            "5",
        ],
    );
    for i in 0..5 {
        assert_eq!(s.post("/predict", &instance(i, "a")).status, 200);
    }
    wait_for("5 written", Duration::from_secs(20), || {
        metric(&s, WRITTEN) == 5.0
    });
    // Fast shutdown of the postmaster (SIGINT), as an operator's `pg_ctl stop`.
    let pid = std::fs::read_to_string(cluster.base_dir().join("data/postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the cluster to stop", Duration::from_secs(20), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    for i in 0..40 {
        let r = s.post("/predict", &instance(100 + i, "a"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // At most one batch in hand (5) plus 5 queued survive; the rest are counted.
    wait_for("drops to be counted", Duration::from_secs(20), || {
        metric(&s, DROPPED) >= 30.0
    });
    assert_eq!(metric(&s, WRITTEN), 5.0);
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn lost_connections_reconnect_and_failed_copies_are_counted() {
    let db = migrated();
    let (url, _pw) = writer_url(&db);
    let (_root, _version, s) = sink_server(url, &["--prediction-database-flush-ms", "20"]);
    assert_eq!(s.post("/predict", &instance(1, "a")).status, 200);
    wait_for("row 1", Duration::from_secs(20), || count(&db) == 1);

    // The connection is killed from the server side: the next batch reconnects and lands.
    db.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'prediction-server'",
    )
    .unwrap();
    for i in 2..=4 {
        assert_eq!(s.post("/predict", &instance(i, "a")).status, 200);
    }
    wait_for("rows 2-4", Duration::from_secs(20), || count(&db) == 4);
    assert!(s.logs().contains("retrying the batch once"), "{}", s.logs());

    // The table goes away: the COPY fails, the batch is counted, requests stay 200.
    db.psql("ALTER TABLE predictions RENAME TO predictions_away")
        .unwrap();
    for i in 5..=7 {
        assert_eq!(s.post("/predict", &instance(i, "a")).status, 200);
    }
    wait_for("3 drops", Duration::from_secs(20), || {
        metric(&s, DROPPED) == 3.0
    });
    assert!(s.logs().contains("prediction COPY failed"), "{}", s.logs());
    // Back: writes resume.
    db.psql("ALTER TABLE predictions_away RENAME TO predictions")
        .unwrap();
    assert_eq!(s.post("/predict", &instance(8, "a")).status, 200);
    wait_for("row 8", Duration::from_secs(20), || count(&db) == 5);
    let idx = db
        .psql("SELECT string_agg(idx::text, ',' ORDER BY idx) FROM predictions")
        .unwrap();
    assert_eq!(idx, "1,2,3,4,8");
    assert_eq!(metric(&s, WRITTEN), 5.0);
}

#[test]
fn sigterm_flushes_the_queued_predictions() {
    let db = migrated();
    let (url, _pw) = writer_url(&db);
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("predictions.jsonl");
    // A batch would wait a minute to fill: only the shutdown flush can write these.
    let (_root, _version, mut s) = sink_server(
        url,
        &[
            "--prediction-database-flush-ms",
            "60000",
            "--prediction-log",
            log.to_str().unwrap(),
        ],
    );
    // The first record may be taken while the writer is still connecting; wait for it.
    wait_for("the sink to connect", Duration::from_secs(20), || {
        s.logs().contains("prediction database connected")
    });
    for i in 0..7 {
        assert_eq!(s.post("/predict", &instance(i, "a")).status, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&db), 0, "nothing is written before the batch is due");
    s.signal("TERM");
    let st = s.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "{st}: {}", s.logs());
    assert_eq!(count(&db), 7, "{}", s.logs());
    // Both sinks were on at once: the file has them too.
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 7);
}

#[test]
fn a_bad_database_url_is_a_clear_startup_error() {
    let (root, _version) = model_root();
    let pw = harness::unique("pw");
    for (url, want) in [
        (
            format!("postgres://writer:{pw}@127.0.0.1:5432/db?sslmode=require"),
            "sslmode=require",
        ),
        (
            format!("postgres://writer:{pw}@127.0.0.1:5432/db?sslmode=verify-full"),
            "sslmode=verify-full",
        ),
        (
            format!("postgres://writer:{pw}@127.0.0.1:notaport/db"),
            "not a valid PostgreSQL URL",
        ),
    ] {
        let out = std::process::Command::new(server_bin())
            .args(["--model", root.path().to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--log-format", "text"])
            .env("PREDICTION_DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {err}"));
        assert!(line.contains("PREDICTION_DATABASE_URL"), "{line}");
        assert!(line.contains(want), "{line}");
        assert!(!err.contains(&pw), "the password leaked: {err}");
    }
}
