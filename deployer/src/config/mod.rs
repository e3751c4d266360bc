//! `deploy.toml`: what the deployer provisions and where it keeps its state.
//!
//! Every key is documented in `deploy.example.toml` at the repository root. A broken
//! file is refused with the file, the line and the key that is wrong.

mod checks;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use checks::parse_cidr;
use checks::{cidr_contains, find_key, invalid, valid_bucket, valid_name};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}{key}: {message}")]
    Invalid {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// `, key `name`` when the key is known, else empty.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Read { .. } => None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// Application name: prefixes every resource name, value of the `app` tag.
    pub app: String,
    /// EC2 instance type for the API instances.
    pub instance_type: String,
    /// TCP port the API listens on; the only port open to the world.
    pub api_port: u16,
    /// CIDR allowed to reach port 22. Absent: no SSH ingress at all.
    #[serde(default)]
    pub ssh_cidr: Option<String>,
    /// CIDR of the VPC.
    #[serde(default = "default_vpc_cidr")]
    pub vpc_cidr: String,
    /// CIDR of the one public subnet (inside `vpc_cidr`).
    #[serde(default = "default_subnet_cidr")]
    pub subnet_cidr: String,
    /// Availability zone of the subnet; absent: the region's first.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Size of the encrypted root volume, GiB.
    #[serde(default = "default_root_volume_gib")]
    pub root_volume_gib: i32,
    pub ami: AmiConfig,
    pub state: StateConfig,
    pub lock: LockConfig,
    pub artifacts: ArtifactsConfig,
    /// HTTPS at the Elastic IP: `off` (the default) or `acme`.
    #[serde(default)]
    pub tls: TlsMode,
    /// The `acme` settings (`[https]`); defaults when absent.
    #[serde(default)]
    pub https: HttpsConfig,
}

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

fn default_vpc_cidr() -> String {
    "10.42.0.0/16".into()
}
fn default_subnet_cidr() -> String {
    "10.42.1.0/24".into()
}
fn default_root_volume_gib() -> i32 {
    16
}

/// Which machine image: a fixed id, or the newest image of an owner matching a name.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AmiConfig {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    /// Name filter with `*` wildcards, as in `DescribeImages`.
    #[serde(default)]
    pub name: Option<String>,
}

/// How an AMI is chosen, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiSelector {
    Id(String),
    Newest { owner: String, name_filter: String },
}

impl AmiConfig {
    pub fn selector(&self) -> AmiSelector {
        match (&self.id, &self.owner, &self.name) {
            (Some(id), _, _) => AmiSelector::Id(id.clone()),
            (None, Some(owner), Some(name)) => AmiSelector::Newest {
                owner: owner.clone(),
                name_filter: name.clone(),
            },
            // `Config::parse` refuses every other combination.
            _ => AmiSelector::Id(String::new()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// S3 bucket holding the state (created by `deployer init`).
    pub bucket: String,
    /// Object key of the state inside the bucket.
    pub key: String,
}

/// Where the lock lives.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LockBackend {
    /// A DynamoDB item `LockID = <bucket>/<key>`, written with a conditional put.
    #[default]
    Dynamodb,
    /// An S3 object `<key>.lock` next to the state, written with `If-None-Match: *`.
    S3,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    #[serde(default)]
    pub backend: LockBackend,
    /// DynamoDB table (created by `deployer init`); required for the `dynamodb` backend.
    #[serde(default)]
    pub table: Option<String>,
    /// Lease length: a holder that stops renewing loses the lock after this long.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

fn default_lease() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// Bucket with `releases/` and `models/`; instances may read those prefixes only.
    pub bucket: String,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            invalid(path, text, offset, None, e.message().trim().to_string())
        })?;
        cfg.validate(text, path)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let fail = |section: Option<&str>, key: &str, message: String| {
            let offset = find_key(text, section, key).unwrap_or(0);
            Err(invalid(path, text, offset, Some(key), message))
        };
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return fail(
                None,
                "region",
                format!("not an AWS region: {:?}", self.region),
            );
        }
        if !valid_name(&self.app, 32) {
            return fail(
                None,
                "app",
                format!(
                    "{:?}: use 1 to 32 lower-case letters, digits and '-', starting with a letter",
                    self.app
                ),
            );
        }
        if self.instance_type.is_empty() || !self.instance_type.contains('.') {
            return fail(
                None,
                "instance_type",
                format!("not an instance type: {:?}", self.instance_type),
            );
        }
        if self.api_port == 0 || self.api_port == 22 {
            return fail(
                None,
                "api_port",
                format!("{} cannot be the API port", self.api_port),
            );
        }
        if let Some(c) = &self.ssh_cidr {
            if parse_cidr(c).is_none() {
                return fail(None, "ssh_cidr", format!("not an IPv4 CIDR: {c:?}"));
            }
            if c.ends_with("/0") {
                return fail(
                    None,
                    "ssh_cidr",
                    "SSH open to the whole internet is refused; name your own address range"
                        .to_string(),
                );
            }
        }
        let Some(vpc) = parse_cidr(&self.vpc_cidr) else {
            return fail(
                None,
                "vpc_cidr",
                format!("not an IPv4 CIDR: {:?}", self.vpc_cidr),
            );
        };
        let Some(subnet) = parse_cidr(&self.subnet_cidr) else {
            return fail(
                None,
                "subnet_cidr",
                format!("not an IPv4 CIDR: {:?}", self.subnet_cidr),
            );
        };
        if !cidr_contains(vpc, subnet) {
            return fail(
                None,
                "subnet_cidr",
                format!(
                    "{} is not inside vpc_cidr {}",
                    self.subnet_cidr, self.vpc_cidr
                ),
            );
        }
        if !(8..=16384).contains(&self.root_volume_gib) {
            return fail(
                None,
                "root_volume_gib",
                format!("{} GiB is out of range 8..=16384", self.root_volume_gib),
            );
        }
        match (&self.ami.id, &self.ami.owner, &self.ami.name) {
            (Some(id), None, None) => {
                if !id.starts_with("ami-") {
                    return fail(Some("ami"), "id", format!("not an AMI id: {id:?}"));
                }
            }
            (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => {
                return fail(
                    Some("ami"),
                    "id",
                    "give either `id`, or `owner` and `name`, not both".into(),
                );
            }
            (None, None, _) => {
                return fail(
                    Some("ami"),
                    "owner",
                    "missing: give `owner` and `name` (or `id`)".into(),
                );
            }
            (None, Some(_), None) => {
                return fail(
                    Some("ami"),
                    "name",
                    "missing: give `name` with `owner` (or `id`)".into(),
                );
            }
        }
        if !valid_bucket(&self.state.bucket) {
            return fail(
                Some("state"),
                "bucket",
                format!("not a valid S3 bucket name: {:?}", self.state.bucket),
            );
        }
        if self.state.key.is_empty() || self.state.key.starts_with('/') {
            return fail(
                Some("state"),
                "key",
                format!("not a valid object key: {:?}", self.state.key),
            );
        }
        if !valid_bucket(&self.artifacts.bucket) {
            return fail(
                Some("artifacts"),
                "bucket",
                format!("not a valid S3 bucket name: {:?}", self.artifacts.bucket),
            );
        }
        if self.lock.backend == LockBackend::Dynamodb {
            match &self.lock.table {
                None => {
                    return fail(
                        Some("lock"),
                        "table",
                        "missing: the dynamodb lock backend needs a table".into(),
                    );
                }
                Some(t)
                    if t.len() < 3
                        || t.len() > 255
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
                {
                    return fail(
                        Some("lock"),
                        "table",
                        format!("not a valid DynamoDB table name: {t:?}"),
                    );
                }
                Some(_) => {}
            }
        }
        if !(2..=3600).contains(&self.lock.lease_seconds) {
            return fail(
                Some("lock"),
                "lease_seconds",
                format!("{} is out of range 2..=3600", self.lock.lease_seconds),
            );
        }
        if self.tls == TlsMode::Acme {
            self.validate_https(text, path)?;
        }
        Ok(())
    }

    fn validate_https(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
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

    /// The DynamoDB `LockID` and the S3 lock object name both derive from this.
    pub fn lock_id(&self) -> String {
        format!("{}/{}", self.state.bucket, self.state.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
region = "us-east-1"
app = "churn"
instance_type = "t3.micro"
api_port = 8080

[ami]
owner = "099720109477"
name = "ubuntu/images/*"

[state]
bucket = "churn-state"
key = "deployer.json"

[lock]
table = "churn-locks"

[artifacts]
bucket = "churn-artifacts"
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("deploy.toml"))
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.ssh_cidr, None);
        assert_eq!(c.lock.backend, LockBackend::Dynamodb);
        assert_eq!(c.lock.lease_seconds, 30);
        assert_eq!(c.lock_id(), "churn-state/deployer.json");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let t = GOOD.replace("api_port = 8080", "api_port = \"http\"");
        let e = parse(&t).expect_err("refused").to_string();
        assert!(e.contains("line 5"), "{e}");
        assert!(e.contains("key `api_port`"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let t = GOOD.replace("[lock]\n", "[lock]\ntabel = \"x\"\n");
        let e = parse(&t).expect_err("refused").to_string();
        assert!(e.contains("line 16"), "{e}");
        assert!(e.contains("tabel"), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let t = GOOD.replace(
            "api_port = 8080",
            "api_port = 8080\nssh_cidr = \"0.0.0.0/0\"",
        );
        let e = parse(&t).expect_err("refused").to_string();
        assert!(e.contains("line 6, key `ssh_cidr`"), "{e}");

        let t = GOOD.replace("bucket = \"churn-artifacts\"", "bucket = \"Bad_Bucket\"");
        let e = parse(&t).expect_err("refused").to_string();
        assert!(e.contains("line 19, key `bucket`"), "{e}");

        let t = GOOD.replace("owner = \"099720109477\"\n", "");
        let e = parse(&t).expect_err("refused").to_string();
        assert!(e.contains("key `owner`"), "{e}");
    }

    #[test]
    fn tls_is_off_by_default_and_its_settings_are_checked() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.tls, TlsMode::Off);
        assert_eq!(c.https, HttpsConfig::default());
        let on = GOOD.replace("api_port = 8080\n", "api_port = 8080\ntls = \"acme\"\n")
            + "\n[https]\nport = 8443\nhttp_mode = \"redirect\"\n";
        let c = parse(&on).expect("valid");
        assert_eq!(c.tls, TlsMode::Acme);
        assert_eq!(c.https.port, 8443);
        assert_eq!(c.https.challenge_port, 80);
        assert_eq!(c.https.http_mode, HttpMode::Redirect);
        assert_eq!(c.https.acme_directory, LETS_ENCRYPT_PRODUCTION);

        let e = parse(&on.replace("port = 8443", "port = 8080"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("line 23, key `port`"), "{e}");
        assert!(e.starts_with("deploy.toml, "), "{e}");
        let e = parse(&(on.clone() + "acme_directory = \"http://ca.example/dir\"\n"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("key `acme_directory`: not an https://"), "{e}");
        let e = parse(&(on.clone() + "kms_key_id = \"alias/x\"\n"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("key `kms_key_id`"), "{e}");
        let e = parse(&(on.clone() + "challenge_port = 8443\n"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("key `challenge_port`"), "{e}");
        let e = parse(&on.replace("acme", "letsencrypt"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("line 6, key `tls`"), "{e}");
        // Off: [https] is not checked (it may be kept for later).
        parse(
            &on.replace("tls = \"acme\"\n", "")
                .replace("port = 8443", "port = 8080"),
        )
        .expect("off ignores [https]");
    }

    #[test]
    fn syntax_error_names_line() {
        let t = GOOD.replace("app = \"churn\"", "app = churn");
        let e = parse(&t).expect_err("refused");
        assert_eq!(e.line(), Some(3), "{e}");
    }

    #[test]
    fn example_file_is_valid_and_documents_every_key() {
        // include_str! (not a path from env!): cargo rebuilds when the file changes, and
        // a build cached from another checkout reads this checkout's file.
        let path = Path::new("deploy.example.toml");
        let text = include_str!("../../../deploy.example.toml");
        Config::parse(text, path).expect("the example is valid");
        for key in [
            "region",
            "app",
            "instance_type",
            "api_port",
            "ssh_cidr",
            "vpc_cidr",
            "subnet_cidr",
            "availability_zone",
            "root_volume_gib",
            "[ami]",
            "id",
            "owner",
            "name",
            "[state]",
            "bucket",
            "key",
            "[lock]",
            "backend",
            "table",
            "lease_seconds",
            "[artifacts]",
            "tls",
            "[https]",
            "port",
            "challenge_port",
            "acme_directory",
            "acme_contact",
            "http_mode",
            "kms_key_id",
            "roots",
            "acme_directory_root",
            "check_interval_seconds",
        ] {
            assert!(
                text.contains(key),
                "deploy.example.toml does not mention {key}"
            );
        }
    }
}
