//! Checks a TLS endpoint the way a client that only knows the IP address does: no SNI
//! (an IP address cannot be sent as SNI), the chain verified against the given roots, the
//! leaf's IP SAN checked against the *expected* address, not the one dialled. The
//! deployer's health gate dials a new instance's own address and expects the Elastic
//! IP's certificate there.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use crate::cert::{CertError, CertInfo, parse_chain};

/// Why an endpoint or a chain did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the root certificates {path}: {source}")]
    ReadRoots {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("root certificates: {0}")]
    Roots(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: no TLS handshake within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: TLS handshake failed for IP {expected}: {message}")]
    Handshake {
        addr: SocketAddr,
        expected: IpAddr,
        message: String,
    },
    #[error("certificate does not verify for IP {expected}: {message}")]
    Chain { expected: IpAddr, message: String },
    #[error("{addr}: the server sent no certificate")]
    NoCertificate { addr: SocketAddr },
    #[error(
        "certificate {serial} for {identity} expires in {remaining_s} s, inside the required {required_s} s (the rollback window)"
    )]
    ExpiresSoon {
        serial: String,
        identity: String,
        remaining_s: u64,
        required_s: u64,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Refuses a certificate that is not valid from `now` for at least `required` (the
/// deployer's rollback window: a colour must be able to serve that long without a
/// renewal). An expired certificate has no time left.
pub fn check_remaining(
    info: &CertInfo,
    now: std::time::SystemTime,
    required: Duration,
) -> Result<(), VerifyError> {
    let remaining = info.remaining(now);
    if info.not_before <= now && now < info.not_after && remaining >= required {
        return Ok(());
    }
    Err(VerifyError::ExpiresSoon {
        serial: info.serial.clone(),
        identity: info.identity(),
        remaining_s: remaining.as_secs(),
        required_s: required.as_secs(),
    })
}

/// Root certificates from PEM text (one or more).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, VerifyError> {
    let mut roots = RootCertStore::empty();
    for der in parse_chain(pem)? {
        roots
            .add(der)
            .map_err(|e| VerifyError::Roots(e.to_string()))?;
    }
    Ok(roots)
}

/// Root certificates from a PEM file.
pub fn roots_from_pem_file(path: &Path) -> Result<RootCertStore, VerifyError> {
    let pem = std::fs::read(path).map_err(|source| VerifyError::ReadRoots {
        path: path.display().to_string(),
        source,
    })?;
    roots_from_pem(&pem)
}

/// A rustls client configuration that trusts only `roots`.
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, VerifyError> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| VerifyError::Roots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects to `addr`, handshakes without SNI, verifies the chain against `roots` and
/// the leaf's IP SAN against `expected`, and returns the leaf's details.
pub async fn verify_endpoint(
    addr: SocketAddr,
    expected: IpAddr,
    roots: RootCertStore,
    timeout: Duration,
) -> Result<CertInfo, VerifyError> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots)?));
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| VerifyError::Connect { addr, source })?;
        // A ServerName::IpAddress sends no SNI and is matched against IP SANs only.
        let tls = connector
            .connect(ServerName::IpAddress(expected.into()), tcp)
            .await
            .map_err(|e| VerifyError::Handshake {
                addr,
                expected,
                message: handshake_message(&e),
            })?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(VerifyError::NoCertificate { addr })?;
        Ok(CertInfo::from_der(leaf)?)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| VerifyError::Timeout { addr, timeout })?
}

/// The deployer's health gate for one colour: dials `dial` (the new instance's own
/// address, before the Elastic IP moves), verifies the chain against `roots` and the
/// leaf's IP SAN against `expected` (the Elastic IP, not the dialled address), and
/// refuses a certificate valid for less than `min_remaining` (the rollback window).
pub async fn gate(
    dial: SocketAddr,
    expected: IpAddr,
    roots: RootCertStore,
    timeout: Duration,
    min_remaining: Duration,
) -> Result<CertInfo, VerifyError> {
    let info = verify_endpoint(dial, expected, roots, timeout).await?;
    check_remaining(&info, std::time::SystemTime::now(), min_remaining)?;
    Ok(info)
}

/// rustls's error, with what it usually means for this project's servers.
fn handshake_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("AccessDenied") || text.contains("HandshakeFailure") {
        // A rustls server whose resolver has no certificate aborts with access_denied
        // (other stacks with handshake_failure).
        format!("{text} (the server has no certificate to present: none stored or loaded yet?)")
    } else {
        text
    }
}

/// Verifies a chain (leaf first) offline, as a client would at `now`: against `roots`,
/// for IP `expected`. For a certificate read from the bucket before anything serves it.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    expected: IpAddr,
    roots: RootCertStore,
    now: std::time::SystemTime,
) -> Result<CertInfo, VerifyError> {
    let (leaf, intermediates) = chain.split_first().ok_or(CertError::Empty)?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
        .build()
        .map_err(|e| VerifyError::Roots(e.to_string()))?;
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &ServerName::IpAddress(expected.into()),
            &[],
            UnixTime::since_unix_epoch(secs),
        )
        .map_err(|e| VerifyError::Chain {
            expected,
            message: e.to_string(),
        })?;
    Ok(CertInfo::from_der(leaf)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_certificate_must_outlive_the_required_window() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let info = CertInfo {
            ip_sans: vec![IpAddr::from([127, 0, 0, 7])],
            dns_sans: vec![],
            issuer: "CN=test".into(),
            serial: "0a".into(),
            not_before: start,
            not_after: start + Duration::from_secs(160 * 3600),
        };
        let day = Duration::from_secs(86_400);
        let now = start + day;
        check_remaining(&info, now, day).unwrap_or_else(|e| panic!("{e}"));
        let late = start + Duration::from_secs(150 * 3600);
        let Err(err) = check_remaining(&info, late, day) else {
            panic!("10 hours left is inside a day's window")
        };
        assert_eq!(
            err.to_string(),
            "certificate 0a for IP:127.0.0.7 expires in 36000 s, inside the required 86400 s (the rollback window)"
        );
        let expired = start + Duration::from_secs(200 * 3600);
        assert!(check_remaining(&info, expired, Duration::ZERO).is_err());
        // Not valid yet.
        assert!(check_remaining(&info, start - day, Duration::ZERO).is_err());
    }
}
