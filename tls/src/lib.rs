//! HTTPS at a bare IP address.
//!
//! * [`cert`]: a certificate chain and its key as PEM ([`cert::StoredCert`]), parsed into
//!   what an operator wants to see ([`cert::CertInfo`]: IP identity, issuer, serial,
//!   validity) and into a rustls [`rustls::sign::CertifiedKey`];
//! * [`acme`]: ordering a certificate for an IP address over HTTP-01 (`shortlived`
//!   profile when the CA advertises it), the challenge responder, the renewal schedule
//!   (ARI window, else half the lifetime) and the [`acme::Renewer`] loop;
//! * [`store`]: the ACME account and the certificate in S3 (SSE-KMS or SSE-S3), and the
//!   renewal lock (an S3 conditional write);
//! * [`verify`]: connects SNI-less to a TLS endpoint, verifies the chain against given
//!   roots and the IP SAN against an expected address (the deployer's health gate).
//!
//! Every rustls configuration here uses the aws-lc-rs provider explicitly, so nothing
//! depends on a process-wide default provider.

pub mod acme;
pub mod cert;
pub mod store;
pub mod verify;

/// The crypto provider every rustls configuration in this crate uses.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
