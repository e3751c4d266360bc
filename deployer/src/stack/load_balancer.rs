//! `aws_lb.api` (`front = "nlb"`): the Network Load Balancer that holds the fixed
//! addresses, internet-facing, with one subnet mapping per zone, each holding one of
//! the deployer's Elastic IPs: (`aws_subnet.main`, `aws_eip.api`) and (`aws_subnet.b`,
//! `aws_eip.b`). Fixed name (`<app>-nlb`), found by name.
//!
//! - **Create** waits until the balancer is `active` (terraform-provider-aws: up to
//!   [`LOAD_BALANCER_ACTIVE`]).
//! - **Delete** waits until its network interfaces ("ELB net/<name>/<id>") are gone
//!   (up to [`delete_bound::LOAD_BALANCER_INTERFACES`]): until then they hold its
//!   subnets and its Elastic IPs.
//! - **The switch from `front = "eip"`** keeps the fixed address: AWS refuses a mapping
//!   whose Elastic IP is associated, so while `aws_eip.api` is held by the live
//!   instance the balancer is created with zone b's mapping alone. Once the listener
//!   forwards to the live colour ([`move_fixed_address`], called by the listener's
//!   create, or by this resource's update when the listener already exists), the live
//!   instance is registered in its colour's group and waited healthy, `aws_eip.api` is
//!   disassociated from it and zone a's mapping is added (`SetSubnets`; a network
//!   balancer can gain subnets, never lose them).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2::types::{
    LoadBalancer as Lb, LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum,
    SubnetMapping, TargetDescription, TargetHealthStateEnum,
};
use serde_json::{Map, Value, json};

use super::target_group::{elb_tags, kind_of, target_group_name};
use super::{
    Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, created_id, elb_listings,
    str_value,
};
use crate::aws::{
    AwsError, Backoff, LOAD_BALANCER_ACTIVE, delete_bound, has_code, or_absent, poll_until_some,
    retry_while,
};
use crate::config::{Config, Front};

const KIND: Kind = Kind::LoadBalancer;

/// How long the live instance may take to turn healthy in its group during the switch.
const TARGET_HEALTHY: Duration = Duration::from_secs(10 * 60);

/// The balancer's name: `<app>-nlb` (ELB names: 32 characters).
pub fn lb_name(cfg: &Config) -> String {
    let app: String = cfg.app.chars().take(28).collect();
    format!("{app}-nlb")
}

/// The (subnet kind, Elastic IP kind) of each mapping, zone a first.
const MAPPINGS: [(Kind, Kind); 2] = [(Kind::Subnet, Kind::Eip), (Kind::SubnetB, Kind::EipB)];

pub(super) struct LoadBalancer;

#[async_trait]
impl Resource for LoadBalancer {
    fn only_with(&self) -> Option<Front> {
        Some(Front::Nlb)
    }

    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        let mut mappings = Map::new();
        let mut all_known = true;
        for (subnet, eip) in MAPPINGS {
            match (known.get(&subnet), known.get(&eip)) {
                (Some(Some(s)), Some(Some(e))) => {
                    mappings.insert(s.clone(), Value::String(e.clone()));
                }
                _ => all_known = false,
            }
        }
        vec![
            Want::replace("name", Attr::text(&lb_name(cfg))),
            Want::replace("type", Attr::text("network")),
            Want::replace("scheme", Attr::text("internet-facing")),
            Want::in_place_when(
                "subnet_mappings",
                if all_known {
                    Attr::Known(Value::Object(mappings))
                } else {
                    Attr::Unknown
                },
                only_adds_mappings,
            ),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        Ok(describe(s, id).await?.map(|lb| actual(&lb)))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        let name = lb_name(s.cfg);
        Ok(elb_listings::load_balancers(s, KIND)
            .await?
            .iter()
            .filter(|lb| lb.load_balancer_name() == Some(name.as_str()))
            .filter_map(|lb| lb.load_balancer_arn().map(str::to_string))
            .collect())
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let mut mappings = Vec::new();
        for (subnet, eip) in MAPPINGS {
            let subnet = super::parent_id(ids, KIND, subnet)?;
            let alloc = super::parent_id(ids, KIND, eip)?;
            if let Some(instance) = held_by_instance(s, &alloc).await? {
                tracing::info!(
                    "{}: the fixed address ({alloc}) is held by the live instance {instance}: \
                     the balancer starts without it; it moves onto the balancer once the \
                     listener forwards to the live colour",
                    KIND.address()
                );
                continue;
            }
            mappings.push(mapping(&subnet, &alloc));
        }
        let out = s
            .clients
            .elb
            .create_load_balancer()
            .name(lb_name(s.cfg))
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .set_subnet_mappings(Some(mappings))
            .set_tags(Some(elb_tags(s.cfg, KIND)))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateLoadBalancer", e))?;
        let arn = created_id(
            KIND,
            "CreateLoadBalancer",
            out.load_balancers()
                .first()
                .and_then(|lb| lb.load_balancer_arn()),
        )?;
        poll_until_some(
            Backoff::for_at_most(LOAD_BALANCER_ACTIVE),
            &KIND.address(),
            "DescribeLoadBalancers",
            "active",
            || async {
                let lb = describe(s, &arn).await?;
                Ok(lb
                    .and_then(|lb| lb.state().and_then(|st| st.code().cloned()))
                    .filter(|c| *c == LoadBalancerStateEnum::Active))
            },
        )
        .await?;
        Ok(arn)
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "subnet_mappings" {
            return Err(change.not_in_place());
        }
        let listeners = elb_listings::listeners(s, KIND, id).await?;
        if listeners.is_empty() {
            // The listener's create moves the address once it forwards.
            tracing::info!(
                "{}: a mapping is missing; it is added once the listener forwards",
                KIND.address()
            );
            return Ok(());
        }
        let wanted: Vec<(String, String)> = change
            .value
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(s, e)| Some((s.clone(), e.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        move_fixed_address(s, id, &wanted).await
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let out = s
            .clients
            .elb
            .delete_load_balancer()
            .load_balancer_arn(id)
            .send()
            .await;
        or_absent(out, &KIND.address(), "DeleteLoadBalancer")?;
        // Its interfaces outlive it for a while, holding its subnets and addresses.
        let description = interface_description(s.cfg, id);
        poll_until_some(
            Backoff::for_at_most(delete_bound::LOAD_BALANCER_INTERFACES),
            &KIND.address(),
            "DescribeNetworkInterfaces",
            "without its network interfaces",
            || async {
                let out = s
                    .clients
                    .ec2
                    .describe_network_interfaces()
                    .filters(
                        Filter::builder()
                            .name("description")
                            .values(&description)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| AwsError::new(KIND.address(), "DescribeNetworkInterfaces", e))?;
                Ok(out.network_interfaces().is_empty().then_some(()))
            },
        )
        .await
    }
}

/// "ELB net/<name>/<id>": the description of the balancer `arn`'s interfaces.
/// A network load balancer's mappings change in place only by gaining subnets
/// (`SetSubnets`, as when the fixed address moves onto it): AWS cannot give an
/// existing mapping another Elastic IP or drop a zone, so any other change, or one
/// whose values are not known yet (a replaced subnet or address), replaces the
/// balancer (as terraform-provider-aws's CustomizeDiff for `subnet_mapping` does).
fn only_adds_mappings(before: &Value, after: &Attr) -> bool {
    let (Some(before), Attr::Known(Value::Object(after))) = (before.as_object(), after) else {
        return false;
    };
    before
        .iter()
        .all(|(subnet, alloc)| after.get(subnet) == Some(alloc))
}

fn interface_description(cfg: &Config, arn: &str) -> String {
    let id = arn.rsplit('/').next().unwrap_or_default();
    format!("ELB net/{}/{id}", lb_name(cfg))
}

fn mapping(subnet: &str, alloc: &str) -> SubnetMapping {
    SubnetMapping::builder()
        .subnet_id(subnet)
        .allocation_id(alloc)
        .build()
}

/// The balancer `id`: from the refresh's listing, else `DescribeLoadBalancers`.
async fn describe(s: &Stack<'_>, id: &str) -> Result<Option<Lb>, AwsError> {
    if s.snapshot().is_some()
        && let Some(lb) = elb_listings::load_balancers(s, KIND)
            .await?
            .into_iter()
            .find(|lb| lb.load_balancer_arn() == Some(id))
    {
        return Ok(Some(lb));
    }
    let _permit = s.permit().await;
    let out = s
        .clients
        .elb
        .describe_load_balancers()
        .load_balancer_arns(id)
        .send()
        .await;
    Ok(or_absent(out, &KIND.address(), "DescribeLoadBalancers")?
        .and_then(|o| o.load_balancers.and_then(|v| v.into_iter().next())))
}

fn actual(lb: &Lb) -> Actual {
    let mut mappings = Map::new();
    let mut ips = Vec::new();
    for zone in lb.availability_zones() {
        let alloc = zone
            .load_balancer_addresses()
            .iter()
            .find_map(|a| a.allocation_id());
        for a in zone.load_balancer_addresses() {
            if let Some(ip) = a.ip_address() {
                ips.push(json!(ip));
            }
        }
        if let Some(subnet) = zone.subnet_id() {
            mappings.insert(subnet.to_string(), str_value(alloc));
        }
    }
    Actual::from([
        ("name".into(), str_value(lb.load_balancer_name())),
        ("type".into(), str_value(lb.r#type().map(|t| t.as_str()))),
        ("scheme".into(), str_value(lb.scheme().map(|t| t.as_str()))),
        ("subnet_mappings".into(), Value::Object(mappings)),
        ("public_ips".into(), Value::Array(ips)),
        ("dns_name".into(), str_value(lb.dns_name())),
        (
            "state".into(),
            str_value(lb.state().and_then(|st| st.code()).map(|c| c.as_str())),
        ),
    ])
}

/// The instance the Elastic IP `alloc` is associated with, if any.
async fn held_by_instance(s: &Stack<'_>, alloc: &str) -> Result<Option<String>, AwsError> {
    let out = s
        .clients
        .ec2
        .describe_addresses()
        .allocation_ids(alloc)
        .send()
        .await;
    Ok(
        or_absent(out, &KIND.address(), "DescribeAddresses")?.and_then(|o| {
            o.addresses().first().and_then(|a| {
                a.instance_id()
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
            })
        }),
    )
}

/// Brings the balancer `lb` to the mappings `wanted` (subnet, allocation id), the
/// switch's last step: an Elastic IP still held by the live instance (`aws_eip.api`
/// after `front = "eip"`) is handed over without a gap: the instance is registered in
/// the live colour's group, waited healthy there, then the address is disassociated
/// from it and mapped onto the balancer (`SetSubnets`).
pub(super) async fn move_fixed_address(
    s: &Stack<'_>,
    lb: &str,
    wanted: &[(String, String)],
) -> Result<(), AwsError> {
    let addr = KIND.address();
    let Some(current) = describe(s, lb).await? else {
        return Err(AwsError::other(
            &addr,
            "SetSubnets",
            "the balancer is gone".into(),
        ));
    };
    let mapped = actual(&current);
    let mapped = mapped.get("subnet_mappings").cloned().unwrap_or_default();
    let missing: Vec<&(String, String)> = wanted
        .iter()
        .filter(|(subnet, alloc)| mapped.get(subnet).and_then(Value::as_str) != Some(alloc))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let elb = &s.clients.elb;
    let ec2 = &s.clients.ec2;
    for (_, alloc) in &missing {
        let Some(instance) = held_by_instance(s, alloc).await? else {
            continue;
        };
        let color = s.live_color();
        let group = target_group_name(s.cfg, color);
        let tg = elb
            .describe_target_groups()
            .names(&group)
            .send()
            .await
            .map_err(|e| AwsError::new(kind_of(color).address(), "DescribeTargetGroups", e))?;
        let Some(tg) = tg
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
        else {
            return Err(AwsError::other(
                &addr,
                "DescribeTargetGroups",
                format!("no target group {group}"),
            ));
        };
        tracing::info!(
            "{addr}: registering the live instance {instance} in {group}, then moving the fixed address onto the balancer"
        );
        let target = TargetDescription::builder()
            .id(&instance)
            .port(i32::from(s.cfg.api_port))
            .build();
        elb.register_targets()
            .target_group_arn(tg)
            .targets(target.clone())
            .send()
            .await
            .map_err(|e| AwsError::new(kind_of(color).address(), "RegisterTargets", e))?;
        poll_until_some(
            Backoff::for_at_most(TARGET_HEALTHY),
            &kind_of(color).address(),
            "DescribeTargetHealth",
            &format!("healthy ({instance})"),
            || async {
                let out = elb
                    .describe_target_health()
                    .target_group_arn(tg)
                    .targets(target.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        AwsError::new(kind_of(color).address(), "DescribeTargetHealth", e)
                    })?;
                Ok(out
                    .target_health_descriptions()
                    .iter()
                    .any(|d| {
                        d.target_health().and_then(|h| h.state())
                            == Some(&TargetHealthStateEnum::Healthy)
                    })
                    .then_some(()))
            },
        )
        .await?;
        let out = ec2
            .describe_addresses()
            .allocation_ids(alloc.as_str())
            .send()
            .await;
        let held = or_absent(out, &addr, "DescribeAddresses")?;
        for a in held.iter().flat_map(|o| o.addresses()) {
            if let Some(assoc) = a.association_id() {
                tracing::info!("{addr}: disassociating {alloc} from {instance}");
                let out = ec2
                    .disassociate_address()
                    .association_id(assoc)
                    .send()
                    .await;
                or_absent(out, &addr, "DisassociateAddress")?;
            }
        }
    }
    // Every mapping, the existing ones included (SetSubnets replaces the list). A
    // disassociation can take a moment to be seen: "already associated" is retried.
    let all: Vec<SubnetMapping> = wanted.iter().map(|(s, a)| mapping(s, a)).collect();
    retry_while(
        Backoff::for_at_most(Duration::from_secs(2 * 60)).logged(),
        |e| has_code(e, &["InvalidConfigurationRequest"]) && e.message.contains("associated"),
        || async {
            elb.set_subnets()
                .load_balancer_arn(lb)
                .set_subnet_mappings(Some(all.clone()))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "SetSubnets", e))
        },
    )
    .await?;
    tracing::info!("{addr}: the balancer holds every fixed address");
    Ok(())
}
