//! `front`, `instances_per_color`, `[nlb]` and `[canary]`: what holds the fixed address
//! (the live instance, or a Network Load Balancer in front of several per colour).

use std::path::Path;

use serde::Deserialize;

use super::checks::{cidr_contains, find_key, invalid, parse_cidr};
use super::{Config, ConfigError, TlsMode};

/// What holds the fixed address.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Front {
    /// One Elastic IP, moved onto the live colour's one instance at cutover.
    #[default]
    Eip,
    /// A Network Load Balancer with one Elastic IP per zone (`aws_eip.api` in zone a,
    /// `aws_eip.b` in zone b), forwarding by weight to the blue and green target groups.
    Nlb,
}

impl Front {
    pub fn as_str(self) -> &'static str {
        match self {
            Front::Eip => "eip",
            Front::Nlb => "nlb",
        }
    }
}

pub(super) fn default_instances_per_color() -> u32 {
    1
}

/// `[nlb]`: read when `front = "nlb"`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NlbConfig {
    /// CIDR of the second zone's public subnet (inside `vpc_cidr`, apart from
    /// `subnet_cidr`).
    #[serde(default = "default_subnet_b_cidr")]
    pub subnet_b_cidr: String,
    /// The second zone; absent: the first zone offering the instance type other than
    /// the main subnet's.
    #[serde(default)]
    pub availability_zone_b: Option<String>,
    /// Seconds between the target groups' health checks (AWS: 5..=300).
    #[serde(default = "default_interval")]
    pub health_check_interval_seconds: u32,
    /// Consecutive passes that make a target healthy (AWS: 2..=10).
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy (AWS: 2..=10).
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
    /// Connection draining: seconds a deregistered target keeps its connections
    /// (AWS: 0..=3600).
    #[serde(default = "default_deregistration_delay")]
    pub deregistration_delay_seconds: u32,
}

impl Default for NlbConfig {
    fn default() -> Self {
        NlbConfig {
            subnet_b_cidr: default_subnet_b_cidr(),
            availability_zone_b: None,
            health_check_interval_seconds: default_interval(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
            deregistration_delay_seconds: default_deregistration_delay(),
        }
    }
}

fn default_subnet_b_cidr() -> String {
    "10.42.2.0/24".into()
}
fn default_interval() -> u32 {
    10
}
fn default_threshold() -> u32 {
    3
}
fn default_deregistration_delay() -> u32 {
    30
}

/// `[canary]`: how a `--canary` release soaks before the rest of the traffic follows.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Seconds the canary weight holds before the full shift.
    #[serde(default = "default_soak")]
    pub soak_seconds: u64,
    /// The highest tolerated share of 5xx answers on the canary colour during the soak
    /// (0..=1); above it the release rolls back.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            soak_seconds: default_soak(),
            max_error_rate: default_max_error_rate(),
        }
    }
}

fn default_soak() -> u64 {
    300
}
fn default_max_error_rate() -> f64 {
    0.01
}

impl Config {
    pub(super) fn validate_front(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let fail = |section: Option<&str>, key: &str, message: String| {
            let offset = find_key(text, section, key).unwrap_or(0);
            Err(invalid(path, text, offset, Some(key), message))
        };
        if self.instances_per_color == 0 {
            return fail(
                None,
                "instances_per_color",
                "0 instances cannot serve: give 1 or more".into(),
            );
        }
        if self.instances_per_color > 1 && self.front != Front::Nlb {
            return fail(
                None,
                "instances_per_color",
                format!(
                    "{} instances per colour need front = \"nlb\" (one Elastic IP is held by one instance)",
                    self.instances_per_color
                ),
            );
        }
        if self.instances_per_color > 20 {
            return fail(
                None,
                "instances_per_color",
                format!("{} is out of range 1..=20", self.instances_per_color),
            );
        }
        let c = &self.canary;
        let s = Some("canary");
        if !(1..=86_400).contains(&c.soak_seconds) {
            return fail(
                s,
                "soak_seconds",
                format!("{} is out of range 1..=86400", c.soak_seconds),
            );
        }
        if !(0.0..=1.0).contains(&c.max_error_rate) {
            return fail(
                s,
                "max_error_rate",
                format!(
                    "{} is not a share between 0 and 1 (0.01 = 1%)",
                    c.max_error_rate
                ),
            );
        }
        if self.front != Front::Nlb {
            return Ok(());
        }
        if self.tls == TlsMode::Acme {
            return fail(
                None,
                "tls",
                "tls = \"acme\" with front = \"nlb\" is not supported yet: the certificate would \
                 have to name both balancer addresses; use tls = \"off\" or front = \"eip\""
                    .into(),
            );
        }
        let n = &self.nlb;
        let s = Some("nlb");
        let Some(b) = parse_cidr(&n.subnet_b_cidr) else {
            return fail(
                s,
                "subnet_b_cidr",
                format!("not an IPv4 CIDR: {:?}", n.subnet_b_cidr),
            );
        };
        // `validate` checked both before this runs.
        let vpc = parse_cidr(&self.vpc_cidr).unwrap_or((0, 0));
        let a = parse_cidr(&self.subnet_cidr).unwrap_or((0, 0));
        if !cidr_contains(vpc, b) {
            return fail(
                s,
                "subnet_b_cidr",
                format!(
                    "{} is not inside vpc_cidr {}",
                    n.subnet_b_cidr, self.vpc_cidr
                ),
            );
        }
        if cidr_contains(a, b) || cidr_contains(b, a) {
            return fail(
                s,
                "subnet_b_cidr",
                format!(
                    "{} overlaps subnet_cidr {}",
                    n.subnet_b_cidr, self.subnet_cidr
                ),
            );
        }
        if let Some(zb) = &n.availability_zone_b
            && self.availability_zone.as_deref() == Some(zb.as_str())
        {
            return fail(
                s,
                "availability_zone_b",
                format!("{zb} is the main subnet's zone: a balancer needs two zones"),
            );
        }
        if !(5..=300).contains(&n.health_check_interval_seconds) {
            return fail(
                s,
                "health_check_interval_seconds",
                format!(
                    "{} is out of range 5..=300",
                    n.health_check_interval_seconds
                ),
            );
        }
        for (key, v) in [
            ("healthy_threshold", n.healthy_threshold),
            ("unhealthy_threshold", n.unhealthy_threshold),
        ] {
            if !(2..=10).contains(&v) {
                return fail(s, key, format!("{v} is out of range 2..=10"));
            }
        }
        if n.deregistration_delay_seconds > 3600 {
            return fail(
                s,
                "deregistration_delay_seconds",
                format!(
                    "{} is out of range 0..=3600",
                    n.deregistration_delay_seconds
                ),
            );
        }
        Ok(())
    }
}
