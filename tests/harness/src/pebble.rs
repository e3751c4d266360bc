//! Pebble, the ACME test server (Debian package `pebble`, 2.4), on loopback.
//!
//! ```no_run
//! let pebble = harness::pebble::pebble(); // shared by the tests of one binary
//! let dir = pebble.directory_url();        // https://127.0.0.1:PORT/dir
//! let api_root = pebble.api_root_path();   // trust this for the directory's HTTPS
//! let roots = pebble.issuer_root_pem();    // trust this (tests only) for issued certs
//! // HTTP-01 is validated at <identifier>:<http_port>: bind the responder there, on an
//! // address of the test's own so tests sharing this Pebble do not collide.
//! let ip = harness::pebble::unique_loopback_ip();
//! let responder = std::net::SocketAddr::from((ip, pebble.http_port()));
//! ```
//!
//! Pebble serves its ACME and management APIs over HTTPS only; the Debian package ships
//! no test certificate, so the harness makes a throwaway CA and a certificate for
//! 127.0.0.1 in the temp dir (written at [`Pebble::api_root_path`]). Pebble's own issuing
//! root is regenerated at every start and read from its management API (`/roots/0`).
//! `PEBBLE_VA_NOSLEEP=1` skips the validator's artificial delays, `PEBBLE_AUTHZREUSE=0`
//! makes every order validate afresh;
//! `PEBBLE_VA_ALWAYS_VALID` is removed from its environment, so every challenge is
//! really fetched from the loopback address being validated.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{HarnessError, free_port, io_err, shell_quote, spawn_watchdog, wait_for_port};

/// A running Pebble.
#[derive(Debug)]
pub struct Pebble {
    acme_port: u16,
    mgmt_port: u16,
    http_port: u16,
    tls_port: u16,
    dir: PathBuf,
    issuer_root_pem: String,
    _child: Child,
}

/// The Pebble shared by every test in this process (started on first use).
pub fn pebble() -> &'static Pebble {
    static P: OnceLock<Pebble> = OnceLock::new();
    P.get_or_init(|| Pebble::start().unwrap_or_else(|e| panic!("starting pebble: {e}")))
}

/// The `pebble` executable: `PEBBLE`, else `/usr/bin/pebble` (Debian's package).
pub fn pebble_bin() -> Result<PathBuf, HarnessError> {
    let p = std::env::var_os("PEBBLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/pebble"));
    if p.exists() {
        Ok(p)
    } else {
        Err(HarnessError::Missing {
            what: format!("pebble at {}", p.display()),
            hint: "run tools/bootstrap.sh (installs Debian's pebble), or set PEBBLE".into(),
        })
    }
}

/// A random loopback address other than 127.0.0.1 (127.100-199.x.y): a test binds its
/// HTTP-01 responder there and orders a certificate for it.
pub fn unique_loopback_ip() -> Ipv4Addr {
    let mut r = rand::rng();
    Ipv4Addr::new(
        127,
        r.random_range(100..200),
        r.random_range(1..255),
        r.random_range(1..255),
    )
}

impl Pebble {
    /// Starts a private Pebble (use [`pebble`] for the shared one).
    pub fn start() -> Result<Pebble, HarnessError> {
        let bin = pebble_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("harness-pebble-")
            .tempdir()
            .map_err(io_err("creating pebble's temp dir"))?
            .keep();
        let (ca_pem, cert_pem, key_pem) = listener_certificate()?;
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(io_err(format!("writing {name}")))
        };
        write("api-root.pem", &ca_pem)?;
        write("cert.pem", &cert_pem)?;
        write("key.pem", &key_pem)?;
        let ca_der: CertificateDer<'static> = PemObject::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| HarnessError::Failed {
                what: "reading the harness CA".into(),
                detail: e.to_string(),
            })?;

        let mut last = String::new();
        for _ in 0..5 {
            let (acme_port, mgmt_port, http_port, tls_port) =
                (free_port(), free_port(), free_port(), free_port());
            let config = serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": dir.join("cert.pem"),
                "privateKey": dir.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }});
            write("pebble-config.json", &config.to_string())?;
            let log = fs::File::create(dir.join("pebble.log")).map_err(io_err("pebble.log"))?;
            let mut child = Command::new(&bin)
                .arg("-config")
                .arg(dir.join("pebble-config.json"))
                .env("PEBBLE_VA_NOSLEEP", "1")
                // Validate every order afresh (Pebble reuses half of valid authorizations).
                .env("PEBBLE_AUTHZREUSE", "0")
                .env_remove("PEBBLE_VA_ALWAYS_VALID")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io_err("pebble.log"))?)
                .stderr(log)
                .spawn()
                .map_err(io_err(format!("starting {}", bin.display())))?;
            spawn_watchdog(&format!(
                "kill {} 2>/dev/null\nrm -rf {}",
                child.id(),
                shell_quote(&dir)
            ))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            if wait_for_port(acme_port, Duration::from_secs(30))
                && wait_for_port(
                    mgmt_port,
                    deadline.saturating_duration_since(Instant::now()),
                )
            {
                // The issuing root, generated at this start.
                let mut root = https_get(mgmt_port, "/roots/0", &ca_der);
                while root.is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    root = https_get(mgmt_port, "/roots/0", &ca_der);
                }
                if let Ok(issuer_root_pem) = root {
                    fs::write(dir.join("issuer-root.pem"), &issuer_root_pem)
                        .map_err(io_err("writing issuer-root.pem"))?;
                    return Ok(Pebble {
                        acme_port,
                        mgmt_port,
                        http_port,
                        tls_port,
                        dir,
                        issuer_root_pem,
                        _child: child,
                    });
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            last = fs::read_to_string(dir.join("pebble.log")).unwrap_or_default();
        }
        Err(HarnessError::Failed {
            what: "pebble".into(),
            detail: last,
        })
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// PEM of the harness CA that signed Pebble's own HTTPS certificate: the root an ACME
    /// client must trust to reach the directory.
    pub fn api_root_path(&self) -> PathBuf {
        self.dir.join("api-root.pem")
    }

    /// PEM of Pebble's issuing root (this run's): what a client trusts to verify an
    /// issued certificate. Tests only: it is a throwaway CA.
    pub fn issuer_root_pem(&self) -> &str {
        &self.issuer_root_pem
    }

    /// The same root as a file.
    pub fn issuer_root_path(&self) -> PathBuf {
        self.dir.join("issuer-root.pem")
    }

    /// The port the validator connects to for HTTP-01 (on the identifier's address).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The port the validator connects to for TLS-ALPN-01.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    pub fn management_port(&self) -> u16 {
        self.mgmt_port
    }

    /// GET on the management API (HTTPS), e.g. `/cert-status-by-serial/<hex>`.
    pub fn management_get(&self, path: &str) -> Result<String, HarnessError> {
        let ca = fs::read(self.api_root_path()).map_err(io_err("reading api-root.pem"))?;
        let ca_der: CertificateDer<'static> =
            PemObject::from_pem_slice(&ca).map_err(|e| HarnessError::Failed {
                what: "reading the harness CA".into(),
                detail: e.to_string(),
            })?;
        https_get(self.mgmt_port, path, &ca_der)
    }

    /// Pebble's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The temp dir holding its config, certificates and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A throwaway CA and a certificate for 127.0.0.1/localhost signed by it: PEM of
/// (CA certificate, leaf certificate, leaf key).
fn listener_certificate() -> Result<(String, String, String), HarnessError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let fail = |e: rcgen::Error| HarnessError::Failed {
        what: "making pebble's listener certificate".into(),
        detail: e.to_string(),
    };
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "harness pebble listener CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(fail)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(fail)?;
    leaf.distinguished_name
        .push(DnType::CommonName, "pebble on loopback");
    let cert = leaf.signed_by(&key, &issuer).map_err(fail)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// A minimal HTTPS GET to 127.0.0.1:`port` trusting only `ca`; the body on 200.
fn https_get(port: u16, path: &str, ca: &CertificateDer<'static>) -> Result<String, HarnessError> {
    let fail = |detail: String| HarnessError::Failed {
        what: format!("GET https://127.0.0.1:{port}{path}"),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| fail(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::from(Ipv4Addr::LOCALHOST).into());
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| fail(e.to_string()))?;
    let tcp = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .map_err(|e| fail(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    // Go closes without close_notify at times: keep what arrived.
    if let Err(e) = tls.read_to_end(&mut out)
        && out.is_empty()
    {
        return Err(fail(e.to_string()));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(fail(head.lines().next().unwrap_or_default().to_string()));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
