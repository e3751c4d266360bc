//! Releases on the local cloud with AWS's delays on (`harness::cloud`): new instance ids
//! and security groups briefly unknown, `DescribeAddresses` lagging `AssociateAddress`,
//! a new instance profile refused for a few seconds, terminated instances' interfaces
//! blocking deletes, and Elastic IP traffic following a move after its propagation
//! delay. The instances really boot their user data (the real `boot.sh` downloads the
//! published `server` and the runner starts its unit on a loopback stand-in); the
//! deployer probes them by their own public address through the cloud's address map,
//! and verifies through the Elastic IP's own (loopback) address. No server is started
//! by hand and no `--endpoint` override is given.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::cloud::LocalCloud;

fn cloud() -> &'static LocalCloud {
    harness::cloud::shared()
}

use common::app::{CloudApp as App, leftovers};

/// The release `/version` reports at `ip:port`, `None` when the request fails.
fn release_at(ip: IpAddr, port: u16) -> Option<String> {
    common::version_at(ip, port).map(|(release, _)| release)
}

/// Waits until the Elastic IP's address serves `release` (the move propagates).
fn wait_serving(ip: IpAddr, port: u16, release: &str) {
    common::assert_serving(ip, port, release, None);
}

/// Requests through the Elastic IP's own address, one connection each, until stopped:
/// the releases seen in order, and the failures.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(Vec<String>, Vec<String>)>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(ip: IpAddr, port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let r = release_at(ip, port);
                let mut g = sn.lock().unwrap();
                match r {
                    Some(rel) => g.0.push(rel),
                    None => {
                        let n = g.0.len() + g.1.len();
                        g.1.push(format!("request {n} failed"));
                    }
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Load { stop, seen, thread }
    }

    /// Stops; returns (requests, failures, the releases in the order they first
    /// appeared, counting each change).
    fn finish(self) -> (usize, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        let (ok, failed) = std::mem::take(&mut *self.seen.lock().unwrap());
        let mut runs: Vec<String> = Vec::new();
        for r in &ok {
            if runs.last() != Some(r) {
                runs.push(r.clone());
            }
        }
        (ok.len() + failed.len(), failed, runs)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_boot_from_user_data_and_move_behind_the_elastic_ip_on_the_first_try() {
    let app = App::new(&[], &["r1", "r2"]).await;
    let port = app.port;

    // r1: the instance is briefly unknown after RunInstances, it boots from its user
    // data, the gate probes its public address through the map, the move is confirmed
    // through a lagging DescribeAddresses, then verified through the Elastic IP.
    let r = app
        .run_env(&app.release_args(&["deploy", "--release", "r1"]), &[])
        .await;
    let st = app.state().await;
    assert_eq!(r.code, 0, "deploy r1:\n{}\n{}", r.all(), app.logs().await);
    let blue = st.release.instances[&deployer::state::Color::Blue].clone();
    assert!(
        matches!(
            cloud().status(&blue.instance_id),
            Some(harness::cloud::InstanceStatus::Serving(_))
        ),
        "r1's instance serves from its own boot: {:?}",
        cloud().status(&blue.instance_id)
    );
    let (eip, holder) = app.eip().await;
    assert_eq!(holder.as_deref(), Some(blue.instance_id.as_str()));
    assert_eq!(st.release.eip_moving, None, "the move is settled");
    wait_serving(eip, port, "r1");

    // r2 under load through the Elastic IP's own address: no request fails and the
    // answers switch from r1 to r2 exactly once.
    let load = Load::start(eip, port);
    std::thread::sleep(Duration::from_millis(500));
    let r = app
        .run_env(&app.release_args(&["deploy", "--release", "r2"]), &[])
        .await;
    assert_eq!(r.code, 0, "deploy r2:\n{}\n{}", r.all(), app.logs().await);
    wait_serving(eip, port, "r2");
    std::thread::sleep(Duration::from_secs(1));
    let (requests, failed, runs) = load.finish();
    assert!(requests > 20, "only {requests} requests");
    assert!(
        failed.is_empty(),
        "{} of {requests} failed: {failed:?}",
        failed.len()
    );
    assert_eq!(runs, ["r1", "r2"], "exactly one switch");

    // Rollback: back to r1's instance, still alive in its window.
    let r = app.ok(&app.release_args(&["rollback"])).await;
    let (_, holder) = app.eip().await;
    assert_eq!(
        holder.as_deref(),
        Some(blue.instance_id.as_str()),
        "rollback:\n{}",
        r.all()
    );
    wait_serving(eip, port, "r1");

    // Destroy on its first run, although terminated instances' interfaces and mapped
    // addresses block deletes for a while; nothing of the app is left.
    app.ok(&["destroy", "--auto-approve"]).await;
    let left = leftovers(&app.s).await;
    assert!(left.is_empty(), "left after destroy: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_public_address_fails_at_the_gate_and_the_address_stays() {
    let app = App::new(&[], &["r1", "r2"]).await;
    app.ok(&app.release_args(&["deploy", "--release", "r1"]))
        .await;
    let (eip, holder) = app.eip().await;
    let r1_instance = holder.expect("r1 holds the address");
    wait_serving(eip, app.port, "r1");

    let r = app
        .run_env(
            &app.release_args(&["deploy", "--release", "r2"]),
            &[("DEPLOYER_FAULT", "launch-without-public-address")],
        )
        .await;
    assert_ne!(r.code, 0, "{}", r.all());
    let last = r.last_stderr_line();
    assert!(
        last.contains("release r2 abandoned on green")
            && last.contains("has no public address")
            && last.contains(&format!("{r1_instance} (r1) keeps the Elastic IP")),
        "one line that says why: {last}"
    );
    let (_, holder) = app.eip().await;
    assert_eq!(
        holder.as_deref(),
        Some(r1_instance.as_str()),
        "the address never moved"
    );
    let st = app.state().await;
    assert_eq!(st.release.eip_moving, None);
    assert!(
        !st.release
            .instances
            .contains_key(&deployer::state::Color::Green)
    );
    assert_eq!(release_at(eip, app.port).as_deref(), Some("r1"));
    app.ok(&["destroy", "--auto-approve"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_cut_short_is_settled_by_the_next_run_and_the_live_colour_survives() {
    let app = App::new(&[], &["r1", "r2", "r3"]).await;
    app.ok(&app.release_args(&["deploy", "--release", "r1"]))
        .await;
    let blue = app.state().await.release.instances[&deployer::state::Color::Blue]
        .instance_id
        .clone();

    // The deploy of r2 dies right after AssociateAddress: the address is on green, the
    // state still names blue as its holder, with the move written down as begun.
    let args = app.release_args(&["deploy", "--release", "r2"]);
    let running = app.s.start_until(
        &args,
        &[("DEPLOYER_FAULT", "after-associate:aws_eip.api")],
        "fault point after-associate:aws_eip.api reached",
    );
    running.kill9();
    let st = app.state().await;
    let green = st.release.instances[&deployer::state::Color::Green]
        .instance_id
        .clone();
    assert_eq!(st.release.eip_holder, Some(deployer::state::Color::Blue));
    let moving = st
        .release
        .eip_moving
        .clone()
        .expect("the move was written first");
    assert_eq!(moving.instance_id, green);

    // The next deploy (once the dead run's lease is over) settles the move from where
    // the address really is, so it replaces blue, not green, which holds the address.
    std::thread::sleep(Duration::from_secs(4));
    let r = app
        .run_env(&app.release_args(&["deploy", "--release", "r3"]), &[])
        .await;
    let st = app.state().await;
    assert_eq!(r.code, 0, "deploy r3:\n{}\n{}", r.all(), app.logs().await);
    assert!(
        r.stderr
            .contains("the last run moved the Elastic IP and stopped before recording it"),
        "{}",
        r.stderr
    );
    assert_eq!(st.release.eip_moving, None);
    assert_eq!(st.release.eip_holder, Some(deployer::state::Color::Blue));
    assert_eq!(
        st.release.instances[&deployer::state::Color::Blue].release,
        "r3"
    );
    assert_ne!(
        st.release.instances[&deployer::state::Color::Blue].instance_id,
        blue
    );
    assert_eq!(
        st.release.instances[&deployer::state::Color::Green].instance_id,
        green,
        "green, which held the address, was kept for the rollback window"
    );
    let (eip, _) = app.eip().await;
    wait_serving(eip, app.port, "r3");
    app.ok(&["destroy", "--auto-approve"]).await;
}
