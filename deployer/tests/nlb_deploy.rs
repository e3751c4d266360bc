//! Blue/green behind a Network Load Balancer (`front = "nlb"`, three instances per
//! colour) on the local cloud: the instances boot their user data, the deployer
//! registers them in the colour's target group, waits for the group's own health
//! checks (the balancer stand-in's probes, `initial` until checked) and for its own
//! `/readyz` + `/version` probe of each, then shifts the listener's weights. Traffic
//! goes through the balancer's two Elastic IPs (loopback stand-ins) only.
//!
//! One app, one story: r1 on blue; r2 under load (no failed request, one switch per
//! worker); one r2 process killed under load (no request lost once its target is
//! unhealthy); rollback to r1; r3, whose model cannot score, as a `--canary 50%` that
//! rolls itself back; destroy leaves nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{CloudApp, leftovers};
use deployer::state::Color;
use harness::cloud::{InstanceStatus, LocalCloud};

fn cloud() -> &'static LocalCloud {
    harness::cloud::shared()
}

const N: usize = 3;

/// The balancer's two addresses (loopback stand-ins of its Elastic IPs).
async fn balancer_ips(app: &CloudApp) -> Vec<IpAddr> {
    let st = app.state().await;
    let clients = app.s.clients().await;
    let mut ips = Vec::new();
    for addr in ["aws_eip.api", "aws_eip.b"] {
        let alloc = &st
            .resources
            .get(addr)
            .unwrap_or_else(|| panic!("{addr} not in the state: {:?}", st.resources.keys()))
            .id;
        let (ip, _) = deployer::release::eip_holder(&clients, alloc)
            .await
            .unwrap();
        let ip: IpAddr = ip.unwrap().parse().unwrap();
        assert!(ip.is_loopback(), "{addr}: {ip}");
        ips.push(ip);
    }
    ips
}

/// `DescribeTargetHealth` of `color`'s group: (instance, state).
async fn target_health(app: &CloudApp, color: Color) -> Vec<(String, String)> {
    let st = app.state().await;
    let bal = deployer::release::Balancer::of(&app.s.clients().await, &st).unwrap();
    let mut v: Vec<_> = bal
        .health(color)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.instance_id, h.state))
        .collect();
    v.sort();
    v
}

async fn weights(app: &CloudApp) -> String {
    let st = app.state().await;
    app.s.deployer().await.listener_weights(&st).await.unwrap()
}

/// One request on its own connection: `GET /version` (the release) or `POST /predict`
/// (the status code as the answer).
fn request(addr: SocketAddr, predict: bool) -> Result<String, String> {
    if !predict {
        return common::version_at(addr.ip(), addr.port())
            .map(|(r, _)| r)
            .ok_or_else(|| "GET /version failed".to_string());
    }
    let body = r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;
    harness::http::request_at(addr, "POST", "/predict", &[], body, Duration::from_secs(7))
        .map(|r| r.status.to_string())
        .map_err(|e| e.to_string())
}

/// One worker's requests: when each ended, and its answer or why it failed.
type Log = Vec<(Instant, Result<String, String>)>;

/// Workers sending requests through the balancer's addresses (worker k starts on
/// address k and alternates), one connection each, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Per worker: (when, answer or failure).
    seen: Vec<Arc<Mutex<Log>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(ips: &[IpAddr], port: u16, workers: usize, predict: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut seen = Vec::new();
        let mut threads = Vec::new();
        for k in 0..workers {
            let log = Arc::new(Mutex::new(Vec::new()));
            seen.push(log.clone());
            let (stop, ips) = (stop.clone(), ips.to_vec());
            threads.push(std::thread::spawn(move || {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let addr = SocketAddr::new(ips[i % ips.len()], port);
                    let r = request(addr, predict);
                    log.lock().unwrap().push((Instant::now(), r));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(15));
                }
            }));
        }
        Load {
            stop,
            seen,
            threads,
        }
    }

    fn finish(self) -> Vec<Log> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.seen
            .into_iter()
            .map(|s| std::mem::take(&mut *s.lock().unwrap()))
            .collect()
    }
}

/// The answers in the order they changed (each change counted).
fn runs(log: &Log) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, r) in log {
        if let Ok(v) = r
            && out.last() != Some(v)
        {
            out.push(v.clone());
        }
    }
    out
}

/// A model artifact the server loads (valid parameters, finite scales) but cannot
/// score with: two weights of opposite sign so large, on features scaled so finely,
/// that every input's score is inf - inf = NaN. Uploaded under `models/`; returns its
/// version.
async fn unscorable_model(app: &CloudApp) -> String {
    use model::classifier::{Classifier, Logistic};
    let mut enc = model::FeatureEncoding::fit(&harness::artifact::training()).unwrap();
    for s in enc.numeric.iter_mut().take(2) {
        s.mean = -1e6;
        s.std = 1e-300;
    }
    let mut weights = vec![0.0; enc.width()];
    weights[0] = 1e308;
    weights[1] = -1e308;
    let m = model::Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights,
            intercept: 0.0,
        }),
        0.5,
    )
    .unwrap();
    let mut metrics = serde_json::Map::new();
    metrics.insert("roc_auc".into(), serde_json::json!(0.8));
    let a = model::Artifact::new(model::ArtifactSpec {
        model: m,
        code_version: "nlb-test-unscorable".into(),
        training_data: "sha256:00".into(),
        metrics,
        extra_files: Default::default(),
        created: std::time::UNIX_EPOCH + Duration::from_secs(1_795_539_600 + 3600),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    let s3 = app.s.clients().await.s3;
    harness::upload_dir(&s3, &app.s.cfg.artifacts.bucket, "models", dir.path()).await;
    a.version().to_string()
}

fn nlb_config(soak: i64) -> Vec<(&'static str, &'static str, toml::Value)> {
    use toml::Value::{Float, Integer, String as S};
    vec![
        ("", "front", S("nlb".into())),
        ("", "instances_per_color", Integer(N as i64)),
        ("nlb", "health_check_interval_seconds", Integer(5)),
        ("nlb", "healthy_threshold", Integer(2)),
        ("nlb", "unhealthy_threshold", Integer(2)),
        ("nlb", "deregistration_delay_seconds", Integer(2)),
        ("canary", "soak_seconds", Integer(soak)),
        ("canary", "max_error_rate", Float(0.01)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_per_colour_behind_the_balancer_shift_by_weight() {
    let app = CloudApp::new(&nlb_config(6), &["r1", "r2"]).await;
    let port = app.port;
    let ips = balancer_ips(&app).await;

    // r1: three instances on blue, registered, healthy, the weights on blue; every
    // balancer address serves it.
    let r = app
        .ok(&app.release_args(&["deploy", "--release", "r1"]))
        .await;
    eprintln!("deploy r1:\n{}", r.stdout);
    let st = app.state().await;
    let blue = st.release.instances[&Color::Blue].clone();
    assert_eq!(blue.ids().len(), N, "{blue:?}");
    for id in blue.ids() {
        assert!(
            matches!(cloud().status(&id), Some(InstanceStatus::Serving(_))),
            "{id} serves from its own boot: {:?}",
            cloud().status(&id)
        );
    }
    let healthy: Vec<_> = blue
        .ids()
        .into_iter()
        .map(|i| (i, "healthy".to_string()))
        .collect();
    let mut want = healthy.clone();
    want.sort();
    assert_eq!(target_health(&app, Color::Blue).await, want);
    assert_eq!(weights(&app).await, "blue 100%, green 0%");
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    assert_eq!(st.release.weights_moving, None);
    assert!(
        r.stdout
            .contains("Cutover: aws_lb_listener.api weights now blue 100%, green 0%"),
        "{}",
        r.stdout
    );
    for ip in &ips {
        common::assert_serving(*ip, port, "r1", None);
        let IpAddr::V4(v4) = ip else { panic!("{ip}") };
        let spread = cloud().balancer_route(*v4, port).unwrap();
        let live: Vec<_> = spread.iter().filter(|(w, _)| *w > 0).collect();
        assert_eq!(live.len(), 1, "{spread:?}");
        assert_eq!(
            live[0].1.len(),
            N,
            "{ip}: spread over every blue target: {spread:?}"
        );
    }
    let map = cloud().address_map_path();
    let status = app
        .ok(&["status", "--address-map", common::path_str(map)])
        .await;
    eprintln!("status:\n{}", status.stdout);
    assert_eq!(
        status.stdout.matches(" target healthy").count(),
        N,
        "{}",
        status.stdout
    );

    // r2 under load through both addresses: no request fails, and every worker sees
    // r1 then r2, once.
    let load = Load::start(&ips, port, 3, false);
    std::thread::sleep(Duration::from_millis(500));
    let r = app
        .ok(&app.release_args(&["deploy", "--release", "r2"]))
        .await;
    eprintln!("deploy r2:\n{}", r.stdout);
    for ip in &ips {
        common::assert_serving(*ip, port, "r2", None);
    }
    std::thread::sleep(Duration::from_secs(1));
    let logs = load.finish();
    let mut total = 0;
    for (k, log) in logs.iter().enumerate() {
        let failed: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
        total += log.len();
        assert!(log.len() > 20, "worker {k}: only {} requests", log.len());
        assert!(
            failed.is_empty(),
            "worker {k}: {} of {} failed: {failed:?}",
            failed.len(),
            log.len()
        );
        assert_eq!(runs(log), ["r1", "r2"], "worker {k}: one switch");
    }
    eprintln!("r2 under load: {total} requests by 3 workers, 0 failed, one switch each");
    let st = app.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Green));
    assert_eq!(st.release.instances[&Color::Green].ids().len(), N);
    assert!(
        st.release.instances[&Color::Blue].retire_after.is_some(),
        "blue kept for the window"
    );
    assert_eq!(weights(&app).await, "blue 0%, green 100%");
    assert_eq!(
        target_health(&app, Color::Blue).await,
        want,
        "blue stays registered at weight 0"
    );

    // One green process killed under load: once its target is unhealthy no request is
    // lost, and green keeps serving r2.
    let victim = st.release.instances[&Color::Green].ids()[1].clone();
    let load = Load::start(&ips, port, 3, false);
    std::thread::sleep(Duration::from_millis(500));
    let Some(InstanceStatus::Serving(pid)) = cloud().status(&victim) else {
        panic!("{victim}: {:?}", cloud().status(&victim))
    };
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let marked = loop {
        let h = target_health(&app, Color::Green).await;
        if h.iter().any(|(i, s)| i == &victim && s == "unhealthy") {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "never marked out: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    std::thread::sleep(Duration::from_secs(3));
    let logs = load.finish();
    let (mut before, mut after, mut lost_before) = (0, 0, 0);
    for (k, log) in logs.iter().enumerate() {
        for (at, r) in log {
            if *at <= marked {
                before += 1;
                lost_before += usize::from(r.is_err());
                continue;
            }
            after += 1;
            assert_eq!(
                r.as_deref(),
                Ok("r2"),
                "worker {k} after {victim} was marked out"
            );
        }
    }
    eprintln!(
        "kill: {victim} marked unhealthy {:.1}s after the kill; {before} requests before ({lost_before} failed), {after} after (0 failed)",
        (marked - killed).as_secs_f64()
    );
    assert!(after > 30, "only {after} requests after the mark");

    // Rollback: every new connection back to blue (r1), alive in its window.
    let r = app.ok(&app.release_args(&["rollback"])).await;
    eprintln!("rollback:\n{}", r.stdout);
    assert_eq!(weights(&app).await, "blue 100%, green 0%");
    for ip in &ips {
        common::assert_serving(*ip, port, "r1", None);
    }

    // r3: a model the server loads but cannot score with, as a 50% canary under
    // /predict load: its 5xx rate rolls it back by itself.
    let bad = unscorable_model(&app).await;
    let server = harness::workspace_bin("server").unwrap();
    app.ok(&common::publish_args("r3", &server, &bad)).await;
    let load = Load::start(&ips, port, 2, true);
    let r = app
        .run(&app.release_args(&["deploy", "--release", "r3", "--canary", "50%"]))
        .await;
    let logs = load.finish();
    assert_ne!(r.code, 0, "{}", r.all());
    let last = r.last_stderr_line();
    eprintln!("canary r3: {last}");
    assert!(
        last.contains("release r3 abandoned on green")
            && last.contains("canary rolled back")
            && last.contains("answered 5xx")
            && last.contains("blue keeps all traffic"),
        "one line that says why: {last}"
    );
    let answers: Vec<&str> = logs
        .iter()
        .flatten()
        .filter_map(|(_, r)| r.as_deref().ok())
        .collect();
    let errors = answers.iter().filter(|s| s.starts_with('5')).count();
    eprintln!("canary load: {} answers, {errors} were 5xx", answers.len());
    assert!(errors > 0, "the canary answered no 5xx: {answers:?}");
    assert_eq!(weights(&app).await, "blue 100%, green 0%");
    let st = app.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    assert!(!st.release.instances.contains_key(&Color::Green), "{st:#?}");
    assert_eq!(st.release.weights_moving, None);
    for ip in &ips {
        common::assert_serving(*ip, port, "r1", None);
        let ok = request(SocketAddr::new(*ip, port), true).unwrap();
        assert_eq!(ok, "200", "r1 scores again through {ip}");
    }

    // A deploy of r2 killed right after ModifyListener: the weights are on green, the
    // state still says blue, with the shift written down as begun. The next run
    // (rollback) settles it from the listener's real weights first: green was live,
    // so rolling back sends everything to blue again.
    let args = app.release_args(&["deploy", "--release", "r2"]);
    let running = app.s.start_until(
        &args,
        &[(
            "DEPLOYER_FAULT",
            "after-modify-listener:aws_lb_listener.api",
        )],
        "fault point after-modify-listener:aws_lb_listener.api reached",
    );
    running.kill9();
    let st = app.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    let moving = st
        .release
        .weights_moving
        .clone()
        .expect("the shift was written first");
    assert_eq!((moving.to, moving.percent), (Color::Green, 100));
    assert_eq!(weights(&app).await, "blue 0%, green 100%");
    std::thread::sleep(Duration::from_secs(4));
    let r = app
        .ok(&app.release_args(&["rollback", "--rollback-window", "1s"]))
        .await;
    assert!(
        r.stderr
            .contains("the last run shifted the listener and stopped before recording it"),
        "{}",
        r.stderr
    );
    let st = app.state().await;
    assert_eq!(st.release.weights_moving, None);
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    assert_eq!(weights(&app).await, "blue 100%, green 0%");
    for ip in &ips {
        common::assert_serving(*ip, port, "r1", None);
    }

    // Its window over, green (r2, at weight 0) is drained out of its group and
    // terminated by retire; blue keeps serving.
    let green = st.release.instances[&Color::Green].ids();
    std::thread::sleep(Duration::from_secs(1));
    let r = app.ok(&["retire"]).await;
    assert!(
        r.stdout.contains(&format!("Terminated {N} instance(s)")),
        "{}",
        r.stdout
    );
    let st = app.state().await;
    assert!(!st.release.instances.contains_key(&Color::Green), "{st:#?}");
    assert_eq!(target_health(&app, Color::Green).await, []);
    for id in &green {
        // The runner stops a terminated instance's unit on its next tick.
        let now = cloud().wait_status(id, Duration::from_secs(20), |s| {
            !matches!(s, InstanceStatus::Serving(_))
        });
        assert!(
            !matches!(now, Some(InstanceStatus::Serving(_))),
            "{id} still serves: {now:?}"
        );
    }
    for ip in &ips {
        common::assert_serving(*ip, port, "r1", None);
    }

    app.ok(&["destroy", "--auto-approve"]).await;
    let left = leftovers(&app.s).await;
    assert!(left.is_empty(), "left after destroy: {left:?}");
}

/// Keep-alive `POST /predict`s on one connection to `addr` until `until`: the number of
/// 200 answers (a failed connection is opened again). On a runtime of its own: it runs
/// on a plain thread.
fn hammer(addr: SocketAddr, until: Instant) -> u64 {
    use tokio::io::AsyncWriteExt as _;
    let body = r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;
    let req = format!(
        "POST /predict HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        addr.ip(),
        body.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ok = 0;
        'conn: while Instant::now() < until {
            let connect = tokio::net::TcpStream::connect(addr);
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            s.set_nodelay(true).unwrap();
            let mut c = tokio::io::BufReader::new(s);
            while Instant::now() < until {
                if c.get_mut().write_all(req.as_bytes()).await.is_err() {
                    continue 'conn;
                }
                let answer = harness::http::read_response(&mut c);
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Ok(status)) => ok += u64::from(status == 200),
                    _ => continue 'conn,
                }
            }
        }
        ok
    })
}

/// Requests per second through both balancer addresses, `conns` keep-alive
/// connections for `secs`.
fn throughput(ips: &[IpAddr], port: u16, conns: usize, secs: f64) -> f64 {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..conns)
        .map(|k| {
            let addr = SocketAddr::new(ips[k % ips.len()], port);
            std::thread::spawn(move || hammer(addr, until))
        })
        .collect();
    let ok: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    ok as f64 / start.elapsed().as_secs_f64()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benchmark `bench/nlb/run.sh` runs (ignored by `cargo test`): three apps on the
/// local cloud with 1, 2 and 3 instances per colour, each deployed behind its own
/// balancer stand-in, then `POST /predict` throughput through each balancer's two
/// addresses, the three measured in turn each round (so load on the machine hits them
/// alike), with each one's ratio to one instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/nlb/run.sh"]
async fn nlb_throughput() {
    let rounds: usize = env_or("NLB_BENCH_ROUNDS", 3usize).max(1);
    let secs: f64 = env_or("NLB_BENCH_SECONDS", 5.0);
    let conns: usize = env_or("NLB_BENCH_CONNECTIONS", 16usize).max(1);
    let mut apps = Vec::new();
    for n in 1..=3i64 {
        let mut cfg = nlb_config(5);
        cfg.retain(|(_, k, _)| *k != "instances_per_color");
        cfg.push(("", "instances_per_color", toml::Value::Integer(n)));
        let app = CloudApp::new(&cfg, &["r1"]).await;
        app.ok(&app.release_args(&["deploy", "--release", "r1"]))
            .await;
        let ips = balancer_ips(&app).await;
        for ip in &ips {
            common::assert_serving(*ip, app.port, "r1", None);
        }
        println!(
            "{n} instance(s) per colour: deployed behind {:?} port {}",
            ips, app.port
        );
        apps.push((n, app, ips));
    }
    println!(
        "POST /predict through both balancer addresses, {conns} keep-alive connections, {secs}s per measurement, {rounds} round(s)"
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); apps.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        let mut base = 0.0;
        for (i, (n, app, ips)) in apps.iter().enumerate() {
            let (ips, port) = (ips.clone(), app.port);
            let rps = tokio::task::spawn_blocking(move || throughput(&ips, port, conns, secs))
                .await
                .unwrap();
            if i == 0 {
                base = rps;
            }
            results[i].push(rps);
            line.push_str(&format!(
                " | {n} instance(s) {rps:.0} req/s ({:.2}x)",
                rps / base.max(1e-9)
            ));
        }
        println!("{line}");
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = median(&results[0]);
    let parts: Vec<String> = apps
        .iter()
        .zip(&results)
        .map(|((n, _, _), r)| {
            let m = median(r);
            format!("{n} instance(s) {m:.0} req/s ({:.2}x)", m / base.max(1e-9))
        })
        .collect();
    println!("median of {rounds}: {}", parts.join(", "));
    println!(
        "(a stand-in on this machine's {} cores: the load generator, the balancer stand-in and every instance share them, so this cannot show real scaling)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    for (_, app, _) in &apps {
        app.ok(&["destroy", "--auto-approve"]).await;
    }
}
