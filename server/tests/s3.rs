//! The model from S3 (the AWS emulator, moto, on loopback): `latest`, a pinned
//! `@VERSION`, a reload after a new upload, and a tampered upload refused.
#![allow(clippy::unwrap_used)]

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// Uploads an artifact under `<prefix>/<version>/`; moves `<prefix>/latest` if asked.
async fn upload(c: &aws_sdk_s3::Client, bucket: &str, a: &model::Artifact, latest: bool) {
    for (name, content) in a.to_files() {
        put(
            c,
            bucket,
            &format!("models/{}/{name}", a.version()),
            content,
        )
        .await;
    }
    if latest {
        put(
            c,
            bucket,
            "models/latest",
            format!("{}\n", a.version()).into_bytes(),
        )
        .await;
    }
}

#[test]
fn model_from_s3_latest_pinned_and_reloaded() {
    let rt = rt();
    let bucket = harness::unique("models");
    let c = rt.block_on(harness::moto().s3_client());
    rt.block_on(c.create_bucket().bucket(&bucket).send())
        .unwrap();
    let a1 = artifact(0.0, 0);
    rt.block_on(upload(&c, &bucket, &a1, true));

    let token = harness::unique("tok");
    let mut env = harness::moto().env();
    env.push(("SERVER_ADMIN_TOKEN", token.clone()));
    let s = Server::start(&format!("s3://{bucket}/models"), &[], &env);
    s.wait_ready(200);
    assert_eq!(s.get("/version").json()["model_version"], a1.version());
    let m = s.get("/model").json();
    assert_eq!(m["source"], format!("s3://{bucket}/models"));
    let r = s.post("/predict", ORIGINAL);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model_version"], a1.version());

    // A new version in S3, then a reload: served.
    let a2 = artifact(0.5, 60);
    rt.block_on(upload(&c, &bucket, &a2, true));
    let auth = format!("Bearer {token}");
    let r = s.reload(&auth);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["previous_version"], a1.version());
    assert_eq!(
        s.post("/predict", ORIGINAL).json()["model_version"],
        a2.version()
    );

    // A tampered third version: refused, a2 keeps serving, the reason names the S3 object.
    let a3 = artifact(0.9, 120);
    rt.block_on(upload(&c, &bucket, &a3, true));
    rt.block_on(put(
        &c,
        &bucket,
        &format!("models/{}/model.json", a3.version()),
        b"{\"family\":\"logistic_regression\",\"weights\":[],\"intercept\":0}".to_vec(),
    ));
    let r = s.reload(&auth);
    assert_eq!(r.status, 409, "{}", r.body);
    let reason = r.json()["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains(&format!("s3://{bucket}/models/{}/model.json", a3.version())),
        "{reason}"
    );
    assert_eq!(
        s.post("/predict", ORIGINAL).json()["model_version"],
        a2.version()
    );

    // Pinned to a1 while latest is a3.
    let pinned = Server::start(
        &format!("s3://{bucket}/models@{}", a1.version()),
        &[],
        &harness::moto().env(),
    );
    pinned.wait_ready(200);
    assert_eq!(pinned.get("/version").json()["model_version"], a1.version());
}

#[test]
fn missing_bucket_is_not_ready_with_the_reason() {
    let bucket = harness::unique("absent");
    let s = Server::start(
        &format!("s3://{bucket}/models"),
        &[],
        &harness::moto().env(),
    );
    s.wait_ready(503);
    // First "loading", then the failure's reason.
    let start = std::time::Instant::now();
    loop {
        let r = s.get("/readyz");
        assert_eq!(r.status, 503);
        let reason = r.json()["reason"].as_str().unwrap().to_string();
        if reason.contains(&format!("s3://{bucket}/models/latest")) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{reason}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
