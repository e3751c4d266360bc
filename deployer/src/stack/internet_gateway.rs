//! `aws_internet_gateway.main`: the way out to the internet (attached to the VPC by
//! `igw_attachment.rs`). Found by its tags.

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::{Actual, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while, tags};
use crate::aws::{AwsError, delete_bound};
use crate::config::Config;

const KIND: Kind = Kind::InternetGateway;

pub(super) struct InternetGateway;

#[async_trait]
impl Resource for InternetGateway {
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        vec![tags::wanted(cfg, KIND)]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(v) = describe_by_id!(
            s,
            KIND,
            describe_internet_gateways(internet_gateway_ids = id),
            "DescribeInternetGateways",
            internet_gateways,
            internet_gateway_id
        ) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([(
            "tags".into(),
            tags::managed(v.tags()),
        )])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_internet_gateways,
            "DescribeInternetGateways",
            internet_gateways,
            internet_gateway_id
        )
    }

    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .create_internet_gateway()
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::InternetGateway))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateInternetGateway", e))?;
        let id = out.internet_gateway().and_then(|v| v.internet_gateway_id());
        created_id(KIND, "CreateInternetGateway", id)
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        // Refused while it is still attached with addresses mapped (as terraform does).
        delete_while(
            KIND,
            "DeleteInternetGateway",
            &["DependencyViolation"],
            delete_bound::INTERNET_GATEWAY,
            || {
                s.clients
                    .ec2
                    .delete_internet_gateway()
                    .internet_gateway_id(id)
                    .send()
            },
        )
        .await
    }
}
