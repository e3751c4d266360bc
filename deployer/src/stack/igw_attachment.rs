//! `aws_internet_gateway_attachment.main`: the internet gateway attached to the VPC.
//! Its id is `<igw id>:<vpc id>`; it has no tags and is found through the gateway.
//!
//! AWS refuses to detach the gateway while public addresses are mapped in the VPC
//! (`DependencyViolation`), which a just-terminated instance's address still is for a
//! while: `delete` retries it for up to [`delete_bound::INTERNET_GATEWAY`].

use async_trait::async_trait;
use aws_sdk_ec2::types::InternetGateway;
use serde_json::json;

use super::{Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, delete_while, parent_id};
use crate::aws::{AwsError, delete_bound};
use crate::config::Config;

const KIND: Kind = Kind::IgwAttachment;

pub(super) struct IgwAttachment;

impl IgwAttachment {
    /// The gateway `igw` with its attachments, or `None` if AWS does not know it.
    async fn gateway(s: &Stack<'_>, igw: &str) -> Result<Option<InternetGateway>, AwsError> {
        Ok(describe_by_id!(
            s,
            KIND,
            describe_internet_gateways(internet_gateway_ids = igw),
            "DescribeInternetGateways",
            internet_gateways,
            internet_gateway_id
        ))
    }
}

#[async_trait]
impl Resource for IgwAttachment {
    fn wanted(&self, _cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace(
                "internet_gateway_id",
                Attr::id_of(known, Kind::InternetGateway),
            ),
            Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some((igw, vpc)) = id.split_once(':') else {
            return Ok(None);
        };
        let attached = Self::gateway(s, igw).await?.is_some_and(|g| {
            g.attachments().iter().any(|at| {
                at.vpc_id() == Some(vpc)
                    && at
                        .state()
                        .is_some_and(|s| matches!(s.as_str(), "available" | "attached"))
            })
        });
        if !attached {
            return Ok(None);
        }
        Ok(Some(Actual::from([
            ("internet_gateway_id".into(), json!(igw)),
            ("vpc_id".into(), json!(vpc)),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        let (Some(igw), Some(_)) = (current.get(&Kind::InternetGateway), current.get(&Kind::Vpc))
        else {
            return Ok(vec![]);
        };
        // Whatever VPC it is attached to (a replaced VPC's included).
        Ok(Self::gateway(s, igw)
            .await?
            .iter()
            .flat_map(|g| g.attachments())
            .filter_map(|at| at.vpc_id().map(|v| format!("{igw}:{v}")))
            .collect())
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let igw = parent_id(ids, KIND, Kind::InternetGateway)?;
        let vpc = parent_id(ids, KIND, Kind::Vpc)?;
        s.clients
            .ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "AttachInternetGateway", e))?;
        Ok(format!("{igw}:{vpc}"))
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let Some((igw, vpc)) = id.split_once(':') else {
            return Ok(());
        };
        delete_while(
            KIND,
            "DetachInternetGateway",
            &["DependencyViolation"],
            delete_bound::INTERNET_GATEWAY,
            || {
                s.clients
                    .ec2
                    .detach_internet_gateway()
                    .internet_gateway_id(igw)
                    .vpc_id(vpc)
                    .send()
            },
        )
        .await
    }
}
