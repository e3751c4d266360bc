//! A certificate chain with its private key, and what can be read from it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in the PEM chain")]
    Empty,
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("cannot parse the certificate: {0}")]
    Parse(String),
    #[error("the private key is not usable: {0}")]
    Key(String),
}

/// A certificate chain (leaf first) and its private key, both PEM: what is stored in the
/// bucket and served. `directory` is the ACME directory that issued it, so a switch from
/// staging to production renews at once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCert {
    pub directory: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StoredCert {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert")
            .field("directory", &self.directory)
            .field("chain_pem_len", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

impl StoredCert {
    /// The chain as DER, leaf first.
    pub fn chain(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        parse_chain(self.chain_pem.as_bytes())
    }

    /// The leaf's details.
    pub fn info(&self) -> Result<CertInfo, CertError> {
        let chain = self.chain()?;
        CertInfo::from_der(chain.first().ok_or(CertError::Empty)?)
    }

    /// The chain and key as rustls serves them.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let chain = self.chain()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| CertError::Pem(format!("private key: {e}")))?;
        let signer = crate::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::Key(e.to_string()))?;
        let ck = CertifiedKey::new(chain, signer);
        // The key must belong to the leaf (a mix-up would fail every handshake).
        ck.keys_match().map_err(|e| CertError::Key(e.to_string()))?;
        Ok(Arc::new(ck))
    }
}

/// Every certificate in a PEM text, in order.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Empty);
    }
    Ok(chain)
}

/// What an operator wants to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// IP address SANs (the identity this project asks for).
    pub ip_sans: Vec<IpAddr>,
    /// DNS name SANs, if any.
    pub dns_sans: Vec<String>,
    /// The issuer's distinguished name, e.g. `CN=Pebble Intermediate CA 1a2b3c`.
    pub issuer: String,
    /// The serial number, lower-case hex without separators.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        let mut ip_sans = Vec::new();
        let mut dns_sans = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| CertError::Parse(e.to_string()))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ip_sans.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ip_sans.push(IpAddr::from(v6));
                        }
                    }
                    GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        let time = |ts: i64| match u64::try_from(ts) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH,
        };
        Ok(CertInfo {
            ip_sans,
            dns_sans,
            issuer: cert.issuer().to_string(),
            serial: cert
                .tbs_certificate
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
        })
    }

    /// The identity as one line: `IP:127.0.0.7, DNS:example.org`.
    pub fn identity(&self) -> String {
        self.ip_sans
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(self.dns_sans.iter().map(|d| format!("DNS:{d}")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `not_after - not_before`.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }

    /// `not_after` in seconds since the Unix epoch.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}
