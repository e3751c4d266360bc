//! `tls` and `[https]`: HTTPS terminated by the server itself with an ACME certificate
//! for the Elastic IP.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::{self, find_key, invalid};
use super::{Config, ConfigError};

/// Whether the server terminates HTTPS itself with an ACME certificate for the Elastic IP.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP on `api_port` only.
    #[default]
    Off,
    /// HTTPS on `[https] port` with a certificate for the Elastic IP from the ACME
    /// directory, answered HTTP-01 on the challenge port (80).
    Acme,
}

/// What plain HTTP on `api_port` does once HTTPS is on.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpMode {
    /// Keeps serving every path (existing clients keep working).
    #[default]
    Serve,
    /// 308 to HTTPS, except `/healthz`, `/readyz`, `/version` and `/metrics`.
    Redirect,
}

impl HttpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMode::Serve => "serve",
            HttpMode::Redirect => "redirect",
        }
    }
}

/// Let's Encrypt's production ACME directory (the default).
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[https]`: used when `tls = "acme"`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// The HTTPS port (open to the world).
    #[serde(default = "default_https_port")]
    pub port: u16,
    /// The port the CA dials for HTTP-01 on the Elastic IP: 80 for every public CA; a
    /// test CA (Pebble) dials its own `httpPort`. Open to the world.
    #[serde(default = "default_challenge_port")]
    pub challenge_port: u16,
    /// ACME directory URL: Let's Encrypt production, its staging, or a test CA.
    #[serde(default = "default_acme_directory")]
    pub acme_directory: String,
    /// Account contact, `mailto:...`.
    #[serde(default)]
    pub acme_contact: Option<String>,
    /// `serve` or `redirect`.
    #[serde(default)]
    pub http_mode: HttpMode,
    /// ARN of a KMS key: the stored account and certificate are SSE-KMS with it (else
    /// SSE-S3), and the instance role may use it.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// PEM file of the roots the deployer trusts when it verifies a certificate (the
    /// health gate, plan, status). Absent: the system's roots (production). Tests and
    /// the local demo name Pebble's throwaway root here.
    #[serde(default)]
    pub roots: Option<PathBuf>,
    /// Path, on the instance, of the PEM root that signs the ACME directory's own HTTPS
    /// certificate (test CAs only; the system's roots otherwise).
    #[serde(default)]
    pub acme_directory_root: Option<PathBuf>,
    /// Seconds between the server's looks at the store (a renewed or first
    /// certificate is picked up within this).
    #[serde(default = "default_check_interval")]
    pub check_interval_seconds: u64,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        HttpsConfig {
            port: default_https_port(),
            challenge_port: default_challenge_port(),
            acme_directory: default_acme_directory(),
            acme_contact: None,
            http_mode: HttpMode::default(),
            kms_key_id: None,
            roots: None,
            acme_directory_root: None,
            check_interval_seconds: default_check_interval(),
        }
    }
}

fn default_https_port() -> u16 {
    443
}
fn default_challenge_port() -> u16 {
    80
}
fn default_acme_directory() -> String {
    LETS_ENCRYPT_PRODUCTION.into()
}
fn default_check_interval() -> u64 {
    60
}

impl Config {
    pub(super) fn validate_https(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let fail = |section: Option<&str>, key: &str, message: String| {
            let offset = find_key(text, section, key).unwrap_or(0);
            Err(invalid(path, text, offset, Some(key), message))
        };
        let h = &self.https;
        let s = Some("https");
        if h.port == 0 || h.port == 22 || h.port == self.api_port {
            return fail(
                s,
                "port",
                format!(
                    "{} cannot be the HTTPS port (not 0, 22 or api_port {})",
                    h.port, self.api_port
                ),
            );
        }
        if h.challenge_port == 0
            || h.challenge_port == 22
            || h.challenge_port == self.api_port
            || h.challenge_port == h.port
        {
            return fail(
                s,
                "challenge_port",
                format!(
                    "{} cannot be the HTTP-01 challenge port (not 0, 22, api_port or the HTTPS port)",
                    h.challenge_port
                ),
            );
        }
        if !h.acme_directory.starts_with("https://") || !checks::tame(&h.acme_directory, ":/?&=%+~")
        {
            return fail(
                s,
                "acme_directory",
                format!("not an https:// directory URL: {:?}", h.acme_directory),
            );
        }
        if let Some(c) = &h.acme_contact
            && (!c.starts_with("mailto:") || !checks::tame(c, ":@+"))
        {
            return fail(
                s,
                "acme_contact",
                format!("{c:?}: use mailto:name@example.org"),
            );
        }
        if let Some(k) = &h.kms_key_id
            && (!k.starts_with("arn:aws:kms:") || !checks::tame(k, ":/"))
        {
            return fail(
                s,
                "kms_key_id",
                format!("{k:?}: give the key's ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"),
            );
        }
        if let Some(p) = &h.acme_directory_root
            && !checks::tame(&p.to_string_lossy(), "/")
        {
            return fail(
                s,
                "acme_directory_root",
                format!("{}: only letters, digits and ._-/ in the path", p.display()),
            );
        }
        if !(1..=86_400).contains(&h.check_interval_seconds) {
            return fail(
                s,
                "check_interval_seconds",
                format!("{} is out of range 1..=86400", h.check_interval_seconds),
            );
        }
        Ok(())
    }
}
