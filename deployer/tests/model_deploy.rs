//! `deploy --model` on the local cloud (AWS's delays on, instances that boot their user
//! data, an Elastic IP that carries traffic): a model-only release serves the new model
//! through the Elastic IP's own address, reuses the running server object, keeps the
//! previous colour with the previous model for a rollback, and is a no-op run twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::{Setup, path_str, publish_args, setup_with, version_at};

fn cloud() -> &'static harness::cloud::LocalCloud {
    harness::cloud::shared()
}

/// A model artifact (intercept `b`, created `secs` after the fixture's instant) in the
/// artifacts bucket's `models/`; `latest` moved to it when `promote`.
async fn put_model(s: &Setup, b: f64, secs: u64, promote: bool) -> String {
    let root = tempfile::tempdir().unwrap();
    let v = harness::artifact::publish(root.path(), b, secs);
    let s3 = s.clients().await.s3;
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(root.path().join(&v))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            (format!("models/{v}/{name}"), p)
        })
        .collect();
    if promote {
        files.push(("models/latest".into(), root.path().join("latest")));
    }
    for (key, p) in files {
        s3.put_object()
            .bucket(&s.cfg.artifacts.bucket)
            .key(key)
            .body(std::fs::read(&p).unwrap().into())
            .send()
            .await
            .unwrap();
    }
    v
}

/// Waits for the Elastic IP's move to reach traffic.
fn wait_serving(ip: IpAddr, port: u16, want: (&str, &str)) {
    common::assert_serving(ip, port, want.0, Some(want.1));
}

fn release_args<'a>(head: &[&'a str]) -> Vec<&'a str> {
    common::release_args(cloud().address_map_path(), head)
}

async fn blocking(s: &Setup, args: Vec<&str>) -> common::Run {
    let mut c = s.cmd(&args);
    tokio::task::spawn_blocking(move || common::Run::from(c.output().unwrap()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_only_deploy_serves_the_new_model_through_the_elastic_ip_and_keeps_the_old_one_for_rollback()
 {
    let port = harness::free_port();
    let s = setup_with(
        cloud().moto(),
        &[("", "api_port", toml::Value::Integer(port.into()))],
    );
    s.ok(&["init"]);
    // Nothing runs yet: a model deploy has no server to pair the model with.
    let m0 = put_model(&s, 0.1, 0, true).await;
    s.ok(&["apply", "--auto-approve"]);
    let r = blocking(&s, release_args(&["deploy", "--model", "latest"])).await;
    assert_ne!(r.code, 0);
    assert!(
        r.all().contains("no colour holds the Elastic IP"),
        "{}",
        r.all()
    );

    // r1 pins `latest` (m0) at publish time.
    let server = harness::workspace_bin("server").unwrap();
    let out = s.ok(&publish_args("r1", &server, "latest"));
    assert!(
        out.stdout.contains(&format!("(model {m0})")),
        "{}",
        out.all()
    );
    let r = blocking(&s, release_args(&["deploy", "--release", "r1"])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let d = s.deployer().await;
    let st = d.read_state().await.unwrap();
    let (eip, _) =
        deployer::release::eip_holder(&s.clients().await, &st.resources["aws_eip.api"].id)
            .await
            .unwrap();
    let eip: IpAddr = eip.unwrap().parse().unwrap();
    wait_serving(eip, port, ("r1", &m0));

    // A version that is not in the bucket is refused before anything is launched.
    let r = blocking(
        &s,
        release_args(&["deploy", "--model", "20990101T000000Z-00000000"]),
    )
    .await;
    assert!(
        r.all().contains("is not in the artifacts bucket"),
        "{}",
        r.all()
    );

    // m1 promoted; `deploy --model latest` pins it on r1's server.
    let m1 = put_model(&s, -0.4, 60, true).await;
    let r = blocking(&s, release_args(&["deploy", "--model", "latest"])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let release = format!("r1_{m1}");
    wait_serving(eip, port, (&release, &m1));
    let st = d.read_state().await.unwrap();
    let holder = st.release.eip_holder.unwrap();
    assert_eq!(st.release.instances[&holder].release, release);
    assert_eq!(
        st.release.instances[&holder].model_version.as_deref(),
        Some(m1.as_str())
    );
    let old = &st.release.instances[&holder.other()];
    assert_eq!(
        (old.release.as_str(), old.model_version.as_deref()),
        ("r1", Some(m0.as_str()))
    );
    let standin = cloud().standin_of(&old.instance_id).unwrap();
    assert_eq!(
        version_at(IpAddr::V4(standin), port),
        Some(("r1".to_string(), m0.clone()))
    );
    // The manifest names r1's server object, with its sha256.
    let bucket = &s.cfg.artifacts.bucket;
    let base = deployer::publish::read_manifest(&s.clients().await, bucket, "r1")
        .await
        .unwrap();
    let m = deployer::publish::read_manifest(&s.clients().await, bucket, &release)
        .await
        .unwrap();
    assert_eq!(m.files[0].sha256, base.files[0].sha256);
    assert_eq!(m.files[0].key.as_deref(), Some("releases/r1/server"));
    assert_eq!(m.based_on.as_deref(), Some("r1"));
    assert_eq!(m.model_version.as_deref(), Some(m1.as_str()));
    // status: each colour's release and model.
    let status: serde_json::Value = serde_json::from_str(
        &s.ok(&[
            "status",
            "--json",
            "--address-map",
            path_str(cloud().address_map_path()),
        ])
        .stdout,
    )
    .unwrap();
    let colors = status["colors"].as_array().unwrap();
    for (rel, model) in [(release.as_str(), m1.as_str()), ("r1", m0.as_str())] {
        assert!(
            colors.iter().any(|c| c["release"] == rel
                && c["model_version"] == model
                && c["health"] == "healthy"),
            "{status:#}"
        );
    }

    // Run again: nothing new is published and nothing moves.
    let r = blocking(&s, release_args(&["deploy", "--model", &m1])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("nothing to deploy"), "{}", r.all());
    let again = d.read_state().await.unwrap();
    assert_eq!(again.release.eip_holder, Some(holder));
    assert_eq!(
        again.release.instances[&holder].instance_id,
        st.release.instances[&holder].instance_id
    );

    // Rollback: the previous colour, with the previous model, takes the address back.
    let r = blocking(&s, release_args(&["rollback"])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    wait_serving(eip, port, ("r1", &m0));
    s.ok(&["destroy", "--auto-approve"]);
}
