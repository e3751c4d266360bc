//! The balancer side's reads (`front = "nlb"`): within a refresh, each type listed once
//! and kept in the snapshot, as the EC2 types are; outside one, one call per read.
//!
//! - the stack's balancer: `DescribeLoadBalancers` by its fixed name ([`lb_name`]);
//! - its target groups: `DescribeTargetGroups`, every page, kept by their fixed names;
//! - its listeners: `DescribeListeners` of the stack's balancer.
//!
//! ELBv2 has no tag filter on its describe calls: its resources are found by name,
//! like the IAM ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticloadbalancingv2::types::{Listener, LoadBalancer, TargetGroup};
use tokio::sync::OnceCell;

use super::load_balancer::lb_name;
use super::target_group::target_group_name;
use super::{Kind, Stack};
use crate::aws::{AwsError, or_absent};
use crate::state::Color;

/// What one refresh has listed of the balancer side.
#[derive(Debug, Default)]
pub(crate) struct ElbListings {
    load_balancers: OnceCell<Vec<LoadBalancer>>,
    target_groups: OnceCell<Vec<TargetGroup>>,
    /// By balancer ARN.
    listeners: Mutex<HashMap<String, Arc<OnceCell<Vec<Listener>>>>>,
}

/// The stack's balancer (by its name), if it exists.
pub(super) async fn load_balancers(
    s: &Stack<'_>,
    kind: Kind,
) -> Result<Vec<LoadBalancer>, AwsError> {
    let call = || async {
        let _permit = s.permit().await;
        let out = s
            .clients
            .elb
            .describe_load_balancers()
            .names(lb_name(s.cfg))
            .send()
            .await;
        Ok::<_, AwsError>(
            or_absent(out, &kind.address(), "DescribeLoadBalancers")?
                .map(|o| o.load_balancers.unwrap_or_default())
                .unwrap_or_default(),
        )
    };
    match s.snapshot() {
        Some(snap) => Ok(snap.elb.load_balancers.get_or_try_init(call).await?.clone()),
        None => call().await,
    }
}

/// The stack's target groups (by their names: blue's and green's).
pub(super) async fn target_groups(s: &Stack<'_>, kind: Kind) -> Result<Vec<TargetGroup>, AwsError> {
    let names = [Color::Blue, Color::Green].map(|c| target_group_name(s.cfg, c));
    let call = || async {
        let _permit = s.permit().await;
        let mut pages = s
            .clients
            .elb
            .describe_target_groups()
            .into_paginator()
            .send();
        let mut ours = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::new(kind.address(), "DescribeTargetGroups", e))?;
            ours.extend(
                page.target_groups
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|g| {
                        g.target_group_name()
                            .is_some_and(|n| names.iter().any(|w| w == n))
                    }),
            );
        }
        Ok::<_, AwsError>(ours)
    };
    match s.snapshot() {
        Some(snap) => Ok(snap.elb.target_groups.get_or_try_init(call).await?.clone()),
        None => call().await,
    }
}

/// The listeners of the balancer `lb`.
pub(super) async fn listeners(
    s: &Stack<'_>,
    kind: Kind,
    lb: &str,
) -> Result<Vec<Listener>, AwsError> {
    let call = || async {
        let _permit = s.permit().await;
        let out = s
            .clients
            .elb
            .describe_listeners()
            .load_balancer_arn(lb)
            .send()
            .await;
        Ok::<_, AwsError>(
            or_absent(out, &kind.address(), "DescribeListeners")?
                .map(|o| o.listeners.unwrap_or_default())
                .unwrap_or_default(),
        )
    };
    match s.snapshot() {
        Some(snap) => {
            let cell = {
                let mut by = snap.elb.listeners.lock().unwrap_or_else(|e| e.into_inner());
                by.entry(lb.to_string()).or_default().clone()
            };
            Ok(cell.get_or_try_init(call).await?.clone())
        }
        None => call().await,
    }
}
