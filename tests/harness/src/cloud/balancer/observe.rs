//! What the stand-in reads of the emulator each tick: active network balancers with
//! their addresses and listeners, and the target groups those forward to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{ActionTypeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum};

use super::check::HealthCheck;

/// What the emulator holds, as one tick of the runner reads it.
#[derive(Debug, Default, Clone)]
pub(crate) struct View {
    /// Active network balancers.
    pub(crate) balancers: Vec<BalancerView>,
    /// Every target group a listener of an active balancer forwards to, by ARN.
    pub(crate) groups: BTreeMap<String, GroupView>,
}

#[derive(Debug, Clone)]
pub(crate) struct BalancerView {
    pub(crate) arn: String,
    /// The addresses of its subnet mappings (loopback only are used).
    pub(crate) addresses: Vec<Ipv4Addr>,
    /// Listener port -> (target group ARN, weight) of its forward action.
    pub(crate) listeners: BTreeMap<u16, Vec<(String, u32)>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupView {
    pub(crate) check: HealthCheck,
    /// Registered targets (not draining): instance id and port.
    pub(crate) targets: Vec<(String, u16)>,
}

fn sdk_err<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
}

/// Reads the emulator's balancers, listeners, target groups and registrations.
pub(crate) async fn observe(client: &elb::Client) -> Result<View, String> {
    let out = client
        .describe_load_balancers()
        .send()
        .await
        .map_err(sdk_err("DescribeLoadBalancers"))?;
    let mut view = View::default();
    let mut used: BTreeSet<String> = BTreeSet::new();
    for lb in out.load_balancers() {
        let active = lb.state().and_then(|s| s.code()) == Some(&LoadBalancerStateEnum::Active);
        if lb.r#type() != Some(&LoadBalancerTypeEnum::Network) || !active {
            continue;
        }
        let Some(arn) = lb.load_balancer_arn() else {
            continue;
        };
        let addresses = lb
            .availability_zones()
            .iter()
            .flat_map(|z| z.load_balancer_addresses())
            .filter_map(|a| a.ip_address()?.parse().ok())
            .collect();
        let listeners_out = client
            .describe_listeners()
            .load_balancer_arn(arn)
            .send()
            .await
            .map_err(sdk_err("DescribeListeners"))?;
        let mut listeners = BTreeMap::new();
        for l in listeners_out.listeners() {
            let Some(port) = l.port().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let Some(forward) = l
                .default_actions()
                .iter()
                .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
            else {
                continue;
            };
            let groups: Vec<(String, u32)> = match forward.forward_config() {
                Some(cfg) if !cfg.target_groups().is_empty() => cfg
                    .target_groups()
                    .iter()
                    .filter_map(|g| {
                        let w = g.weight().unwrap_or(1).max(0) as u32;
                        Some((g.target_group_arn()?.to_string(), w))
                    })
                    .collect(),
                _ => forward
                    .target_group_arn()
                    .map(|a| vec![(a.to_string(), 1)])
                    .unwrap_or_default(),
            };
            used.extend(groups.iter().map(|(a, _)| a.clone()));
            listeners.insert(port, groups);
        }
        view.balancers.push(BalancerView {
            arn: arn.to_string(),
            addresses,
            listeners,
        });
    }
    if used.is_empty() {
        return Ok(view);
    }
    let groups = client
        .describe_target_groups()
        .set_target_group_arns(Some(used.iter().cloned().collect()))
        .send()
        .await
        .map_err(sdk_err("DescribeTargetGroups"))?;
    for g in groups.target_groups() {
        let Some(arn) = g.target_group_arn() else {
            continue;
        };
        let http = matches!(
            g.health_check_protocol().map(|p| p.as_str()),
            Some("HTTP") | Some("HTTPS")
        );
        let secs = |s: Option<i32>, default: u64| {
            Duration::from_secs(s.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
        };
        let check = HealthCheck {
            http_path: http.then(|| g.health_check_path().unwrap_or("/").to_string()),
            port: g.health_check_port().and_then(|p| p.parse().ok()),
            interval: secs(g.health_check_interval_seconds(), 30),
            timeout: secs(g.health_check_timeout_seconds(), 10),
            healthy_threshold: g.healthy_threshold_count().unwrap_or(5).max(1) as u32,
            unhealthy_threshold: g.unhealthy_threshold_count().unwrap_or(2).max(1) as u32,
        };
        let health = client
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(sdk_err("DescribeTargetHealth"))?;
        let targets = health
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str());
                !matches!(state, Some("draining") | Some("unused"))
            })
            .filter_map(|d| {
                let t = d.target()?;
                let port = t.port().and_then(|p| u16::try_from(p).ok())?;
                Some((t.id()?.to_string(), port))
            })
            .collect();
        view.groups
            .insert(arn.to_string(), GroupView { check, targets });
    }
    Ok(view)
}
