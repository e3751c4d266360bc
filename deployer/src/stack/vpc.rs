//! `aws_vpc.main`: the network everything else lives in. Found by its tags.

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while, str_value,
    tags,
};
use crate::aws::{AwsError, delete_bound};
use crate::config::Config;

const KIND: Kind = Kind::Vpc;

pub(super) struct Vpc;

#[async_trait]
impl Resource for Vpc {
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        vec![
            Want::replace("cidr_block", Attr::text(&cfg.vpc_cidr)),
            tags::wanted(cfg, KIND),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(v) = describe_by_id!(
            s,
            KIND,
            describe_vpcs(vpc_ids = id),
            "DescribeVpcs",
            vpcs,
            vpc_id
        ) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("cidr_block".into(), str_value(v.cidr_block())),
            ("tags".into(), tags::managed(v.tags())),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(s, KIND, describe_vpcs, "DescribeVpcs", vpcs, vpc_id)
    }

    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .create_vpc()
            .cidr_block(&s.cfg.vpc_cidr)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::Vpc))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateVpc", e))?;
        created_id(KIND, "CreateVpc", out.vpc().and_then(|v| v.vpc_id()))
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        // What was in it (an endpoint's interfaces, a terminated instance's) can take a
        // moment to go.
        delete_while(
            KIND,
            "DeleteVpc",
            &["DependencyViolation"],
            delete_bound::VPC,
            || s.clients.ec2.delete_vpc().vpc_id(id).send(),
        )
        .await
    }
}
