//! `deploy.toml`: what the deployer provisions and where it keeps its state.
//!
//! Every key is documented in `deploy.example.toml` at the repository root. A broken
//! file is refused with the file, the line and the key that is wrong.

mod checks;
mod front;
mod https;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use checks::parse_cidr;
use checks::{cidr_contains, find_key, invalid, valid_bucket, valid_name};
pub use front::{CanaryConfig, Front, NlbConfig};
pub use https::{HttpMode, HttpsConfig, LETS_ENCRYPT_PRODUCTION, TlsMode};

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
    /// What holds the fixed address: `eip` (the default: the live instance holds the
    /// Elastic IP) or `nlb` (a Network Load Balancer holds one per zone).
    #[serde(default)]
    pub front: Front,
    /// Instances per colour; more than 1 needs `front = "nlb"`.
    #[serde(default = "front::default_instances_per_color")]
    pub instances_per_color: u32,
    /// The balancer's settings (`[nlb]`), read when `front = "nlb"`; defaults when absent.
    #[serde(default)]
    pub nlb: NlbConfig,
    /// The canary's soak and threshold (`[canary]`); defaults when absent.
    #[serde(default)]
    pub canary: CanaryConfig,
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
        self.validate_front(text, path)?;
        Ok(())
    }

    /// The DynamoDB `LockID` and the S3 lock object name both derive from this.
    pub fn lock_id(&self) -> String {
        format!("{}/{}", self.state.bucket, self.state.key)
    }
}

#[cfg(test)]
mod tests;
