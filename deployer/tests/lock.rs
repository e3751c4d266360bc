//! The state lock: DynamoDB and S3 backends, leases, force-unlock, two concurrent
//! applies, and a holder killed with SIGKILL.

mod common;

use std::time::{Duration, Instant};

use common::{assert_state_matches_emulator, setup, setup_with};
use deployer::config::LockBackend;
use deployer::lock::{LockError, Locker};

fn s3_backend() -> Vec<(&'static str, &'static str, toml::Value)> {
    vec![("lock", "backend", toml::Value::String("s3".into()))]
}

async fn lock_semantics(backend: LockBackend) {
    let extra = if backend == LockBackend::S3 {
        s3_backend()
    } else {
        vec![]
    };
    let s = setup_with(harness::cloud::shared().moto(), &extra);
    let d = s.deployer().await;
    d.init().await.expect("init");
    let locker = Locker::new(&d.clients, &d.cfg);

    let held = locker
        .acquire("apply", Duration::ZERO)
        .await
        .expect("first acquire");
    // A second one fails at once, naming the holder.
    let t = Instant::now();
    let err = locker
        .acquire("plan", Duration::ZERO)
        .await
        .expect_err("second acquire");
    assert!(t.elapsed() < Duration::from_secs(2), "fails at once");
    match &err {
        LockError::Held(info) => {
            assert_eq!(info.id, held.info().id);
            assert_eq!(info.operation, "apply");
            assert_eq!(
                info.path,
                format!("{}/{}", d.cfg.state.bucket, d.cfg.state.key)
            );
        }
        other => panic!("expected Held, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&held.info().id) && msg.contains("held by") && msg.contains("`apply`"),
        "{msg}"
    );

    // The lease is renewed while the holder lives: after 2 leases it is still held.
    tokio::time::sleep(Duration::from_secs(2 * d.cfg.lock.lease_seconds)).await;
    held.check().expect("still ours");
    assert!(matches!(
        locker.acquire("plan", Duration::ZERO).await,
        Err(LockError::Held(_))
    ));

    // force-unlock removes only a lock with that id.
    let wrong = locker
        .force_unlock("not-the-id")
        .await
        .expect_err("wrong id");
    assert!(matches!(wrong, LockError::NoSuchLock { .. }), "{wrong}");
    assert_eq!(
        locker.current().await.expect("read").map(|i| i.id),
        Some(held.info().id.clone())
    );
    locker
        .force_unlock(&held.info().id)
        .await
        .expect("right id");
    assert_eq!(locker.current().await.expect("read"), None);

    // The former holder learns that it lost the lock at its next renewal.
    let other = locker
        .acquire("apply", Duration::ZERO)
        .await
        .expect("free again");
    tokio::time::sleep(Duration::from_secs(d.cfg.lock.lease_seconds)).await;
    assert!(matches!(held.check(), Err(LockError::Lost { .. })));
    // Releasing a lost lock leaves the new holder's lock alone.
    held.release()
        .await
        .expect("release of a lost lock is harmless");
    assert_eq!(
        locker.current().await.expect("read").map(|i| i.id),
        Some(other.info().id.clone())
    );

    // A holder that stops renewing (dies) loses the lock when its lease runs out.
    drop(other); // stops the renewal without deleting, as a SIGKILL would
    assert!(matches!(
        locker.acquire("plan", Duration::ZERO).await,
        Err(LockError::Held(_))
    ));
    let t = Instant::now();
    let next = locker
        .acquire("plan", Duration::from_secs(3 * d.cfg.lock.lease_seconds))
        .await
        .expect("acquired after the lease ran out");
    assert!(
        t.elapsed() <= Duration::from_secs(d.cfg.lock.lease_seconds + 2),
        "{:?}",
        t.elapsed()
    );
    next.release().await.expect("release");
    assert_eq!(locker.current().await.expect("read"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_lock_is_exclusive_renewed_expires_and_force_unlocks_by_id() {
    lock_semantics(LockBackend::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_lock_is_exclusive_renewed_expires_and_force_unlocks_by_id() {
    lock_semantics(LockBackend::S3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_contenders_one_winner() {
    for extra in [vec![], s3_backend()] {
        let s = setup_with(harness::cloud::shared().moto(), &extra);
        let d = s.deployer().await;
        d.init().await.expect("init");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let locker = Locker::new(&d.clients, &d.cfg);
            tasks.push(tokio::spawn(async move {
                locker.acquire("apply", Duration::ZERO).await
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            if let Ok(g) = t.await.expect("task") {
                won.push(g);
            }
        }
        assert_eq!(
            won.len(),
            1,
            "exactly one winner ({:?})",
            d.cfg.lock.backend
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_applies_started_together_one_runs_the_other_names_the_holder() {
    two_applies(vec![]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_applies_started_together_with_s3_locking() {
    two_applies(s3_backend()).await;
}

async fn two_applies(extra: Vec<(&str, &str, toml::Value)>) {
    let s = setup_with(harness::cloud::shared().moto(), &extra);
    s.ok(&["init"]);
    let spawn = || {
        s.cmd(&["apply", "--auto-approve"])
            .env("DEPLOYER_STEP_DELAY_MS", "200")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let runs: Vec<common::Run> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait").into())
        .collect();
    let ok: Vec<&common::Run> = runs.iter().filter(|r| r.code == 0).collect();
    let failed: Vec<&common::Run> = runs.iter().filter(|r| r.code != 0).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one runs:\n{}\n{}",
        runs[0].all(),
        runs[1].all()
    );
    assert_eq!(failed.len(), 1);
    assert!(
        ok[0].stdout.contains("Apply complete! Resources: 13 added"),
        "{}",
        ok[0].all()
    );
    let err = &failed[0].stderr;
    assert_eq!(failed[0].code, 1);
    assert!(
        err.contains("the state is locked") && err.contains("held by") && err.contains("`apply`"),
        "{err}"
    );
    assert!(err.contains("force-unlock"), "{err}");
    assert_state_matches_emulator(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn holder_killed_with_sigkill_loses_the_lock_when_its_lease_runs_out() {
    let s = setup(harness::cloud::shared().moto());
    s.ok(&["init"]);
    let holder = s.start_until(
        &["apply", "--auto-approve"],
        &[("DEPLOYER_FAULT", "after-record:aws_subnet.main")],
        "fault point",
    );
    let locker = Locker::new(&s.clients().await, &s.cfg);
    let info = locker.current().await.expect("read").expect("locked");
    holder.kill9();
    let killed_at = Instant::now();

    // At once: refused, naming the dead holder.
    let r = s.run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&info.id) && r.stderr.contains(&info.who),
        "{}",
        r.stderr
    );

    // Waiting: it gets the lock once the lease (3 s) runs out, and converges.
    let r = s.run(&["apply", "--auto-approve", "--lock-timeout", "30s"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let waited = killed_at.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    assert!(
        r.stdout.contains("11 added"),
        "VPC and subnet were already there:\n{}",
        r.all()
    );
    assert_state_matches_emulator(&s).await;
    assert_eq!(
        locker.current().await.expect("read"),
        None,
        "released at the end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_from_the_cli_removes_only_that_id() {
    let s = setup_with(
        harness::cloud::shared().moto(),
        &[("lock", "lease_seconds", toml::Value::Integer(600))],
    );
    s.ok(&["init"]);
    let holder = s.start_until(
        &["apply", "--auto-approve"],
        &[("DEPLOYER_FAULT", "before-create:aws_vpc.main")],
        "fault point",
    );
    holder.kill9();
    let info = s.ok(&["lock-info"]);
    let locker = Locker::new(&s.clients().await, &s.cfg);
    let id = locker.current().await.expect("read").expect("locked").id;
    assert!(info.stdout.contains(&id), "{}", info.stdout);

    let wrong = s.run(&["force-unlock", "0000"]);
    assert_eq!(wrong.code, 1, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("no lock with id 0000"),
        "{}",
        wrong.stderr
    );
    assert!(locker.current().await.expect("read").is_some());

    s.ok(&["force-unlock", &id]);
    assert_eq!(locker.current().await.expect("read"), None);
    let r = s.ok(&["apply", "--auto-approve"]);
    assert!(r.stdout.contains("13 added"), "{}", r.all());
}
