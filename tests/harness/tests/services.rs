//! The harness's services start, are isolated, and are gone once their process dies.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[test]
fn postgres_databases_are_isolated_and_loopback_only() {
    let pg = harness::postgres();
    let a = pg.database();
    let b = pg.database();
    a.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .expect("write in a");
    assert_eq!(a.psql("SELECT count(*) FROM t").expect("read a"), "1");
    let err = b
        .psql("SELECT count(*) FROM t")
        .expect_err("b must not see a's table");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(a.psql("SHOW listen_addresses").expect("show"), "127.0.0.1");
    // Password authentication is on: a wrong password is refused.
    let out = Command::new(harness::pg_bin().expect("pg bin").join("psql"))
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", a.name(), "-c", "SELECT 1"])
        .env("PGPASSWORD", "wrong")
        .output()
        .expect("psql");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = a.name().to_string();
    drop(a);
    let left = pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        )
        .expect("count");
    assert_eq!(left, "0", "a dropped TestDb removes its database");
}

#[tokio::test]
async fn moto_serves_s3_and_validates_amis() {
    let moto = harness::moto();
    let s3 = moto.s3_client().await;
    let bucket = harness::unique("harness");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect("put");
    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .expect("get");
    let body = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"hello");

    let ec2 = moto.ec2_client().await;
    let images = ec2
        .describe_images()
        .owners("099720109477")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*")
                .build(),
        )
        .send()
        .await
        .expect("describe images");
    let names: Vec<&str> = images.images().iter().filter_map(|i| i.name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // AMI validation is on: an unknown image is refused, as on AWS.
    let err = ec2
        .run_instances()
        .image_id("ami-00000000000000000")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect_err("unknown AMI must fail");
    let code = aws_sdk_ec2::error::ProvideErrorMetadata::code(&err)
        .unwrap_or_default()
        .to_string();
    assert!(code.contains("InvalidAMIID"), "{code}: {err:?}");
}

#[test]
fn services_are_gone_after_their_process_is_killed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness-hold"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start harness-hold");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the hold line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
    let pg_port = v["pg_port"].as_u64().expect("pg_port") as u16;
    let moto_port = v["moto_port"].as_u64().expect("moto_port") as u16;
    let pg_dir = PathBuf::from(v["pg_dir"].as_str().expect("pg_dir"));
    assert!(port_open(pg_port) && port_open(moto_port) && pg_dir.exists());

    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reap");

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if !port_open(pg_port) && !port_open(moto_port) && !pg_dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "still there 30 s after SIGKILL: postgres port open={}, moto port open={}, dir exists={}",
        port_open(pg_port),
        port_open(moto_port),
        pg_dir.exists()
    );
}
