//! The boot script, rendered by the deployer and run in a sandbox directory on this
//! machine against the emulator's S3 with the real server binary: it downloads and
//! verifies the release, installs the unit, and the server it describes answers
//! `/readyz` on loopback. `systemctl` is a stand-in that records its calls; the test
//! starts the unit's `ExecStart` with the unit's environment (listening on loopback).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{path_str, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_boot_script_installs_the_release_and_its_server_answers_on_loopback() {
    let moto = harness::cloud::shared().moto();
    let s = setup(moto);
    let d = s.deployer().await;
    let bucket = s.cfg.artifacts.bucket.clone();
    d.clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    // The model, where the instance's server reads it: s3://<artifacts>/models/.
    let (model, version) = harness::artifact::promoted_dir();
    harness::upload_dir(&d.clients.s3, &bucket, "models", model.path()).await;
    let server = harness::workspace_bin("server").unwrap_or_else(|e| panic!("{e}"));
    let m = deployer::publish::publish(&d.clients, &bucket, "r1", &server, Some(&version))
        .await
        .unwrap();
    let script = d.user_data(&m, Duration::from_secs(300)).await.unwrap();
    // No credentials in user data: only a presigned, expiring URL.
    for (k, v) in moto.env() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            assert!(!script.contains(&v), "the secret key is in user data");
        }
    }
    assert!(script.contains("X-Amz-Expires=300"), "{script}");

    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path().join("root");
    let calls = sandbox.path().join("systemctl.calls");
    let fake = sandbox.path().join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let boot = sandbox.path().join("boot.sh");
    std::fs::write(&boot, &script).unwrap();
    let run = |script: &Path| {
        Command::new("bash")
            .arg(script)
            .env("ROOT", &root)
            .env("SYSTEMCTL", &fake)
            .env("SERVICE_USER", "nobody")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&boot);
    assert!(
        out.status.success(),
        "boot script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = root.join("opt/churn-api/current/server");
    assert_eq!(
        deployer::publish::sha256_hex(&std::fs::read(&installed).unwrap()),
        m.files[0].sha256
    );
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(calls, "daemon-reload\nenable --now churn-api.service\n");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/churn-api.service")).unwrap();
    for want in [
        "User=nobody",
        "Restart=on-failure",
        "Environment=RELEASE=r1",
        "ExecStart=/opt/churn-api/current/server",
        "NoNewPrivileges=true",
    ] {
        assert!(unit.contains(want), "unit lacks {want}:\n{unit}");
    }

    // What systemd would start: ExecStart under the sandbox root, the unit's
    // environment, listening on loopback instead of the instance's 0.0.0.0.
    let port = harness::free_port();
    let mut cmd = Command::new(root.join("opt/churn-api/current/server"));
    for line in unit.lines() {
        if let Some(kv) = line.strip_prefix("Environment=") {
            let (k, v) = kv.split_once('=').unwrap();
            cmd.env(k, v);
        }
    }
    assert!(
        unit.contains(&format!("SERVER_MODEL=s3://{bucket}/models@{version}")),
        "{unit}"
    );
    cmd.env("SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("SERVER_LOG_FORMAT", "text")
        .envs(moto.env());
    let mut server = harness::ServerProcess::spawn(cmd, port).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let ready = loop {
        if harness::http::get(port, "/readyz").is_ok_and(|r| r.status == 200) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) || server.exited().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let version_body = harness::http::get(port, "/version");
    server.stop();
    assert!(ready, "the installed server never became ready");
    let v: serde_json::Value = serde_json::from_str(&version_body.unwrap().body).unwrap();
    assert_eq!(v["release"], "r1");
    assert_eq!(v["model_version"], version.as_str());

    // A binary that does not match the manifest is refused.
    let tampered = sandbox.path().join("tampered.sh");
    std::fs::write(
        &tampered,
        script.replace(&m.files[0].sha256, &"0".repeat(64)),
    )
    .unwrap();
    let out = run(&tampered);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = path_str(&boot);
}
