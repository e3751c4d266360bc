//! `aws_lb_target_group.blue` / `.green` (`front = "nlb"`): each colour's instances
//! behind the balancer, TCP on `api_port`, health-checked over HTTP on `/readyz` with
//! `[nlb]`'s interval and thresholds, drained for `[nlb] deregistration_delay_seconds`.
//! Fixed names (`<app>-blue`, `<app>-green`), found by name. Which instances are
//! registered is the release's business, not the plan's.
//!
//! A group still used by a listener being deleted is refused (`ResourceInUse`): `delete`
//! retries it for up to [`delete_bound::TARGET_GROUP`], as terraform-provider-aws does.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::types::{
    ProtocolEnum, Tag, TargetGroup, TargetGroupAttribute, TargetTypeEnum,
};
use serde_json::{Value, json};

use super::{
    Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while,
    elb_listings, parent_id, str_value, tags,
};
use crate::aws::{AwsError, delete_bound, or_absent};
use crate::config::{Config, Front};
use crate::state::Color;

const DEREGISTRATION: &str = "deregistration_delay.timeout_seconds";

/// The target group of `color`: `<app>-blue`, `<app>-green` (ELB names: 32 characters).
pub fn target_group_name(cfg: &Config, color: Color) -> String {
    let app: String = cfg.app.chars().take(26).collect();
    format!("{app}-{}", color.as_str())
}

fn color_of(kind: Kind) -> Color {
    if kind == Kind::TargetGroupGreen {
        Color::Green
    } else {
        Color::Blue
    }
}

/// The kind of `color`'s group.
pub(super) fn kind_of(color: Color) -> Kind {
    match color {
        Color::Blue => Kind::TargetGroupBlue,
        Color::Green => Kind::TargetGroupGreen,
    }
}

/// The health check's timeout: half the interval, 2 to 10 s (AWS NLB: 2..=120, and
/// not longer than the interval).
fn timeout(cfg: &Config) -> i32 {
    (cfg.nlb.health_check_interval_seconds / 2).clamp(2, 10) as i32
}

/// The tags an ELBv2 resource of `kind` is created with.
pub(super) fn elb_tags(cfg: &Config, kind: Kind) -> Vec<Tag> {
    tags::stack_tags(cfg, kind)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

macro_rules! colour_group {
    ($name:ident, $kind:expr) => {
        pub(super) struct $name;

        #[async_trait]
        impl Resource for $name {
            fn only_with(&self) -> Option<Front> {
                Some(Front::Nlb)
            }
            fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
                wanted(cfg, $kind, known)
            }
            async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
                read(s, $kind, id).await
            }
            async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
                let name = target_group_name(s.cfg, color_of($kind));
                Ok(elb_listings::target_groups(s, $kind)
                    .await?
                    .iter()
                    .filter(|g| g.target_group_name() == Some(name.as_str()))
                    .filter_map(|g| g.target_group_arn().map(str::to_string))
                    .collect())
            }
            async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
                create(s, $kind, ids).await
            }
            async fn update(
                &self,
                s: &Stack<'_>,
                id: &str,
                change: &Change<'_>,
            ) -> Result<(), AwsError> {
                update(s, $kind, id, change).await
            }
            async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
                delete_while(
                    $kind,
                    "DeleteTargetGroup",
                    &["ResourceInUse"],
                    delete_bound::TARGET_GROUP,
                    || {
                        s.clients
                            .elb
                            .delete_target_group()
                            .target_group_arn(id)
                            .send()
                    },
                )
                .await
            }
        }
    };
}

colour_group!(TargetGroupBlue, Kind::TargetGroupBlue);
colour_group!(TargetGroupGreen, Kind::TargetGroupGreen);

fn wanted(cfg: &Config, kind: Kind, known: &Known) -> Vec<Want> {
    let n = &cfg.nlb;
    let num = |v: u32| Attr::Known(json!(v));
    vec![
        Want::replace("name", Attr::text(&target_group_name(cfg, color_of(kind)))),
        Want::replace("protocol", Attr::text("TCP")),
        Want::replace("port", Attr::Known(json!(cfg.api_port))),
        Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
        Want::replace("target_type", Attr::text("instance")),
        Want::in_place("health_check_protocol", Attr::text("HTTP")),
        Want::in_place("health_check_path", Attr::text("/readyz")),
        Want::in_place(
            "health_check_interval_seconds",
            num(n.health_check_interval_seconds),
        ),
        Want::in_place("healthy_threshold", num(n.healthy_threshold)),
        Want::in_place("unhealthy_threshold", num(n.unhealthy_threshold)),
        Want::in_place(
            "deregistration_delay_seconds",
            num(n.deregistration_delay_seconds),
        ),
    ]
}

/// One group by ARN: from the refresh's listing, else `DescribeTargetGroups`.
async fn describe(s: &Stack<'_>, kind: Kind, id: &str) -> Result<Option<TargetGroup>, AwsError> {
    if s.snapshot().is_some()
        && let Some(g) = elb_listings::target_groups(s, kind)
            .await?
            .into_iter()
            .find(|g| g.target_group_arn() == Some(id))
    {
        return Ok(Some(g));
    }
    let _permit = s.permit().await;
    let out = s
        .clients
        .elb
        .describe_target_groups()
        .target_group_arns(id)
        .send()
        .await;
    Ok(or_absent(out, &kind.address(), "DescribeTargetGroups")?
        .and_then(|o| o.target_groups.and_then(|v| v.into_iter().next())))
}

async fn read(s: &Stack<'_>, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
    let Some(g) = describe(s, kind, id).await? else {
        return Ok(None);
    };
    // Its attributes: one call per group (ELBv2 has no batch for them).
    let out = {
        let _permit = s.permit().await;
        s.clients
            .elb
            .describe_target_group_attributes()
            .target_group_arn(id)
            .send()
            .await
    };
    let Some(attrs) = or_absent(out, &kind.address(), "DescribeTargetGroupAttributes")? else {
        return Ok(None);
    };
    let delay = attrs
        .attributes()
        .iter()
        .find(|a| a.key() == Some(DEREGISTRATION))
        .and_then(|a| a.value())
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(Value::Null, |v| json!(v));
    let num = |v: Option<i32>| v.map_or(Value::Null, |v| json!(v));
    Ok(Some(Actual::from([
        ("name".into(), str_value(g.target_group_name())),
        (
            "protocol".into(),
            str_value(g.protocol().map(|p| p.as_str())),
        ),
        ("port".into(), num(g.port())),
        ("vpc_id".into(), str_value(g.vpc_id())),
        (
            "target_type".into(),
            str_value(g.target_type().map(|t| t.as_str())),
        ),
        (
            "health_check_protocol".into(),
            str_value(g.health_check_protocol().map(|p| p.as_str())),
        ),
        ("health_check_path".into(), str_value(g.health_check_path())),
        (
            "health_check_interval_seconds".into(),
            num(g.health_check_interval_seconds()),
        ),
        ("healthy_threshold".into(), num(g.healthy_threshold_count())),
        (
            "unhealthy_threshold".into(),
            num(g.unhealthy_threshold_count()),
        ),
        ("deregistration_delay_seconds".into(), delay),
    ])))
}

async fn create(s: &Stack<'_>, kind: Kind, ids: &Ids) -> Result<String, AwsError> {
    let cfg = s.cfg;
    let n = &cfg.nlb;
    let out = s
        .clients
        .elb
        .create_target_group()
        .name(target_group_name(cfg, color_of(kind)))
        .protocol(ProtocolEnum::Tcp)
        .port(i32::from(cfg.api_port))
        .vpc_id(parent_id(ids, kind, Kind::Vpc)?)
        .target_type(TargetTypeEnum::Instance)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_path("/readyz")
        .health_check_port("traffic-port")
        .health_check_interval_seconds(n.health_check_interval_seconds as i32)
        .health_check_timeout_seconds(timeout(cfg))
        .healthy_threshold_count(n.healthy_threshold as i32)
        .unhealthy_threshold_count(n.unhealthy_threshold as i32)
        .set_tags(Some(elb_tags(cfg, kind)))
        .send()
        .await
        .map_err(|e| AwsError::new(kind.address(), "CreateTargetGroup", e))?;
    let arn = created_id(
        kind,
        "CreateTargetGroup",
        out.target_groups()
            .first()
            .and_then(|g| g.target_group_arn()),
    )?;
    set_deregistration_delay(s, kind, &arn).await?;
    Ok(arn)
}

async fn set_deregistration_delay(s: &Stack<'_>, kind: Kind, arn: &str) -> Result<(), AwsError> {
    s.clients
        .elb
        .modify_target_group_attributes()
        .target_group_arn(arn)
        .attributes(
            TargetGroupAttribute::builder()
                .key(DEREGISTRATION)
                .value(s.cfg.nlb.deregistration_delay_seconds.to_string())
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::new(kind.address(), "ModifyTargetGroupAttributes", e))?;
    Ok(())
}

async fn update(s: &Stack<'_>, kind: Kind, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
    let n = &s.cfg.nlb;
    match change.attr {
        "deregistration_delay_seconds" => set_deregistration_delay(s, kind, id).await,
        "health_check_protocol"
        | "health_check_path"
        | "health_check_interval_seconds"
        | "healthy_threshold"
        | "unhealthy_threshold" => {
            s.clients
                .elb
                .modify_target_group()
                .target_group_arn(id)
                .health_check_protocol(ProtocolEnum::Http)
                .health_check_path("/readyz")
                .health_check_port("traffic-port")
                .health_check_interval_seconds(n.health_check_interval_seconds as i32)
                .health_check_timeout_seconds(timeout(s.cfg))
                .healthy_threshold_count(n.healthy_threshold as i32)
                .unhealthy_threshold_count(n.unhealthy_threshold as i32)
                .send()
                .await
                .map_err(|e| AwsError::new(kind.address(), "ModifyTargetGroup", e))?;
            Ok(())
        }
        _ => Err(change.not_in_place()),
    }
}
