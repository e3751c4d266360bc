//! The boot script, rendered by the deployer and run in a sandbox directory on this
//! machine against the emulator's S3 with the real server binary: it downloads and
//! verifies the release, installs the unit, and the server it describes answers
//! `/readyz` on loopback. `systemctl` is a stand-in that records its calls; the test
//! starts the unit's `ExecStart` with the unit's environment (listening on loopback).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{path_str, setup};
use model::classifier::{Classifier, Logistic};
use model::{Artifact, ArtifactSpec, FeatureEncoding, Features, Model};

fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("server");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "server", "--bin", "server"])
            .current_dir(harness::repo_root())
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

fn artifact_dir() -> (tempfile::TempDir, String) {
    let train: Vec<Features> = (0..20)
        .map(|k| Features {
            attr_a: k % 3,
            attr_b: ["a", "b", "c", "d"][(k % 4) as usize].into(),
            scd_a: 0.05 * k as f64,
            scd_b: k % 5 + 1,
        })
        .collect();
    let enc = FeatureEncoding::fit(&train).unwrap();
    let w = enc.width();
    let m = Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: vec![0.1; w],
            intercept: 0.0,
        }),
        0.5,
    )
    .unwrap();
    let a = Artifact::new(ArtifactSpec {
        model: m,
        code_version: "userdata-test".into(),
        training_data: "sha256:00".into(),
        metrics: serde_json::Map::new(),
        extra_files: Default::default(),
        created: UNIX_EPOCH + Duration::from_secs(1_795_539_600),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    model::artifact::promote(dir.path(), a.version()).unwrap();
    (dir, a.version().to_string())
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_boot_script_installs_the_release_and_its_server_answers_on_loopback() {
    let moto = harness::moto();
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
    let (model, version) = artifact_dir();
    for f in files_under(model.path()) {
        let rel = f
            .strip_prefix(model.path())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        d.clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(format!("models/{rel}"))
            .body(std::fs::read(&f).unwrap().into())
            .send()
            .await
            .unwrap();
    }
    let server = server_bin();
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
        .envs(moto.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let ready = loop {
        if let Some((200, _)) = get(port, "/readyz") {
            break true;
        }
        if start.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let version_body = get(port, "/version");
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the installed server never became ready");
    let v: serde_json::Value = serde_json::from_str(&version_body.unwrap().1).unwrap();
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
