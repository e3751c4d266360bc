//! Against a real ACME server: Pebble on loopback (harness), the bucket in moto.
//! Every challenge is fetched by Pebble from the loopback address being certified, where
//! the test's own responder listens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::types::ServerSideEncryption;
use rustls_pki_types::pem::PemObject;
use tls::acme::{
    Acme, AcmeConfig, AcmeError, Challenges, RenewalObserver, Renewer, RenewerConfig, Step,
    serve_challenges,
};
use tls::cert::{CertInfo, StoredCert};
use tls::store::TlsStore;
use tls::verify::{VerifyError, roots_from_pem, verify_chain, verify_endpoint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

async fn s3() -> aws_sdk_s3::Client {
    let sdk = harness::moto().sdk_config().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket and a store for `ip` in it.
async fn store(ip: IpAddr) -> (aws_sdk_s3::Client, TlsStore) {
    let s3 = s3().await;
    let bucket = harness::unique("tls");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = TlsStore::new(s3.clone(), &bucket, TlsStore::default_prefix(ip), None);
    (s3, store)
}

fn config(ip: IpAddr) -> AcmeConfig {
    let pebble = harness::pebble::pebble();
    AcmeConfig {
        directory_url: pebble.directory_url(),
        directory_root: Some(pebble.api_root_path()),
        contact: vec![],
        ip,
    }
}

/// The HTTP-01 responder on `<ip>:<pebble's http port>`.
async fn responder(ip: IpAddr) -> Challenges {
    let l = TcpListener::bind((ip, harness::pebble::pebble().http_port()))
        .await
        .unwrap();
    let ch = Challenges::default();
    tokio::spawn(serve_challenges(l, ch.clone()));
    ch
}

fn pebble_roots() -> rustls::RootCertStore {
    roots_from_pem(harness::pebble::pebble().issuer_root_pem().as_bytes()).unwrap()
}

/// Serves `cert` on `<ip>:0` with rustls until the test ends; returns the address.
async fn serve(ip: IpAddr, cert: &StoredCert) -> SocketAddr {
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain().unwrap(), key)
        .unwrap();
    serve_config(ip, cfg).await
}

/// A resolver with nothing to present: a server that has no certificate yet.
#[derive(Debug)]
struct NoCert;

impl rustls::server::ResolvesServerCert for NoCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }
}

async fn serve_config(ip: IpAddr, cfg: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut t) = a.accept(s).await {
                    let _ = t.write_all(b"ok").await;
                    let _ = t.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A certificate for `ip` from Pebble, validated over HTTP-01 by a responder on `ip`;
/// with the S3 client and the store that hold its account, and the ACME client.
async fn issued(ip: IpAddr) -> (aws_sdk_s3::Client, TlsStore, Acme, StoredCert) {
    let (s3, store) = store(ip).await;
    let ch = responder(ip).await;
    let acme = Acme::connect(config(ip), &store).await.unwrap();
    let cert = acme.issue(&ch, None).await.unwrap();
    (s3, store, acme, cert)
}

/// The object `key` of `store` is stored encrypted (SSE-S3).
async fn assert_encrypted(s3: &aws_sdk_s3::Client, store: &TlsStore, key: &str) {
    let head = s3
        .head_object()
        .bucket(store.bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256),
        "{key}"
    );
}

fn ip() -> IpAddr {
    IpAddr::V4(harness::pebble::unique_loopback_ip())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_an_ip_certificate_validated_over_http01_and_verifies_it() {
    let ip = ip();
    let (s3, store, acme, cert) = issued(ip).await;
    // Pebble 2.4 advertises no profiles: the order went without one.
    assert_eq!(acme.profile(), None);

    let info = cert.info().unwrap();
    assert_eq!(info.ip_sans, vec![ip]);
    assert!(info.dns_sans.is_empty());
    assert!(info.issuer.contains("Pebble"), "{}", info.issuer);
    assert!(info.not_after > SystemTime::now());
    cert.certified_key().unwrap();

    // Offline: the chain verifies against Pebble's root for this IP, not another.
    let chain = cert.chain().unwrap();
    let checked = verify_chain(&chain, ip, pebble_roots(), SystemTime::now()).unwrap();
    assert_eq!(checked.serial, info.serial);
    let other: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(matches!(
        verify_chain(&chain, other, pebble_roots(), SystemTime::now()),
        Err(VerifyError::Chain { .. })
    ));

    // On the wire, SNI-less: the IP SAN is checked against the expected address.
    let addr = serve(ip, &cert).await;
    let t = Duration::from_secs(10);
    let seen = verify_endpoint(addr, ip, pebble_roots(), t).await.unwrap();
    assert_eq!(seen, info);
    let wrong = verify_endpoint(addr, other, pebble_roots(), t).await;
    assert!(
        matches!(&wrong, Err(VerifyError::Handshake { message, .. }) if message.contains("not valid for name")),
        "{wrong:?}"
    );
    // Untrusted issuer: the harness's listener CA is not Pebble's issuing root.
    let foreign =
        tls::verify::roots_from_pem_file(&harness::pebble::pebble().api_root_path()).unwrap();
    let untrusted = verify_endpoint(addr, ip, foreign, t).await;
    assert!(
        matches!(&untrusted, Err(VerifyError::Handshake { message, .. }) if message.contains("UnknownIssuer")),
        "{untrusted:?}"
    );

    // The account was stored encrypted, and a second connect restores the same one.
    assert_encrypted(&s3, &store, &store.account_key(&config(ip).directory_url)).await;
    let again = Acme::connect(config(ip), &store).await.unwrap();
    assert_eq!(again.account_id(), acme.account_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_fails_when_nobody_answers_the_challenge() {
    // Pebble really fetches the challenge: with no responder on the address, no
    // certificate (PEBBLE_VA_ALWAYS_VALID is off).
    let ip = ip();
    let (_s3, store) = store(ip).await;
    let acme = Acme::connect(config(ip), &store).await.unwrap();
    let err = acme.issue(&Challenges::default(), None).await.unwrap_err();
    assert!(
        matches!(err, AcmeError::Acme { .. } | AcmeError::NotReady { .. }),
        "{err}"
    );
    // A responder that does not know the token fails the same way.
    let _ch = responder(ip).await;
    let err = acme.issue(&Challenges::default(), None).await.unwrap_err();
    assert!(
        matches!(err, AcmeError::Acme { .. } | AcmeError::NotReady { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn the_lock_is_exclusive_expires_and_is_released() {
    let ip = ip();
    let (_s3, store) = store(ip).await;
    let a = store
        .try_lock("a", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a free lock is taken");
    assert!(
        store
            .try_lock("b", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.lock_record().await.unwrap().unwrap().owner, "a");
    assert!(store.release(a).await.unwrap());
    // Released: the next taker gets it (at once, through the ETag of the expired record).
    let b = store
        .try_lock("b", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("a released lock is taken");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // b's lease ran out: c takes it over, and b's release no longer touches it.
    let c = store
        .try_lock("c", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("an expired lock is taken over");
    assert!(!store.release(b).await.unwrap());
    assert_eq!(store.lock_record().await.unwrap().unwrap().owner, "c");
    assert!(store.release(c).await.unwrap());

    // Sixteen takers at once on a free lock: one wins.
    let (_s3, store) = self::store(ip).await;
    let tries = (0..16).map(|i| {
        let s = store.clone();
        async move { s.try_lock(&format!("t{i}"), Duration::from_secs(60)).await }
    });
    let won = futures_join_all(tries).await;
    assert_eq!(
        won.iter().filter(|r| matches!(r, Ok(Some(_)))).count(),
        1,
        "{won:?}"
    );
    assert!(won.iter().all(Result::is_ok), "{won:?}");
}

async fn futures_join_all<F, T>(fs: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[derive(Default)]
struct Recorder {
    installed: Mutex<Vec<String>>,
    ok: AtomicUsize,
    failed: AtomicUsize,
}

impl RenewalObserver for Recorder {
    fn install(&self, _cert: &StoredCert, info: &CertInfo) {
        self.installed.lock().unwrap().push(info.serial.clone());
    }
    fn renewal(&self, ok: bool) {
        if ok { &self.ok } else { &self.failed }.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_renewers_one_acts_and_the_other_picks_up_its_certificate() {
    let ip = ip();
    let (s3, store) = store(ip).await;
    let ch = responder(ip).await;
    let renewer = |owner: &str, rec: Arc<Recorder>| {
        Renewer::new(
            config(ip),
            RenewerConfig::new(owner),
            store.clone(),
            ch.clone(),
            rec,
        )
    };
    let (ra, rb) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (a, b) = (renewer("a", ra.clone()), renewer("b", rb.clone()));
    let (sa, sb) = tokio::join!(a.step(), b.step());
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    let serial = match (&sa, &sb) {
        (Step::Renewed { serial }, Step::Busy) | (Step::Busy, Step::Renewed { serial }) => {
            serial.clone()
        }
        other => panic!("expected one renewal and one busy renewer: {other:?}"),
    };
    assert_eq!(
        ra.ok.load(Ordering::SeqCst) + rb.ok.load(Ordering::SeqCst),
        1
    );
    // The one that waited installs the stored certificate on its next step; neither
    // renews again (the certificate is far from its half-life).
    let (idle, rec) = if matches!(sa, Step::Busy) {
        (&a, &ra)
    } else {
        (&b, &rb)
    };
    assert_eq!(
        idle.step().await.unwrap(),
        Step::PickedUp {
            serial: serial.clone()
        }
    );
    assert_eq!(*rec.installed.lock().unwrap(), vec![serial.clone()]);
    let busy_one = if matches!(sa, Step::Busy) { &b } else { &a };
    assert_eq!(busy_one.step().await.unwrap(), Step::NotDue);

    // The certificate is stored with its key, encrypted; a new process loads it at boot.
    let stored = store.load_cert().await.unwrap().unwrap();
    assert_eq!(stored.info().unwrap().serial, serial);
    assert_encrypted(&s3, &store, &store.key("certificate.json")).await;
    let rc = Arc::new(Recorder::default());
    let fresh = renewer("c", rc.clone());
    let info = fresh.load_stored().await.unwrap().unwrap();
    assert_eq!(info.serial, serial);
    assert_eq!(*rc.installed.lock().unwrap(), vec![serial]);
    // Lock released after the renewal.
    assert!(
        store
            .try_lock("d", Duration::from_secs(1))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_certificate_is_renewed_with_a_new_serial() {
    let ip = ip();
    let (_s3, store) = store(ip).await;
    let ch = responder(ip).await;
    let rec = Arc::new(Recorder::default());
    let mut rcfg = RenewerConfig::new("r");
    // Longer than any lifetime: always due.
    rcfg.renew_before = Some(Duration::from_secs(100 * 365 * 86_400));
    // The holder check passes: the address reaches this responder.
    rcfg.probe_port = Some(harness::pebble::pebble().http_port());
    let r = Renewer::new(config(ip), rcfg, store.clone(), ch, rec.clone());
    let Step::Renewed { serial: first } = r.step().await.unwrap() else {
        panic!("first step issues")
    };
    let Step::Renewed { serial: second } = r.step().await.unwrap() else {
        panic!("a due certificate is renewed")
    };
    assert_ne!(first, second);
    assert_eq!(*rec.installed.lock().unwrap(), vec![first, second.clone()]);
    assert_eq!(rec.ok.load(Ordering::SeqCst), 2);
    assert_eq!(
        store
            .load_cert()
            .await
            .unwrap()
            .unwrap()
            .info()
            .unwrap()
            .serial,
        second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewer_that_does_not_hold_the_address_does_not_order() {
    let ip = ip();
    let (_s3, store) = store(ip).await;
    // Its responder listens elsewhere: the address does not reach it.
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let ch = Challenges::default();
    tokio::spawn(serve_challenges(l, ch.clone()));
    let mut rcfg = RenewerConfig::new("elsewhere");
    rcfg.probe_port = Some(harness::pebble::pebble().http_port());
    let rec = Arc::new(Recorder::default());
    let r = Renewer::new(config(ip), rcfg, store.clone(), ch, rec.clone());
    assert_eq!(r.step().await.unwrap(), Step::NotHolder);
    // No lock taken, no account registered, nothing counted.
    assert!(store.lock_record().await.unwrap().is_none());
    assert!(
        store
            .load_account(&config(ip).directory_url)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        rec.ok.load(Ordering::SeqCst) + rec.failed.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_dials_one_address_and_checks_the_identity_of_another() {
    // The deployer's gate dials the new instance's own address, while the certificate
    // is for the Elastic IP: the IP SAN is checked against the latter.
    let eip = ip();
    let (_s3, _store, _acme, cert) = issued(eip).await;
    let info = cert.info().unwrap();
    let instance = ip(); // another loopback address: the instance's own
    let dial = serve(instance, &cert).await;
    let t = Duration::from_secs(10);
    let day = Duration::from_secs(86_400);
    let seen = tls::verify::gate(dial, eip, pebble_roots(), t, day)
        .await
        .unwrap();
    assert_eq!(seen.ip_sans, vec![eip]);
    // Against the dialled address it would not verify.
    assert!(matches!(
        tls::verify::gate(dial, instance, pebble_roots(), t, day).await,
        Err(VerifyError::Handshake { .. })
    ));

    // About to expire: valid for less than the rollback window.
    let window = info.lifetime() + day;
    let err = tls::verify::gate(dial, eip, pebble_roots(), t, window)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::ExpiresSoon { .. }), "{err}");
    assert!(err.to_string().contains("rollback window"), "{err}");

    // No certificate at all: a clear line.
    let cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCert));
    let empty = serve_config(instance, cfg).await;
    let err = tls::verify::gate(empty, eip, pebble_roots(), t, day)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no certificate to present"),
        "{err}"
    );
}
