//! `aws_subnet.main`: the one public subnet of the VPC. Found by its tags.
//!
//! Its zone is the configured `availability_zone`, else the first zone (sorted) that
//! offers the configured instance type (`DescribeInstanceTypeOfferings`): EC2's own
//! choice may not offer it, and every launch would then fail. A terminated instance's
//! interfaces keep the subnet busy for a while: `delete` retries `DependencyViolation`
//! for up to [`delete_bound::SUBNET`].

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while, parent_id,
    str_value, tags,
};
use crate::aws::{AwsError, delete_bound};
use crate::config::Config;

const KIND: Kind = Kind::Subnet;

pub(super) struct Subnet;

#[async_trait]
impl Resource for Subnet {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        let mut w = vec![
            Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
            Want::replace("cidr_block", Attr::text(&cfg.subnet_cidr)),
        ];
        if let Some(az) = &cfg.availability_zone {
            w.push(Want::replace("availability_zone", Attr::text(az)));
        }
        w.push(tags::wanted(cfg, KIND));
        w
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(v) = describe_by_id!(
            s,
            KIND,
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

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_subnets,
            "DescribeSubnets",
            subnets,
            subnet_id
        )
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let vpc = parent_id(ids, KIND, Kind::Vpc)?;
        let zone = match &s.cfg.availability_zone {
            Some(zone) => zone.clone(),
            None => first_zone_offering(s).await?,
        };
        let out = s
            .clients
            .ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(&s.cfg.subnet_cidr)
            .availability_zone(zone)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::Subnet))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateSubnet", e))?;
        created_id(
            KIND,
            "CreateSubnet",
            out.subnet().and_then(|v| v.subnet_id()),
        )
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete_while(
            KIND,
            "DeleteSubnet",
            &["DependencyViolation"],
            delete_bound::SUBNET,
            || s.clients.ec2.delete_subnet().subnet_id(id).send(),
        )
        .await
    }
}

/// The first zone (sorted) of the region that offers the configured instance type.
async fn first_zone_offering(s: &Stack<'_>) -> Result<String, AwsError> {
    let ty = &s.cfg.instance_type;
    let zones = crate::instances::zones_offering(s.clients, ty).await?;
    zones.into_iter().next().ok_or_else(|| AwsError {
        resource: KIND.address(),
        action: "DescribeInstanceTypeOfferings",
        code: "NoOffering".into(),
        message: format!(
            "no availability zone of {} offers the instance type {ty}: choose another \
             instance_type (or region)",
            s.cfg.region
        ),
    })
}
