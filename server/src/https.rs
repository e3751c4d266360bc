//! HTTPS with a certificate for the server's public IP address, from ACME (`--tls acme`).
//!
//! * At boot the current certificate is read from the bucket (`--tls-store`) and
//!   installed before the HTTPS port answers its first handshake; a process that finds
//!   none serves HTTPS handshakes only once the renewer has issued one.
//! * The renewer ([`tls::acme::Renewer`]) picks up certificates other processes stored,
//!   and renews when due under the bucket's renewal lock, answering HTTP-01 on
//!   `--acme-http-listen` (port 80 in production).
//! * A new certificate is swapped in through [`CertResolver`] (an `ArcSwap`): handshakes
//!   from then on get it, open connections keep theirs; nothing is dropped.
//! * Plain HTTP on `--listen` keeps serving (`--http-mode serve`, the default) or
//!   redirects to HTTPS with 308 (`--http-mode redirect`), except the operational
//!   endpoints `/healthz`, `/readyz`, `/version` and `/metrics`, which health checks and
//!   scrapers keep reaching over plain HTTP.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tls::acme::{AcmeConfig, Challenges, RenewalObserver, Renewer, RenewerConfig};
use tls::cert::{CertInfo, StoredCert};
use tls::store::TlsStore;

use crate::metrics::Metrics;

/// TLS flags (flattened into the binary's).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// `off`: plain HTTP only. `acme`: also HTTPS with a certificate for --tls-ip from
    /// the ACME directory, kept in --tls-store.
    #[arg(long = "tls", env = "SERVER_TLS", value_enum, default_value_t = TlsMode::Off)]
    pub mode: TlsMode,
    /// With TLS on, what plain HTTP on --listen does: `serve` as before, or `redirect`
    /// to HTTPS (308; /healthz, /readyz, /version and /metrics keep answering).
    #[arg(long, env = "SERVER_HTTP_MODE", value_enum, default_value_t = HttpMode::Serve)]
    pub http_mode: HttpMode,
    /// The public IP address the certificate is for (the Elastic IP).
    #[arg(long, env = "SERVER_TLS_IP")]
    pub tls_ip: Option<IpAddr>,
    /// HTTPS listen address [default: --listen's address, port 8443].
    #[arg(long, env = "SERVER_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// The public HTTPS port named in redirects [default: --https-listen's port].
    #[arg(long, env = "SERVER_HTTPS_PUBLIC_PORT")]
    pub https_public_port: Option<u16>,
    /// Where the HTTP-01 responder listens; the CA connects to --tls-ip on port 80
    /// [default: --listen's address, port 80].
    #[arg(long, env = "SERVER_ACME_HTTP_LISTEN")]
    pub acme_http_listen: Option<SocketAddr>,
    /// The port the CA connects to on --tls-ip for HTTP-01 (80 for Let's Encrypt). Before
    /// ordering, the renewer fetches a token of its own through <tls-ip>:<this port>, so
    /// a process the address does not reach (the idle colour) never orders.
    #[arg(long, env = "SERVER_ACME_VALIDATION_PORT", default_value_t = 80)]
    pub acme_validation_port: u16,
    /// ACME directory URL: Let's Encrypt production (default), staging
    /// (https://acme-staging-v02.api.letsencrypt.org/directory), or a test CA.
    #[arg(long, env = "SERVER_ACME_DIRECTORY", default_value = tls::acme::LETS_ENCRYPT_PRODUCTION)]
    pub acme_directory: String,
    /// PEM root that signs the ACME directory's own HTTPS certificate (test CAs only;
    /// the system roots otherwise).
    #[arg(long, env = "SERVER_ACME_ROOT")]
    pub acme_root: Option<PathBuf>,
    /// Contact for the ACME account, e.g. mailto:ops@example.org.
    #[arg(long, env = "SERVER_ACME_CONTACT")]
    pub acme_contact: Option<String>,
    /// Where the account and certificate live: s3://BUCKET[/PREFIX]
    /// [default prefix: tls/<tls-ip>/].
    #[arg(long, env = "SERVER_TLS_STORE")]
    pub tls_store: Option<String>,
    /// KMS key for SSE-KMS on the stored objects (SSE-S3 without it).
    #[arg(long, env = "SERVER_TLS_KMS_KEY_ID")]
    pub tls_kms_key_id: Option<String>,
    /// Seconds between looks at the bucket and the renewal time.
    #[arg(long, env = "SERVER_TLS_CHECK_INTERVAL", default_value_t = 600.0)]
    pub tls_check_interval: f64,
    /// Renew at the latest this many seconds before expiry (default: the ARI window, or
    /// half the lifetime).
    #[arg(long, env = "SERVER_TLS_RENEW_BEFORE")]
    pub tls_renew_before: Option<f64>,
    /// First wait, in seconds, after a failed renewal (doubling up to an hour). Each
    /// failed validation counts against the CA's limits (Let's Encrypt: 5 per address
    /// and account per hour), so keep it at minutes outside tests.
    #[arg(long, env = "SERVER_TLS_RETRY_MIN", default_value_t = 300.0)]
    pub tls_retry_min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    Off,
    Acme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpMode {
    Serve,
    Redirect,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--tls acme needs --{0}")]
    Missing(&'static str),
    #[error("--tls-store {0:?}: expected s3://BUCKET[/PREFIX]")]
    Store(String),
    #[error("--{what} {value}: not a duration in seconds")]
    Duration { what: &'static str, value: f64 },
}

/// The certificate rustls presents: swapped atomically on renewal.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl CertResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }
    pub fn is_set(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    // SNI-less clients (the only kind for an IP address) get the one certificate.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// Installs renewed certificates into the resolver and counts renewals.
struct Observer {
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
}

impl RenewalObserver for Observer {
    fn install(&self, cert: &StoredCert, info: &CertInfo) {
        match cert.certified_key() {
            Ok(k) => {
                self.resolver.set(k);
                self.metrics.tls_expiry.set(info.not_after_unix());
            }
            Err(e) => {
                tracing::error!(error = %e, serial = %info.serial, "certificate not installed")
            }
        }
    }
    fn renewal(&self, ok: bool) {
        self.metrics.count_tls_renewal(ok);
    }
}

/// Everything [`crate::serve::run_with_tls`] needs for HTTPS.
#[derive(Debug)]
pub struct TlsServe {
    pub https_listen: SocketAddr,
    pub challenge_listen: SocketAddr,
    pub resolver: Arc<CertResolver>,
    pub challenges: Challenges,
    pub renewer: Arc<Renewer>,
    pub http_mode: HttpMode,
    /// `https://<ip>:<port>` for redirects.
    pub public_base: String,
}

fn secs(what: &'static str, v: f64) -> Result<Duration, TlsSetupError> {
    Duration::try_from_secs_f64(v).map_err(|_| TlsSetupError::Duration { what, value: v })
}

/// Reads the flags, loads the stored certificate (so the first handshake has it) and
/// prepares the renewer. `None` when TLS is off.
pub async fn setup(
    args: &TlsArgs,
    listen: SocketAddr,
    metrics: &Arc<Metrics>,
) -> Result<Option<TlsServe>, TlsSetupError> {
    if args.mode == TlsMode::Off {
        return Ok(None);
    }
    let ip = args.tls_ip.ok_or(TlsSetupError::Missing("tls-ip"))?;
    let store_url = args
        .tls_store
        .as_deref()
        .ok_or(TlsSetupError::Missing("tls-store"))?;
    let Ok(model::location::Location::S3 { bucket, prefix }) = store_url.parse() else {
        return Err(TlsSetupError::Store(store_url.into()));
    };
    let prefix = match prefix.as_str() {
        "" => TlsStore::default_prefix(ip),
        _ => prefix,
    };
    let https_listen = args
        .https_listen
        .unwrap_or_else(|| SocketAddr::new(listen.ip(), 8443));
    let challenge_listen = args
        .acme_http_listen
        .unwrap_or_else(|| SocketAddr::new(listen.ip(), 80));
    let public_port = args.https_public_port.unwrap_or(https_listen.port());
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let store = TlsStore::new(
        crate::source::s3_client().await,
        bucket,
        prefix,
        args.tls_kms_key_id.clone(),
    );
    let mut rcfg = RenewerConfig::new(format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "server".into()),
        std::process::id()
    ));
    rcfg.check_interval = secs("tls-check-interval", args.tls_check_interval)?;
    rcfg.renew_before = args
        .tls_renew_before
        .map(|v| secs("tls-renew-before", v))
        .transpose()?;
    rcfg.retry_min = secs("tls-retry-min", args.tls_retry_min)?;
    // Order only while the address reaches this process (the CA dials port 80 there).
    rcfg.probe_port = Some(args.acme_validation_port);
    let resolver = Arc::new(CertResolver::default());
    let challenges = Challenges::default();
    let renewer = Arc::new(Renewer::new(
        AcmeConfig {
            directory_url: args.acme_directory.clone(),
            directory_root: args.acme_root.clone(),
            contact: args.acme_contact.iter().cloned().collect(),
            ip,
        },
        rcfg,
        store,
        challenges.clone(),
        Arc::new(Observer {
            resolver: resolver.clone(),
            metrics: metrics.clone(),
        }),
    ));
    match renewer.load_stored().await {
        Ok(Some(info)) => tracing::info!(serial = %info.serial, identity = %info.identity(),
            issuer = %info.issuer, "loaded the stored certificate"),
        Ok(None) => tracing::info!("no stored certificate yet: HTTPS answers once one is issued"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the stored certificate; the renewer retries")
        }
    }
    Ok(Some(TlsServe {
        https_listen,
        challenge_listen,
        resolver,
        challenges,
        renewer,
        http_mode: args.http_mode,
        public_base: format!("https://{host}:{public_port}"),
    }))
}

/// The rustls configuration of the HTTPS port: HTTP/1.1, the resolver's certificate.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Paths that stay on plain HTTP in redirect mode.
pub fn stays_plain(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/version" | "/metrics")
}

/// 308 to the same path and query on HTTPS.
pub fn redirect(public_base: &str, uri: &hyper::Uri) -> Response<Full<Bytes>> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{public_base}{pq}");
    Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(hyper::header::LOCATION, location.as_str())
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("see {location}\n"))))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_path_and_query() {
        let uri: hyper::Uri = "/predict?x=1".parse().expect("uri");
        let r = redirect("https://127.0.0.7:443", &uri);
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[hyper::header::LOCATION],
            "https://127.0.0.7:443/predict?x=1"
        );
        assert!(stays_plain("/readyz") && !stays_plain("/predict"));
    }
}
