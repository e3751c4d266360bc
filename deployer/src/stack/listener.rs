//! `aws_lb_listener.api` (`front = "nlb"`): TCP on `api_port`, forwarding to both
//! colours' target groups by weight. Found through its balancer.
//!
//! The weights are the release's (`release/`: cutover, canary, rollback change them
//! with `ModifyListener`): the stack creates the listener forwarding everything to the
//! live colour (`Stack::with_live`, else blue) and never compares weights, so a plan
//! after a release shows no drift. Its create then finishes the switch from
//! `front = "eip"` (`load_balancer::move_fixed_address`).

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, Listener as ElbListener, ProtocolEnum,
    TargetGroupTuple,
};
use serde_json::{Map, Value, json};

use super::load_balancer::move_fixed_address;
use super::target_group::{elb_tags, kind_of};
use super::{
    Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, created_id, elb_listings,
    parent_id, str_value,
};
use crate::aws::{AwsError, or_absent};
use crate::config::{Config, Front};
use crate::state::Color;

const KIND: Kind = Kind::Listener;

pub(super) struct Listener;

/// The target groups' ARNs, sorted (the weights left out).
fn groups(known: &Known) -> Attr {
    match (
        known.get(&Kind::TargetGroupBlue),
        known.get(&Kind::TargetGroupGreen),
    ) {
        (Some(Some(b)), Some(Some(g))) => {
            let mut v = [b.clone(), g.clone()];
            v.sort();
            Attr::Known(json!(v))
        }
        _ => Attr::Unknown,
    }
}

/// Forward to blue and green, the live colour at weight 1, the other at 0.
fn forward(s: &Stack<'_>, ids: &Ids) -> Result<Action, AwsError> {
    let live = s.live_color();
    let mut cfg = ForwardActionConfig::builder();
    for color in [Color::Blue, Color::Green] {
        cfg = cfg.target_groups(
            TargetGroupTuple::builder()
                .target_group_arn(parent_id(ids, KIND, kind_of(color))?)
                .weight(i32::from(color == live))
                .build(),
        );
    }
    Ok(Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(cfg.build())
        .build())
}

#[async_trait]
impl Resource for Listener {
    fn only_with(&self) -> Option<Front> {
        Some(Front::Nlb)
    }

    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("load_balancer_arn", Attr::id_of(known, Kind::LoadBalancer)),
            Want::replace("protocol", Attr::text("TCP")),
            Want::replace("port", Attr::Known(json!(cfg.api_port))),
            Want::in_place("target_groups", groups(known)),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        // Within a refresh: among the stack's balancer's listeners, as listed.
        if s.snapshot().is_some() {
            for lb in elb_listings::load_balancers(s, KIND).await? {
                let Some(arn) = lb.load_balancer_arn() else {
                    continue;
                };
                if let Some(l) = elb_listings::listeners(s, KIND, arn)
                    .await?
                    .iter()
                    .find(|l| l.listener_arn() == Some(id))
                {
                    return Ok(Some(actual(l)));
                }
            }
        }
        let _permit = s.permit().await;
        let out = s
            .clients
            .elb
            .describe_listeners()
            .listener_arns(id)
            .send()
            .await;
        Ok(or_absent(out, &KIND.address(), "DescribeListeners")?
            .and_then(|o| o.listeners().first().map(actual)))
    }

    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        let Some(lb) = current.get(&Kind::LoadBalancer) else {
            return Ok(vec![]);
        };
        Ok(elb_listings::listeners(s, KIND, lb)
            .await?
            .iter()
            .filter_map(|l| l.listener_arn().map(str::to_string))
            .collect())
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let lb = parent_id(ids, KIND, Kind::LoadBalancer)?;
        let out = s
            .clients
            .elb
            .create_listener()
            .load_balancer_arn(&lb)
            .protocol(ProtocolEnum::Tcp)
            .port(i32::from(s.cfg.api_port))
            .default_actions(forward(s, ids)?)
            .set_tags(Some(elb_tags(s.cfg, KIND)))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateListener", e))?;
        let arn = created_id(
            KIND,
            "CreateListener",
            out.listeners().first().and_then(|l| l.listener_arn()),
        )?;
        // It forwards: a fixed address still held by the live instance moves now.
        let mut wanted = Vec::new();
        for (subnet, eip) in [(Kind::Subnet, Kind::Eip), (Kind::SubnetB, Kind::EipB)] {
            wanted.push((parent_id(ids, KIND, subnet)?, parent_id(ids, KIND, eip)?));
        }
        move_fixed_address(s, &lb, &wanted).await?;
        Ok(arn)
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "target_groups" {
            return Err(change.not_in_place());
        }
        // A group was replaced: forward to the new ones, the live colour at weight 1.
        let ids: Ids = [Color::Blue, Color::Green]
            .into_iter()
            .filter_map(|c| {
                let arn = elb_listings_group(change, c)?;
                Some((kind_of(c), arn))
            })
            .collect();
        s.clients
            .elb
            .modify_listener()
            .listener_arn(id)
            .default_actions(forward(s, &ids)?)
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "ModifyListener", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let out = s
            .clients
            .elb
            .delete_listener()
            .listener_arn(id)
            .send()
            .await;
        or_absent(out, &KIND.address(), "DeleteListener")?;
        Ok(())
    }
}

/// The wanted ARN of `color`'s group in a `target_groups` change (they are sorted, so
/// the name inside the ARN tells which is which: `targetgroup/<app>-blue/...`).
fn elb_listings_group(change: &Change<'_>, color: Color) -> Option<String> {
    let suffix = format!("-{}/", color.as_str());
    change
        .value
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|arn| arn.contains(&suffix))
        .map(str::to_string)
}

fn actual(l: &ElbListener) -> Actual {
    let mut arns = Vec::new();
    let mut weights = Map::new();
    for a in l.default_actions() {
        if let Some(f) = a.forward_config() {
            for t in f.target_groups() {
                if let Some(arn) = t.target_group_arn() {
                    arns.push(arn.to_string());
                    weights.insert(arn.to_string(), json!(t.weight().unwrap_or(1)));
                }
            }
        } else if let Some(arn) = a.target_group_arn() {
            arns.push(arn.to_string());
            weights.insert(arn.to_string(), json!(1));
        }
    }
    arns.sort();
    arns.dedup();
    Actual::from([
        ("load_balancer_arn".into(), str_value(l.load_balancer_arn())),
        (
            "protocol".into(),
            str_value(l.protocol().map(|p| p.as_str())),
        ),
        ("port".into(), l.port().map_or(Value::Null, |p| json!(p))),
        ("target_groups".into(), json!(arns)),
        // Read for the record, never compared: the release owns them.
        ("weights".into(), Value::Object(weights)),
    ])
}
