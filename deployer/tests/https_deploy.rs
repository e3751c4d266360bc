//! HTTPS at the Elastic IP on the local cloud (`tls = "acme"`), with Pebble as the CA
//! (its root trusted only here, through `[https] roots`). The instances boot their user
//! data; the unit runs the server with `--tls acme`; the Elastic IP's forwarder carries
//! the API port, the HTTPS port and the HTTP-01 challenge port (Pebble's `httpPort`
//! stands in for 80: binding port 80 needs root, and the tests must not). Every
//! challenge is really fetched by Pebble from the Elastic IP's loopback address.
//!
//! One app, in order: the first switch-on (r1 gets its certificate only after it holds
//! the address), a blue/green deploy under HTTPS load through the Elastic IP's own
//! address (every request a fresh SNI-less handshake that verifies the chain and the IP
//! SAN), the gate refusing a colour without a valid certificate (a corrupted store) and
//! one whose certificate expires inside the rollback window, then destroy.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Run;
use common::app::{CloudApp, leftovers};
use deployer::state::Color;
use rustls_pki_types::ServerName;
use tls::cert::CertInfo;

/// An app with `tls = "acme"` against the test's Pebble (its root trusted only by the
/// deployer's `[https] roots`), on its own HTTPS port.
struct App {
    app: CloudApp,
    https_port: u16,
}

impl std::ops::Deref for App {
    type Target = CloudApp;
    fn deref(&self) -> &CloudApp {
        &self.app
    }
}

impl App {
    async fn new(releases: &[&str]) -> App {
        let pebble = harness::pebble::pebble();
        let text = |s: String| toml::Value::String(s);
        let port = |p: u16| toml::Value::Integer(p.into());
        let https_port = harness::free_port();
        let app = CloudApp::new(
            &[
                ("", "tls", text("acme".into())),
                ("https", "port", port(https_port)),
                ("https", "challenge_port", port(pebble.http_port())),
                ("https", "acme_directory", text(pebble.directory_url())),
                (
                    "https",
                    "roots",
                    text(pebble.issuer_root_path().display().to_string()),
                ),
                (
                    "https",
                    "acme_directory_root",
                    text(pebble.api_root_path().display().to_string()),
                ),
                ("https", "check_interval_seconds", port(1)),
            ],
            releases,
        )
        .await;
        App { app, https_port }
    }

    async fn deploy(&self, release: &str, extra: &[&str]) -> Run {
        let mut head = vec!["deploy", "--release", release];
        head.extend_from_slice(extra);
        self.run(&self.release_args(&head)).await
    }

    async fn stored_serial(&self, eip: IpAddr) -> Option<String> {
        let d = self.s.deployer().await;
        let c = d.tls_store(eip).load_cert().await.unwrap()?;
        Some(c.info().unwrap().serial)
    }
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let roots = tls::verify::roots_from_pem(harness::pebble::pebble().issuer_root_pem().as_bytes())
        .unwrap();
    Arc::new(tls::verify::client_config(roots).unwrap())
}

/// What one HTTPS request through the Elastic IP gave.
enum Outcome {
    /// (release reported by /version, serial of the certificate served)
    Ok(String, String),
    Handshake(String),
    Request(String),
}

/// `GET /version` over a fresh connection to `addr`, SNI-less, the chain verified
/// against Pebble's root and the IP SAN against `eip`.
fn https_version(addr: SocketAddr, eip: IpAddr, cfg: &Arc<rustls::ClientConfig>) -> Outcome {
    assert!(addr.ip().is_loopback());
    let mut tcp = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        Ok(t) => t,
        Err(e) => return Outcome::Request(format!("connect: {e}")),
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::IpAddress(eip.into())).unwrap();
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Outcome::Handshake(e.to_string());
        }
    }
    let serial = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|d| CertInfo::from_der(d).unwrap().serial)
        .unwrap_or_default();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    if let Err(e) = write!(
        s,
        "GET /version HTTP/1.1\r\nHost: {eip}\r\nConnection: close\r\n\r\n"
    ) {
        return Outcome::Request(e.to_string());
    }
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf)
        && buf.is_empty()
    {
        return Outcome::Request(e.to_string());
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Request(format!("no answer: {text:?}"));
    };
    if head.split_whitespace().nth(1) != Some("200") {
        return Outcome::Request(head.lines().next().unwrap_or_default().to_string());
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => Outcome::Ok(v["release"].as_str().unwrap_or_default().into(), serial),
        Err(e) => Outcome::Request(format!("{e}: {body:?}")),
    }
}

#[derive(Default)]
struct Seen {
    releases: Vec<String>,
    serials: Vec<String>,
    handshake_failures: Vec<String>,
    request_failures: Vec<String>,
}

/// HTTPS requests through the Elastic IP's own address, a new TLS connection each.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    fn start(addr: SocketAddr, eip: IpAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (st, sn) = (stop.clone(), seen.clone());
        let cfg = client_config();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let r = https_version(addr, eip, &cfg);
                let mut g = sn.lock().unwrap();
                match r {
                    Outcome::Ok(rel, serial) => {
                        g.releases.push(rel);
                        g.serials.push(serial);
                    }
                    Outcome::Handshake(e) => g.handshake_failures.push(e),
                    Outcome::Request(e) => g.request_failures.push(e),
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Load { stop, seen, thread }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Waits (30 s at most) until the Elastic IP serves `release` over HTTPS.
fn wait_https(addr: SocketAddr, eip: IpAddr, release: &str) -> String {
    let cfg = client_config();
    let start = std::time::Instant::now();
    loop {
        let last = match https_version(addr, eip, &cfg) {
            Outcome::Ok(r, serial) if r == release => return serial,
            Outcome::Ok(r, _) => format!("serves {r}"),
            Outcome::Handshake(e) => format!("handshake: {e}"),
            Outcome::Request(e) => e,
        };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "https://{addr} does not serve {release}: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_first_switch_on_then_a_blue_green_deploy_under_https_load_and_the_gate_refuses() {
    let app = App::new(&["r1", "r2", "r3"]).await;
    let https = app.https_port;

    // The security group opens the HTTPS and challenge ports (tls = "acme").
    let st = app.state().await;
    let ingress = &st.resources["aws_security_group.api"].attributes["ingress"];
    for p in [https, harness::pebble::pebble().http_port()] {
        assert!(
            ingress
                .to_string()
                .contains(&format!("tcp/{p}-{p} from 0.0.0.0/0")),
            "{ingress}"
        );
    }
    let (eip, _) = app.eip().await;
    let at_eip = SocketAddr::new(eip, https);
    let plan = app.ok(&["plan"]).await;
    assert!(
        plan.stdout
            .contains(&format!("HTTPS certificate for {eip}: none in s3://")),
        "{}",
        plan.stdout
    );

    // r1, the first switch-on: no certificate anywhere, so the gate lets r1 through,
    // the address moves, and r1 (now reachable at the address) orders from Pebble.
    let r = app.deploy("r1", &[]).await;
    assert_eq!(r.code, 0, "deploy r1:\n{}\n{}", r.all(), app.logs().await);
    for said in [
        "first switch-on of HTTPS",
        "first certificate issued and served through the Elastic IP",
    ] {
        assert!(r.stderr.contains(said), "{}", r.stderr);
    }
    let first = app
        .stored_serial(eip)
        .await
        .expect("a certificate is stored");
    assert_eq!(
        wait_https(at_eip, eip, "r1"),
        first,
        "r1 serves the stored certificate"
    );
    let info = tls::verify::verify_endpoint(
        at_eip,
        eip,
        tls::verify::roots_from_pem_file(&harness::pebble::pebble().issuer_root_path()).unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(info.ip_sans, vec![eip]);
    assert!(info.issuer.contains("Pebble"), "{}", info.issuer);
    let status = app.ok(&["status"]).await;
    assert!(
        status.stdout.contains(&format!(
            "HTTPS certificate for {eip}: IP:{eip}, issuer {}, serial {first}, expires ",
            info.issuer
        )),
        "{}",
        status.stdout
    );
    // The same in `status --json`, for scripts watching the expiry.
    let json = app.ok(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    let cert = &v["certificate"];
    assert_eq!(cert["state"], "stored", "{v:#}");
    assert_eq!(cert["ip"], eip.to_string(), "{v:#}");
    assert_eq!(cert["serial"], first.as_str(), "{v:#}");
    assert_eq!(cert["matches_ip"], true, "{v:#}");
    assert!(cert["remaining_s"].as_u64().unwrap_or(0) > 0, "{v:#}");

    // r2 under HTTPS load through the Elastic IP's own address: the gate verifies the
    // stored certificate on green's own address before the move; no handshake and no
    // request fails, and green serves the same certificate.
    let load = Load::start(at_eip, eip);
    std::thread::sleep(Duration::from_millis(500));
    let r = app.deploy("r2", &[]).await;
    assert_eq!(r.code, 0, "deploy r2:\n{}\n{}", r.all(), app.logs().await);
    assert!(r.stderr.contains("HTTPS gate passed"), "{}", r.stderr);
    let green_serial = wait_https(at_eip, eip, "r2");
    std::thread::sleep(Duration::from_secs(1));
    let seen = load.finish();
    let requests =
        seen.releases.len() + seen.handshake_failures.len() + seen.request_failures.len();
    eprintln!(
        "HTTPS load through {at_eip} during deploy r2: {requests} requests ({} TLS handshakes), {} handshake failures, {} failed requests",
        seen.releases.len() + seen.request_failures.len(),
        seen.handshake_failures.len(),
        seen.request_failures.len()
    );
    assert!(requests > 20, "only {requests} requests");
    assert!(
        seen.handshake_failures.is_empty(),
        "{} of {requests} handshakes failed: {:?}",
        seen.handshake_failures.len(),
        seen.handshake_failures
    );
    assert!(
        seen.request_failures.is_empty(),
        "{} of {requests} failed: {:?}",
        seen.request_failures.len(),
        seen.request_failures
    );
    let mut runs: Vec<&str> = Vec::new();
    for r in &seen.releases {
        if runs.last() != Some(&r.as_str()) {
            runs.push(r);
        }
    }
    assert_eq!(runs, ["r1", "r2"], "exactly one switch");
    assert!(
        seen.serials.iter().all(|s| *s == first) && green_serial == first,
        "both colours served the stored certificate {first}"
    );
    let green = app.state().await.release.instances[&Color::Green]
        .instance_id
        .clone();

    // A rollback to blue (r1) with a rollback window longer than the certificate's
    // life: blue would serve a certificate expiring inside it, so the address is not
    // moved back; the redeploy of r1 it falls back to is refused the same way, and
    // green keeps the address.
    let args = app.release_args(&["rollback", "--rollback-window", "100000h"]);
    let r = app.run(&args).await;
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains("previous colour not usable (its HTTPS:")
            && r.stderr
                .contains("inside the required 360000000 s (the rollback window)"),
        "{}",
        r.stderr
    );
    let last = r.last_stderr_line();
    assert!(
        last.contains(&format!("{green} (r2) keeps the Elastic IP")),
        "one line that says why: {last}"
    );
    assert_eq!(app.eip().await.1.as_deref(), Some(green.as_str()));
    assert_eq!(wait_https(at_eip, eip, "r2"), first);

    // A corrupted store: the new colour cannot load a certificate, the address serves
    // a valid one, so the gate refuses it and the address stays.
    let d = app.s.deployer().await;
    let s3 = app.s.clients().await.s3;
    let key = d.tls_store(eip).key("certificate.json");
    let bucket = app.s.cfg.artifacts.bucket.clone();
    let good = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    s3.put_object()
        .bucket(&bucket)
        .key(&key)
        .body(b"{ not a certificate".to_vec().into())
        .send()
        .await
        .unwrap();
    let r = app.deploy("r3", &[]).await;
    assert_ne!(r.code, 0, "{}", r.all());
    let last = r.last_stderr_line();
    assert!(
        last.contains("release r3 abandoned on blue")
            && last.contains(&format!(
                "has no valid certificate for the Elastic IP {eip}"
            ))
            && last.contains(&format!("the address keeps serving certificate {first}"))
            && last.contains(&format!("{green} (r2) keeps the Elastic IP")),
        "one line that says why: {last}"
    );
    assert_eq!(app.eip().await.1.as_deref(), Some(green.as_str()));
    assert_eq!(wait_https(at_eip, eip, "r2"), first);

    // The store restored, but a rollback window longer than the certificate's life:
    // refused as expiring inside the window.
    s3.put_object()
        .bucket(&bucket)
        .key(&key)
        .body(good.to_vec().into())
        .send()
        .await
        .unwrap();
    let r = app.deploy("r3", &["--rollback-window", "100000h"]).await;
    assert_ne!(r.code, 0, "{}", r.all());
    let last = r.last_stderr_line();
    assert!(
        last.contains("release r3 abandoned on blue")
            && last.contains("inside the required 360000000 s (the rollback window)")
            && last.contains(&format!("{green} (r2) keeps the Elastic IP")),
        "one line that says why: {last}"
    );
    assert_eq!(app.eip().await.1.as_deref(), Some(green.as_str()));

    app.ok(&["destroy", "--auto-approve"]).await;
    let left = leftovers(&app.s).await;
    assert!(left.is_empty(), "left after destroy: {left:?}");
}
