//! `aws_subnet.main`: the public subnet of the VPC, and with `front = "nlb"`
//! `aws_subnet.b`, the balancer's second zone's (`[nlb] subnet_b_cidr`). Found by their
//! tags.
//!
//! Its zone is the configured `availability_zone`, else the first zone (sorted) that
//! offers the configured instance type (`DescribeInstanceTypeOfferings`): EC2's own
//! choice may not offer it, and every launch would then fail. Zone b is
//! `[nlb] availability_zone_b`, else the first zone offering the type other than the
//! main subnet's (a balancer needs two zones). A terminated instance's
//! interfaces keep the subnet busy for a while: `delete` retries `DependencyViolation`
//! for up to [`delete_bound::SUBNET`].

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while, parent_id,
    str_value, tags,
};
use crate::aws::{AwsError, delete_bound};
use crate::config::{Config, Front};

pub(super) struct Subnet;

/// `aws_subnet.b` (`front = "nlb"`).
pub(super) struct SubnetB;

/// The CIDR and the configured zone of `kind`.
fn cidr_and_zone(cfg: &Config, kind: Kind) -> (&str, Option<&str>) {
    match kind {
        Kind::SubnetB => (
            &cfg.nlb.subnet_b_cidr,
            cfg.nlb.availability_zone_b.as_deref(),
        ),
        _ => (&cfg.subnet_cidr, cfg.availability_zone.as_deref()),
    }
}

fn wanted(cfg: &Config, kind: Kind, known: &Known) -> Vec<Want> {
    let (cidr, zone) = cidr_and_zone(cfg, kind);
    let mut w = vec![
        Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
        Want::replace("cidr_block", Attr::text(cidr)),
    ];
    if let Some(az) = zone {
        w.push(Want::replace("availability_zone", Attr::text(az)));
    }
    w.push(tags::wanted(cfg, kind));
    w
}

#[async_trait]
impl Resource for SubnetB {
    fn only_with(&self) -> Option<Front> {
        Some(Front::Nlb)
    }
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        wanted(cfg, Kind::SubnetB, known)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::SubnetB, id).await
    }
    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::SubnetB).await
    }
    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::SubnetB, ids).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::SubnetB, id).await
    }
}

#[async_trait]
impl Resource for Subnet {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        wanted(cfg, Kind::Subnet, known)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::Subnet, id).await
    }
    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::Subnet).await
    }
    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::Subnet, ids).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::Subnet, id).await
    }
}

async fn read(s: &Stack<'_>, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
    {
        let Some(v) = describe_by_id!(
            s,
            kind,
            describe_subnets(subnet_ids = id),
            "DescribeSubnets",
            subnets,
            subnet_id
        ) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("vpc_id".into(), str_value(v.vpc_id())),
            ("cidr_block".into(), str_value(v.cidr_block())),
            ("availability_zone".into(), str_value(v.availability_zone())),
            ("tags".into(), tags::managed(v.tags())),
        ])))
    }
}

async fn find(s: &Stack<'_>, kind: Kind) -> Result<Vec<String>, AwsError> {
    {
        find_tagged!(
            s,
            kind,
            describe_subnets,
            "DescribeSubnets",
            subnets,
            subnet_id
        )
    }
}

async fn create(s: &Stack<'_>, kind: Kind, ids: &Ids) -> Result<String, AwsError> {
    {
        let vpc = parent_id(ids, kind, Kind::Vpc)?;
        let (cidr, zone) = cidr_and_zone(s.cfg, kind);
        let zone = match (zone, kind) {
            (Some(zone), _) => zone.to_string(),
            (None, Kind::SubnetB) => {
                // Not the main subnet's zone: a balancer spans two.
                let main = parent_id(ids, kind, Kind::Subnet)?;
                let a = s.read(Kind::Subnet, &main).await?.and_then(|a| {
                    a.get("availability_zone")
                        .and_then(|z| z.as_str().map(str::to_string))
                });
                first_zone_offering(s, kind, a.as_deref()).await?
            }
            (None, _) => first_zone_offering(s, kind, None).await?,
        };
        let out = s
            .clients
            .ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .tag_specifications(tags::spec(s.cfg, kind, ResourceType::Subnet))
            .send()
            .await
            .map_err(|e| AwsError::new(kind.address(), "CreateSubnet", e))?;
        created_id(
            kind,
            "CreateSubnet",
            out.subnet().and_then(|v| v.subnet_id()),
        )
    }
}

async fn delete(s: &Stack<'_>, kind: Kind, id: &str) -> Result<(), AwsError> {
    {
        delete_while(
            kind,
            "DeleteSubnet",
            &["DependencyViolation"],
            delete_bound::SUBNET,
            || s.clients.ec2.delete_subnet().subnet_id(id).send(),
        )
        .await
    }
}

/// The first zone (sorted) of the region that offers the configured instance type,
/// other than `not`.
async fn first_zone_offering(
    s: &Stack<'_>,
    kind: Kind,
    not: Option<&str>,
) -> Result<String, AwsError> {
    let ty = &s.cfg.instance_type;
    let zones = crate::instances::zones_offering(s.clients, ty).await?;
    zones
        .into_iter()
        .find(|z| Some(z.as_str()) != not)
        .ok_or_else(|| AwsError {
            resource: kind.address(),
            action: "DescribeInstanceTypeOfferings",
            code: "NoOffering".into(),
            message: format!(
                "no {}availability zone of {} offers the instance type {ty}: choose another \
             instance_type (or region)",
                if not.is_some() { "second " } else { "" },
                s.cfg.region
            ),
        })
}
