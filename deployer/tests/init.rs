//! `deployer init` on a fresh account creates everything the later commands need: a
//! `publish` right after it succeeds (it failed with NoSuchBucket when nothing created
//! the artifacts bucket), and both buckets are private and encrypted by default.

mod common;

use common::setup;

#[tokio::test]
async fn init_creates_the_artifacts_bucket_so_a_fresh_account_can_publish() {
    // A private emulator: a fresh account with no bucket at all (AWS's delays on).
    let moto: &'static harness::Moto = Box::leak(Box::new(
        harness::Moto::start_aws_like(&harness::cloud::AwsBehaviour::aws_like())
            .expect("a private moto_server"),
    ));
    let s = setup(moto);
    let d = s.deployer().await;
    let s3 = &d.clients.s3;
    let artifacts = d.cfg.artifacts.bucket.clone();
    assert!(
        s3.head_bucket().bucket(&artifacts).send().await.is_err(),
        "the account starts without the artifacts bucket"
    );

    let out = s.ok(&["init"]);
    assert!(
        out.stdout
            .contains(&format!("artifacts bucket s3://{artifacts} created")),
        "{}",
        out.all()
    );
    // The library call after the command finds both there and enforces their settings.
    let first = d.init().await.expect("init");
    assert!(
        !first.bucket_created && !first.artifacts_bucket_created,
        "the command created them: {first:?}"
    );
    for bucket in [&d.cfg.state.bucket, &artifacts] {
        let pab = s3
            .get_public_access_block()
            .bucket(bucket)
            .send()
            .await
            .expect("GetPublicAccessBlock");
        let c = pab
            .public_access_block_configuration()
            .expect("a configuration");
        assert_eq!(
            (
                c.block_public_acls(),
                c.ignore_public_acls(),
                c.block_public_policy(),
                c.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true)),
            "{bucket}"
        );
        let enc = s3
            .get_bucket_encryption()
            .bucket(bucket)
            .send()
            .await
            .expect("GetBucketEncryption");
        let rules = enc
            .server_side_encryption_configuration()
            .map(|c| c.rules().len())
            .unwrap_or(0);
        assert_eq!(rules, 1, "{bucket} has default encryption");
    }

    // Idempotent: a third run creates nothing and still succeeds.
    let second = d.init().await.expect("third init");
    assert!(
        !second.bucket_created && !second.artifacts_bucket_created && !second.table_created,
        "{second:?}"
    );

    // The command a new user runs next works on its first try. (Any Linux executable
    // of this machine will do as the "server": the deployer itself.)
    let out = s.ok(&[
        "publish",
        "--release",
        "r1",
        "--server-binary",
        env!("CARGO_BIN_EXE_deployer"),
    ]);
    assert!(out.all().contains("r1"), "{}", out.all());
    let m = deployer::publish::read_manifest(&d.clients, &artifacts, "r1")
        .await
        .expect("manifest");
    let target = m.target.expect("the manifest records the binary's target");
    assert_eq!(
        target.arch.as_str(),
        if cfg!(target_arch = "x86_64") {
            "x86_64"
        } else {
            "arm64"
        }
    );

    // A script is not a server binary: refused with one line naming it, nothing written.
    let script = s.dir.join("server.sh");
    std::fs::write(&script, b"#!/bin/sh\necho not really a server\n").expect("write");
    let bad = s.run(&[
        "publish",
        "--release",
        "r2",
        "--server-binary",
        script.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(
        bad.stderr.contains("server.sh") && bad.stderr.contains("not an ELF executable"),
        "{}",
        bad.all()
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&artifacts)
        .prefix("releases/r2/")
        .send()
        .await
        .expect("ListObjectsV2");
    assert_eq!(listed.key_count(), Some(0), "nothing of r2 was uploaded");
}
