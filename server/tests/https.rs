//! `--tls acme` against a real ACME server (Pebble, harness) with the bucket in moto, all
//! on loopback: the server orders a certificate for its own loopback "public IP",
//! answering HTTP-01 itself; clients verify it SNI-less against Pebble's root and the IP
//! SAN; renewals under load swap the certificate without a failed request; a second
//! process serves the stored certificate from its first handshake; redirect mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tls::verify::{client_config, roots_from_pem, verify_endpoint};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn roots() -> rustls::RootCertStore {
    roots_from_pem(harness::pebble::pebble().issuer_root_pem().as_bytes()).unwrap()
}

async fn bucket() -> (aws_sdk_s3::Client, String) {
    let s3 = harness::moto().s3_client().await;
    let b = harness::unique("https");
    s3.create_bucket().bucket(&b).send().await.unwrap();
    (s3, b)
}

/// `server --tls acme` for `ip`, HTTPS on `<ip>:<https>`, the challenge on
/// `<ip>:<challenge>`, the store in `bucket`, plus `extra` flags.
fn start(
    model: &str,
    ip: IpAddr,
    https: u16,
    challenge: u16,
    bucket: &str,
    extra: &[&str],
) -> Server {
    let pebble = harness::pebble::pebble();
    let mut args: Vec<String> = vec![
        "--tls".into(),
        "acme".into(),
        "--tls-ip".into(),
        ip.to_string(),
        "--https-listen".into(),
        format!("{ip}:{https}"),
        "--acme-http-listen".into(),
        format!("{ip}:{challenge}"),
        "--acme-directory".into(),
        pebble.directory_url(),
        "--acme-root".into(),
        pebble.api_root_path().display().to_string(),
        "--tls-store".into(),
        format!("s3://{bucket}"),
        // Where Pebble validates: only the process listening there may order.
        "--acme-validation-port".into(),
        pebble.http_port().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, String)> = harness::moto().env();
    Server::start(model, &args, &env)
}

/// Waits until the endpoint verifies; returns the serial.
async fn wait_verified(addr: SocketAddr, ip: IpAddr, server: &Server) -> String {
    let start = Instant::now();
    loop {
        match verify_endpoint(addr, ip, roots(), Duration::from_secs(5)).await {
            Ok(info) => return info.serial,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(60),
                "no verified certificate at {addr}: {e}\n{}\n{}",
                server.logs(),
                harness::pebble::pebble().log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A verified HTTPS connection to `addr` for `ip`; returns it and the leaf's serial.
async fn connect(
    addr: SocketAddr,
    ip: IpAddr,
) -> std::io::Result<(BufReader<TlsStream<TcpStream>>, String)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots()).unwrap()));
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let serial = tls::cert::CertInfo::from_der(&leaf).unwrap().serial;
    Ok((BufReader::new(tls), serial))
}

/// POST /predict on a keep-alive connection; the status.
async fn predict(c: &mut BufReader<TlsStream<TcpStream>>) -> std::io::Result<u16> {
    let req = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ORIGINAL}",
        ORIGINAL.len()
    );
    c.get_mut().write_all(req.as_bytes()).await?;
    harness::http::read_response(c).await
}

/// What each test starts from: a runtime, a loopback address of its own (the server's
/// "public IP"), a bucket for the certificate store (client, name), and a model (its
/// folder, its path).
type Env = (
    tokio::runtime::Runtime,
    IpAddr,
    aws_sdk_s3::Client,
    String,
    tempfile::TempDir,
    String,
);

fn env() -> Env {
    let rt = rt();
    let ip = IpAddr::V4(harness::pebble::unique_loopback_ip());
    let (s3, bucket) = rt.block_on(bucket());
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 0.1, 1);
    let model = dir.path().display().to_string();
    (rt, ip, s3, bucket, dir, model)
}

#[test]
fn renewals_under_load_swap_the_certificate_without_a_failed_request() {
    let (rt, ip, _s3, bucket, _dir, model) = env();
    let https = harness::free_port();
    let addr = SocketAddr::new(ip, https);
    let pebble_http = harness::pebble::pebble().http_port();
    // Due at once and every time: renew_before longer than any lifetime.
    let server = start(
        &model,
        ip,
        https,
        pebble_http,
        &bucket,
        &[
            "--tls-check-interval",
            "0.5",
            "--tls-renew-before",
            "3153600000",
            "--tls-retry-min",
            "0.2",
        ],
    );
    server.wait_ready(200);
    let first = rt.block_on(wait_verified(addr, ip, &server));

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (serials, kept) = rt.block_on(async {
        // One connection open through every renewal: it keeps its handshake's
        // certificate and must never break.
        let (mut long, long_serial) = connect(addr, ip).await.unwrap();
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (stop, failures, requests) = (stop.clone(), failures.clone(), requests.clone());
            workers.push(tokio::spawn(async move {
                let mut seen = BTreeSet::new();
                while !stop.load(Ordering::SeqCst) {
                    // New connections (new handshakes) of 10 requests each.
                    match connect(addr, ip).await {
                        Ok((mut c, serial)) => {
                            seen.insert(serial);
                            for _ in 0..10 {
                                match predict(&mut c).await {
                                    Ok(200) => requests.fetch_add(1, Ordering::SeqCst),
                                    _ => failures.fetch_add(1, Ordering::SeqCst),
                                };
                            }
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                seen
            }));
        }
        let start = Instant::now();
        let mut long_ok = 0;
        let mut all = BTreeSet::new();
        // Until three certificates beyond the first were served, or a minute.
        while start.elapsed() < Duration::from_secs(60) {
            assert_eq!(predict(&mut long).await.unwrap(), 200);
            long_ok += 1;
            let current = verify_endpoint(addr, ip, roots(), Duration::from_secs(5))
                .await
                .unwrap()
                .serial;
            all.insert(current);
            if all.len() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            all.extend(w.await.unwrap());
        }
        // The long connection still works after all the swaps.
        assert_eq!(predict(&mut long).await.unwrap(), 200);
        assert!(long_ok > 0);
        (all, long_serial)
    });
    assert_eq!(failures.load(Ordering::SeqCst), 0, "{}", server.logs());
    assert!(requests.load(Ordering::SeqCst) > 0);
    assert!(
        serials.len() >= 4,
        "certificates served: {serials:?}\n{}",
        server.logs()
    );
    assert!(serials.contains(&first) && serials.contains(&kept));

    // Metrics: renewals counted, expiry in the future.
    let m = server.get("/metrics").body;
    let ok: f64 = metric(&m, "tls_renewals_total{result=\"ok\"}").expect("renewals counted");
    assert!(ok >= 3.0, "{m}");
    let expiry = metric(&m, "tls_certificate_expiry_seconds").expect("expiry gauge");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "{m}");
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_second_process_serves_the_stored_certificate_from_its_first_handshake() {
    let (rt, ip, s3, bucket, _dir, model) = env();
    let pebble_http = harness::pebble::pebble().http_port();
    let first_port = harness::free_port();
    let mut first = start(
        &model,
        ip,
        first_port,
        pebble_http,
        &bucket,
        &["--http-mode", "redirect"],
    );
    let serial = rt.block_on(wait_verified(SocketAddr::new(ip, first_port), ip, &first));

    // Redirect mode: /predict moves to HTTPS, health endpoints stay plain.
    let r = first.post("/predict", ORIGINAL);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://{ip}:{first_port}/predict").as_str())
    );
    assert_eq!(first.get("/healthz").status, 200);
    first.signal("TERM");
    first.wait_exit(Duration::from_secs(20));

    let store =
        tls::store::TlsStore::new(s3, &bucket, tls::store::TlsStore::default_prefix(ip), None);
    let stored = rt.block_on(store.load_cert()).unwrap().unwrap();
    assert_eq!(stored.info().unwrap().serial, serial);

    // The new process (another port: a new colour) has the certificate before it could
    // answer any challenge: its challenge port is not where Pebble looks.
    let second_port = harness::free_port();
    let second = start(&model, ip, second_port, harness::free_port(), &bucket, &[]);
    let seen = rt
        .block_on(verify_endpoint(
            SocketAddr::new(ip, second_port),
            ip,
            roots(),
            Duration::from_secs(5),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", second.logs()));
    assert_eq!(seen.serial, serial);
    assert_eq!(seen.ip_sans, vec![ip]);
    // Plain HTTP still serves in the default mode.
    second.wait_ready(200);
    assert_eq!(second.post("/predict", ORIGINAL).status, 200);
}

#[test]
fn the_gate_refuses_a_colour_without_a_certificate_or_one_about_to_expire() {
    let (rt, ip, s3, bucket, _dir, model) = env();
    let t = Duration::from_secs(5);
    let day = Duration::from_secs(86_400);

    // A new colour with an empty store that does not hold the address (its challenge
    // port is not where the CA looks): it serves plain HTTP, but no certificate.
    let port = harness::free_port();
    let bare = start(&model, ip, port, harness::free_port(), &bucket, &[]);
    bare.wait_ready(200);
    let err = rt
        .block_on(tls::verify::gate(
            SocketAddr::new(ip, port),
            ip,
            roots(),
            t,
            day,
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("no certificate to present"),
        "{err}"
    );
    // It did not even try: the address does not reach it, so no lock, no order.
    let start_wait = Instant::now();
    while !bare.logs().contains("NotHolder") {
        assert!(
            start_wait.elapsed() < Duration::from_secs(30),
            "{}",
            bare.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let store =
        tls::store::TlsStore::new(s3, &bucket, tls::store::TlsStore::default_prefix(ip), None);
    assert_eq!(rt.block_on(store.lock_record()).unwrap(), None);
    drop(bare);

    // The holder issues one; a colour that loads it passes with a day's window and is
    // refused when the window is longer than what is left.
    let pebble_http = harness::pebble::pebble().http_port();
    let holder_port = harness::free_port();
    let holder = start(&model, ip, holder_port, pebble_http, &bucket, &[]);
    rt.block_on(wait_verified(SocketAddr::new(ip, holder_port), ip, &holder));
    let next_port = harness::free_port();
    let next = start(&model, ip, next_port, harness::free_port(), &bucket, &[]);
    let dial = SocketAddr::new(ip, next_port);
    let info = rt
        .block_on(tls::verify::gate(dial, ip, roots(), t, day))
        .unwrap_or_else(|e| panic!("{e}\n{}", next.logs()));
    let window = info.lifetime() + day;
    let err = rt
        .block_on(tls::verify::gate(dial, ip, roots(), t, window))
        .unwrap_err();
    assert!(err.to_string().contains("rollback window"), "{err}");
}
