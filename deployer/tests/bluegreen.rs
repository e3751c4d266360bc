//! Blue/green releases against the emulator, with real `server` processes on loopback
//! standing in for the instances (the emulator's instances do not exist: their 54.x /
//! 10.x addresses are never probed).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Setup, path_str, publish_args, setup};
use deployer::state::Color;

/// The `server` binary, built by cargo next to this test (`harness::workspace_bin`).
fn server_bin() -> PathBuf {
    harness::workspace_bin("server").unwrap_or_else(|e| panic!("{e}"))
}

/// A real server process on a free loopback port, reporting `release`; killed on drop.
fn serve(model: &Path, release: &str) -> harness::ServerProcess {
    harness::ServerProcess::start(
        &server_bin(),
        &["--model", path_str(model), "--release", release],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn release_at(port: u16) -> Option<String> {
    let r = harness::http::get(port, "/version").ok()?;
    if r.status != 200 {
        return None;
    }
    r.json().ok()?["release"].as_str().map(String::from)
}

/// An applied stack, an artifact bucket, published releases, a model.
struct Env {
    s: Setup,
    model: tempfile::TempDir,
    model_version: String,
}

async fn env(releases: &[&str]) -> Env {
    let s = setup(harness::cloud::shared().moto());
    let (model, model_version) = harness::artifact::promoted_dir();
    let s2 = s.clone();
    let server = server_bin();
    let rels: Vec<String> = releases.iter().map(|r| r.to_string()).collect();
    let mv = model_version.clone();
    let clients = s.clients().await;
    clients
        .s3
        .create_bucket()
        .bucket(&s.cfg.artifacts.bucket)
        .send()
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        s2.ok(&["init"]);
        s2.ok(&["apply", "--auto-approve"]);
        for r in &rels {
            s2.ok(&publish_args(r, &server, &mv));
        }
    })
    .await
    .unwrap();
    Env {
        s,
        model,
        model_version,
    }
}

impl Env {
    async fn run(&self, args: Vec<String>) -> common::Run {
        let s = self.s.clone();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            s.run(&a)
        })
        .await
        .unwrap()
    }

    /// `deploy --release <release>` to the `blue` and `green` endpoints ([`deploy_args`]).
    async fn deploy(&self, release: &str, blue: &str, green: &str, extra: &[&str]) -> common::Run {
        self.run(deploy_args(release, blue, green, extra)).await
    }

    /// [`Env::deploy`], insisting on success.
    async fn deploy_ok(
        &self,
        release: &str,
        blue: &str,
        green: &str,
        extra: &[&str],
    ) -> common::Run {
        let r = self.deploy(release, blue, green, extra).await;
        assert_eq!(r.code, 0, "{}", r.all());
        r
    }

    /// A server process of `release` on this env's model ([`serve`]).
    fn serve(&self, release: &str) -> harness::ServerProcess {
        serve(self.model.path(), release)
    }

    async fn state(&self) -> deployer::state::State {
        self.s.deployer().await.read_state().await.unwrap()
    }

    /// The instance DescribeAddresses shows holding the Elastic IP.
    async fn eip_instance(&self) -> Option<String> {
        let st = self.state().await;
        let alloc = &st.resources["aws_eip.api"].id;
        deployer::release::eip_holder(&self.s.clients().await, alloc)
            .await
            .unwrap()
            .1
    }

    async fn live_instances(&self) -> Vec<String> {
        let d = self.s.deployer().await;
        deployer::instances::find_instances(&d.clients, &d.cfg)
            .await
            .unwrap()
            .into_iter()
            .filter(|f| f.state != "terminated" && f.state != "shutting-down")
            .map(|f| f.id)
            .collect()
    }

    /// The Elastic IP's stand-in on loopback: forwards to `blue` or `green` as
    /// `DescribeAddresses` shows the address moving, `delay` after each move.
    async fn forwarder(
        &self,
        blue: &harness::ServerProcess,
        green: &harness::ServerProcess,
        delay: Duration,
    ) -> deployer::forwarder::Forwarder {
        let target =
            |p: &harness::ServerProcess| deployer::health::Target::parse(&p.url(), false).unwrap();
        deployer::forwarder::start(
            self.s.clients().await,
            deployer::forwarder::ForwarderConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                allocation: self.state().await.resources["aws_eip.api"].id.clone(),
                endpoints: [(Color::Blue, target(blue)), (Color::Green, target(green))].into(),
                delay,
                poll: Duration::from_millis(100),
            },
        )
        .await
        .unwrap()
    }

    async fn history(&self) -> Vec<deployer::history::Entry> {
        self.s.deployer().await.history().list().await.unwrap()
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn deploy_args(release: &str, blue: &str, green: &str, extra: &[&str]) -> Vec<String> {
    release_args(&["deploy", "--release", release], blue, green, extra)
}

/// `head` (`deploy --release r1`, `rollback`) to the `blue` and `green` endpoints,
/// probed every 100 ms, for 15 s unless `extra` says otherwise.
fn release_args(head: &[&str], blue: &str, green: &str, extra: &[&str]) -> Vec<String> {
    let mut v = args(head);
    v.extend(args(&[
        "--endpoint",
        &format!("blue={blue}"),
        "--endpoint",
        &format!("green={green}"),
        "--probe-interval",
        "100ms",
    ]));
    if !extra.contains(&"--health-deadline") {
        v.extend(args(&["--health-deadline", "15s"]));
    }
    v.extend(args(extra));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_deploy_moves_the_eip_and_the_old_colour_is_terminated_after_the_window() {
    let e = env(&["r1", "r2"]).await;
    let blue = e.serve("r1");
    let green = e.serve("r2");

    e.deploy_ok(
        "r1",
        &blue.url(),
        &green.url(),
        &["--rollback-window", "1s"],
    )
    .await;
    let st = e.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    let blue_id = st.release.instances[&Color::Blue].instance_id.clone();
    assert_eq!(e.eip_instance().await.as_deref(), Some(blue_id.as_str()));
    assert_eq!(
        st.release.instances[&Color::Blue].model_version.as_deref(),
        Some(e.model_version.as_str())
    );

    let preview = e.run(args(&["plan", "--release", "r2"])).await;
    assert_eq!(preview.code, 0, "{}", preview.all());
    assert!(
        preview.stdout.contains(&format!(
            "~ aws_eip.api: blue ({blue_id}, release r1) -> green"
        )),
        "{}",
        preview.all()
    );
    assert!(preview.stdout.contains("health gate"), "{}", preview.all());

    let t = Instant::now();
    let second = e
        .deploy_ok(
            "r2",
            &blue.url(),
            &green.url(),
            &["--rollback-window", "2s"],
        )
        .await;
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the window was not kept"
    );
    assert!(second.stdout.contains("terminated"), "{}", second.all());
    let st = e.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Green));
    let green_id = st.release.instances[&Color::Green].instance_id.clone();
    assert_eq!(e.eip_instance().await.as_deref(), Some(green_id.as_str()));
    // After the window only the active instance runs.
    assert!(!st.release.instances.contains_key(&Color::Blue), "{st:#?}");
    assert_eq!(e.live_instances().await, vec![green_id]);

    let h = e.history().await;
    let ops: Vec<(&str, bool)> = h.iter().map(|e| (e.operation.as_str(), e.ok())).collect();
    assert_eq!(
        ops,
        vec![
            ("apply", true),
            ("deploy", true),
            ("deploy", true),
            ("retire", true)
        ],
        "{h:#?}"
    );
    let hist = e.run(args(&["history"])).await;
    assert_eq!(hist.code, 0);
    assert!(
        hist.stdout.contains("deploy") && hist.stdout.contains("r2"),
        "{}",
        hist.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_gets_ready_or_reports_the_wrong_version_is_abandoned() {
    let e = env(&["r1", "r2"]).await;
    let blue = e.serve("r1");
    e.deploy_ok("r1", &blue.url(), "http://127.0.0.1:1", &[])
        .await;
    let blue_id = e.state().await.release.instances[&Color::Blue]
        .instance_id
        .clone();

    // Green answers, but with another release than the one deployed.
    let wrong = e.serve("not-r2");
    let r = e
        .deploy(
            "r2",
            &blue.url(),
            &wrong.url(),
            &["--health-deadline", "2s"],
        )
        .await;
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("abandoned") && r.stderr.contains("not-r2"),
        "{}",
        r.all()
    );

    // Green never answers at all (nothing listens there).
    let dead = format!("http://127.0.0.1:{}", harness::free_port());
    let r2 = e
        .deploy("r2", &blue.url(), &dead, &["--health-deadline", "2s"])
        .await;
    assert_ne!(r2.code, 0, "{}", r2.all());
    assert!(
        r2.stderr.contains("abandoned") && r2.stderr.contains("connect"),
        "{}",
        r2.all()
    );

    // The old instance still holds the address; the new ones are gone.
    let st = e.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    assert_eq!(e.eip_instance().await.as_deref(), Some(blue_id.as_str()));
    assert!(!st.release.instances.contains_key(&Color::Green));
    assert_eq!(e.live_instances().await, vec![blue_id]);
    let last = st.release.last.unwrap();
    assert!(last.outcome.to_string().starts_with("failed:"), "{last:?}");

    let h = e.history().await;
    let failed: Vec<_> = h
        .iter()
        .filter(|x| x.operation == "deploy" && !x.ok())
        .collect();
    assert_eq!(failed.len(), 2, "{h:#?}");
    assert!(failed[0].outcome.contains("not-r2"), "{:?}", failed[0]);
    assert!(failed[1].outcome.contains("not healthy"), "{:?}", failed[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_the_fixed_endpoint_to_the_old_release() {
    let e = env(&["r1", "r2"]).await;
    let blue = e.serve("r1");
    let green = e.serve("r2");
    let fwd = e.forwarder(&blue, &green, Duration::from_millis(300)).await;
    let fixed = format!("http://{}", fwd.addr);
    let extra = [
        "--no-wait",
        "--rollback-window",
        "10m",
        "--fixed-endpoint",
        fixed.as_str(),
    ];
    for r in ["r1", "r2"] {
        e.deploy_ok(r, &blue.url(), &green.url(), &extra).await;
    }
    let port = fwd.addr.port();
    assert_eq!(release_at(port).as_deref(), Some("r2"));

    let rb = release_args(
        &["rollback"],
        &blue.url(),
        &green.url(),
        &[
            "--health-deadline",
            "15s",
            "--no-wait",
            "--fixed-endpoint",
            &fixed,
        ],
    );
    let r = e.run(rb).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // Verified through the fixed address before returning.
    assert_eq!(release_at(port).as_deref(), Some("r1"));
    let st = e.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    assert_eq!(
        e.eip_instance().await.as_deref(),
        Some(st.release.instances[&Color::Blue].instance_id.as_str())
    );
    assert!(st.release.instances[&Color::Green].retire_after.is_some());

    let status = e
        .run(args(&[
            "status",
            "--json",
            "--endpoint",
            &format!("blue={}", blue.url()),
            "--endpoint",
            &format!("green={}", green.url()),
        ]))
        .await;
    assert_eq!(status.code, 0, "{}", status.all());
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["active"], "blue");
    assert_eq!(v["eip_color"], "blue");
    assert_eq!(v["colors"][0]["health"], "healthy", "{v:#}");
    assert_eq!(v["colors"][0]["model_version"], e.model_version.as_str());
    let h = e.history().await;
    assert_eq!(
        h.last().map(|x| (x.operation.as_str(), x.ok())),
        Some(("rollback", true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_to_anything_but_loopback_are_refused() {
    let e = env(&["r1"]).await;
    // No endpoint override and no production flag: refused before anything launches.
    let r = e.run(args(&["deploy", "--release", "r1"])).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("refusing to probe"), "{}", r.all());
    // An override naming an emulator-style public or private address: refused.
    // (Built at run time: the repository names no address but loopback.)
    let public = std::net::Ipv4Addr::new(54, 210, 1, 2);
    let private = std::net::Ipv4Addr::new(10, 42, 1, 7);
    for bad in [
        format!("blue=http://{public}:8080"),
        format!("blue=http://{private}:8080"),
    ] {
        let bad = bad.as_str();
        let r = e
            .run(args(&["deploy", "--release", "r1", "--endpoint", bad]))
            .await;
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("refusing to probe"), "{}", r.all());
    }
    assert!(
        e.live_instances().await.is_empty(),
        "an instance was launched"
    );
    // status never probes the invented addresses either.
    let blue = e.serve("r1");
    e.deploy_ok("r1", &blue.url(), "http://127.0.0.1:1", &[])
        .await;
    let st = e.run(args(&["status"])).await;
    assert_eq!(st.code, 0, "{}", st.all());
    assert!(st.stdout.contains("not probed"), "{}", st.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_the_forwarder_sees_no_failure_and_one_version_switch() {
    let e = env(&["r1", "r2"]).await;
    let blue = e.serve("r1");
    let mut green = e.serve("r2");
    e.deploy_ok("r1", &blue.url(), &green.url(), &[]).await;
    // Green's process stands in for an instance that does not exist yet: restart it
    // fresh so nothing but the forwarder's switch can route to it.
    green.stop();
    let green = e.serve("r2");
    let delay = Duration::from_millis(1500);
    let fwd = e.forwarder(&blue, &green, delay).await;
    let port = fwd.addr.port();

    // A bounded load generator: 2 threads, one request per connection, at most 20k.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<(Instant, Option<String>)>::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = release_at(port);
                    seen.lock().unwrap().push((Instant::now(), r));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fixed = format!("http://{}", fwd.addr);
    e.deploy_ok(
        "r2",
        &blue.url(),
        &green.url(),
        &["--rollback-window", "2s", "--fixed-endpoint", &fixed],
    )
    .await;
    // The old instance is terminated after the window: its process goes too.
    drop(blue);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|s| s.0);
    let failed = seen.iter().filter(|s| s.1.is_none()).count();
    let mut versions: Vec<&str> = seen.iter().filter_map(|s| s.1.as_deref()).collect();
    let total = seen.len();
    versions.dedup();
    eprintln!(
        "load through the forwarder: {total} requests, {failed} failed, versions {versions:?}, switches {}",
        fwd.switches()
    );
    assert!(total > 100, "too little load: {total}");
    assert_eq!(failed, 0);
    assert_eq!(
        versions,
        vec!["r1", "r2"],
        "the version must switch exactly once"
    );
    assert_eq!(fwd.switches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_redeploys_the_previous_release_when_its_instance_is_gone() {
    let e = env(&["r1", "r2"]).await;
    let blue = e.serve("r1");
    let green = e.serve("r2");
    for r in ["r1", "r2"] {
        e.deploy_ok(
            r,
            &blue.url(),
            &green.url(),
            &["--no-wait", "--rollback-window", "10m"],
        )
        .await;
    }
    // The previous colour's instance dies during its window.
    let st = e.state().await;
    let old_blue = st.release.instances[&Color::Blue].instance_id.clone();
    let c = e.s.clients().await;
    deployer::instances::terminate(&c, &old_blue, Duration::from_secs(30))
        .await
        .unwrap();

    let rb = release_args(
        &["rollback"],
        &blue.url(),
        &green.url(),
        &["--health-deadline", "15s", "--no-wait"],
    );
    let r = e.run(rb).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let st = e.state().await;
    assert_eq!(st.release.eip_holder, Some(Color::Blue));
    let new_blue = &st.release.instances[&Color::Blue];
    assert_eq!(new_blue.release, "r1");
    assert_ne!(
        new_blue.instance_id, old_blue,
        "a new instance was launched"
    );
    assert_eq!(
        e.eip_instance().await.as_deref(),
        Some(new_blue.instance_id.as_str())
    );
    let h = e.history().await;
    assert!(
        h.iter()
            .any(|x| x.operation == "rollback" && x.what["how"] == "redeploy"),
        "{h:#?}"
    );
}
