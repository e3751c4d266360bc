//! The Elastic IP's certificate as the deployer sees it (`tls = "acme"`): the address it
//! is for, the roots it is verified against, and the stored certificate that `plan` and
//! `status` show (identity, issuer, expiry).
//!
//! The store is the server's (`tls::store`, `s3://<artifacts>/tls/<ip>/`): the deployer
//! only reads `certificate.json`, and shows nothing of it but the leaf's public details.
//! Production's plan and deploy roles are not allowed to read `tls/` (the object holds
//! the private key; only the instance role may): there the line says the store is not
//! readable with these credentials, and the health gate checks what the instances
//! serve instead (`health::tls`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use tls::cert::CertInfo;
use tls::store::TlsStore;

use crate::aws::AwsError;
use crate::config::TlsMode;
use crate::stack::Kind;
use crate::{Deployer, Error};

/// Why the deployer's roots could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("[https] roots: {0}")]
    File(#[from] tls::verify::VerifyError),
    #[error("the system's root certificates: none could be loaded ({0})")]
    System(String),
}

/// What `plan` and `status` say about the certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CertificateView {
    /// `tls = "off"`.
    Off,
    /// No Elastic IP yet (before the first apply).
    NoAddress,
    /// The store holds no certificate (before the first switch-on's issuance).
    NotIssued { ip: String, store: String },
    /// The stored certificate's public details.
    Stored {
        ip: String,
        identity: String,
        issuer: String,
        serial: String,
        /// RFC 3339.
        not_after: String,
        /// Seconds left (0: expired).
        remaining_s: u64,
        /// Valid for the Elastic IP's address (its IP SAN).
        matches_ip: bool,
    },
    /// The store could not be read (with these credentials, or it is corrupt).
    Unreadable { ip: String, why: String },
}

impl CertificateView {
    fn stored(ip: IpAddr, info: &CertInfo, now: SystemTime) -> CertificateView {
        let not_after: chrono::DateTime<chrono::Utc> = info.not_after.into();
        CertificateView::Stored {
            ip: ip.to_string(),
            identity: info.identity(),
            issuer: info.issuer.clone(),
            serial: info.serial.clone(),
            not_after: not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            remaining_s: info.remaining(now).as_secs(),
            matches_ip: info.ip_sans.contains(&ip),
        }
    }
}

/// The roots a certificate is verified against: the `[https] roots` file when given
/// (tests, the local demo: Pebble's root), else the system's (production).
pub fn roots(cfg: &crate::config::Config) -> Result<RootCertStore, RootsError> {
    if let Some(path) = &cfg.https.roots {
        return Ok(tls::verify::roots_from_pem_file(path)?);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(ToString::to_string)
            .unwrap_or_else(|| "no certificate found".into());
        return Err(RootsError::System(why));
    }
    Ok(roots)
}

impl Deployer {
    /// The Elastic IP's public address (DescribeAddresses of `allocation`).
    pub async fn elastic_ip(&self, allocation: &str) -> Result<IpAddr, Error> {
        let (ip, _) = crate::release::eip_holder(&self.clients, allocation).await?;
        ip.as_deref().and_then(|i| i.parse().ok()).ok_or_else(|| {
            AwsError::other(
                "aws_eip.api",
                "DescribeAddresses",
                format!("{allocation} has no public IPv4 address"),
            )
            .into()
        })
    }

    /// The server's store for the Elastic IP `ip`: `s3://<artifacts>/tls/<ip>/`.
    pub fn tls_store(&self, ip: IpAddr) -> TlsStore {
        TlsStore::new(
            self.clients.s3.clone(),
            &self.cfg.artifacts.bucket,
            TlsStore::default_prefix(ip),
            self.cfg.https.kms_key_id.clone(),
        )
    }

    /// The certificate in the store, as `plan` and `status` show it.
    pub async fn certificate_view(&self) -> Result<CertificateView, Error> {
        if self.cfg.tls == TlsMode::Off {
            return Ok(CertificateView::Off);
        }
        let state = self.read_state().await?;
        let Some(allocation) = state
            .resources
            .get(&Kind::Eip.address())
            .map(|r| r.id.clone())
        else {
            return Ok(CertificateView::NoAddress);
        };
        let ip = self.elastic_ip(&allocation).await?;
        let store = self.tls_store(ip);
        Ok(match store.load_cert().await {
            Ok(None) => CertificateView::NotIssued {
                ip: ip.to_string(),
                store: format!("s3://{}/{}", store.bucket(), store.key("")),
            },
            Ok(Some(c)) => match c.info() {
                Ok(info) => CertificateView::stored(ip, &info, SystemTime::now()),
                Err(e) => CertificateView::Unreadable {
                    ip: ip.to_string(),
                    why: e.to_string(),
                },
            },
            Err(e) => CertificateView::Unreadable {
                ip: ip.to_string(),
                why: e.to_string(),
            },
        })
    }
}

/// `159h 59m` for a duration of seconds.
pub fn hours(s: u64) -> String {
    let d = Duration::from_secs(s);
    format!("{}h {:02}m", d.as_secs() / 3600, (d.as_secs() % 3600) / 60)
}
