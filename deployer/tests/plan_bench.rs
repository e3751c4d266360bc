//! The plan benchmark, run by `bench/plan/run.sh` (ignored by `cargo test`): a no-op
//! plan of the whole stack against a private emulator, the batched refresh
//! (`Deployer::plan`) beside the per-resource one (`plan::refresh_per_resource`, every
//! read its own call, one after the other) in the same run, each with the state read
//! and the lock. Prints the requests by type (counted by the emulator's recorder) and
//! the wall times.
//!
//! `LOCAL_CLOUD_LATENCY_MS` delays every emulator request (AWS answers in 50-300 ms;
//! moto on loopback in about a millisecond); `PLAN_BENCH_ROUNDS` (5) timed rounds.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deployer::plan::{self, Operation};
use deployer::{Deployer, LockOptions};
use harness::cloud::AwsBehaviour;

/// The per-resource refresh, with the same state read and lock as `Deployer::plan`.
async fn per_resource_plan(d: &Deployer) -> plan::Plan {
    let guard = d
        .locker()
        .acquire("plan", Duration::ZERO)
        .await
        .expect("lock");
    let state = d.read_state().await.expect("state");
    let observed = plan::refresh_per_resource(&d.stack(), &state)
        .await
        .expect("refresh");
    let p = plan::diff(&d.cfg, &state, &observed);
    guard.release().await.expect("release");
    p
}

async fn batched_plan(d: &Deployer) -> plan::Plan {
    d.plan(Operation::Apply, LockOptions::default())
        .await
        .expect("plan")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/plan/run.sh"]
async fn noop_plan() {
    let rounds: usize = std::env::var("PLAN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let latency = std::env::var("LOCAL_CLOUD_LATENCY_MS").unwrap_or_else(|_| "0".into());
    // Through the wrapper (which adds the latency), AWS's delays off.
    let moto: &'static harness::Moto = Box::leak(Box::new(
        harness::Moto::start_aws_like(&AwsBehaviour::off()).expect("starting the emulator"),
    ));
    // The default lease (30 s): renewed every 10 s, so never within one plan here.
    let s = common::setup_with(moto, &[("lock", "lease_seconds", 30.into())]);
    s.ok(&["init"]);
    s.apply_whole_stack();
    let d = s.deployer().await;

    // One recorded plan of each, for the counts.
    moto.start_recording().expect("recorder");
    let p = per_resource_plan(&d).await;
    let before = moto.stop_recording().expect("recording");
    assert!(!p.has_changes(), "not a no-op plan");
    moto.start_recording().expect("recorder");
    let p = batched_plan(&d).await;
    let after = moto.stop_recording().expect("recording");
    assert!(!p.has_changes(), "not a no-op plan");
    let count = |reqs: &[harness::Recorded]| {
        let mut by = BTreeMap::<String, usize>::new();
        for r in reqs {
            *by.entry(r.to_string()).or_default() += 1;
        }
        by
    };
    let (b, a) = (count(&before), count(&after));
    println!(
        "\nno-op plan of the whole stack (13 resources), emulator latency {latency} ms per request, {rounds} rounds"
    );
    println!(
        "{:<32} {:>12} {:>8}",
        "requests by type", "per-resource", "batched"
    );
    let types: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    for t in types {
        println!(
            "  {t:<30} {:>12} {:>8}",
            b.get(t).copied().unwrap_or(0),
            a.get(t).copied().unwrap_or(0)
        );
    }
    println!(
        "requests: per-resource {}, batched {} (latency {latency} ms)",
        before.len(),
        after.len()
    );

    // Timed rounds, alternating, without the recorder.
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let t = Instant::now();
        per_resource_plan(&d).await;
        old.push(t.elapsed());
        let t = Instant::now();
        batched_plan(&d).await;
        new.push(t.elapsed());
        println!(
            "round {round}: per-resource {:.3}s | batched {:.3}s | ratio {:.2}x",
            old[round - 1].as_secs_f64(),
            new[round - 1].as_secs_f64(),
            new[round - 1].as_secs_f64() / old[round - 1].as_secs_f64()
        );
    }
    let (o, n) = (median(old), median(new));
    println!(
        "median of {rounds} (latency {latency} ms): per-resource {:.3}s, batched {:.3}s: {:.2}x the per-resource refresh's time, {} requests instead of {}",
        o.as_secs_f64(),
        n.as_secs_f64(),
        n.as_secs_f64() / o.as_secs_f64(),
        after.len(),
        before.len()
    );
}
