//! `aws_eip.api`: the Elastic IP the API is reached at; with `front = "eip"` releases
//! move it from one instance to the next (`release/`), with `front = "nlb"` it is the
//! balancer's address in the main subnet's zone. `aws_eip.b` (`front = "nlb"` only):
//! the balancer's address in zone b. Found by their tags.
//!
//! AWS refuses to release an associated address (`InvalidIPAddress.InUse`), and
//! `DescribeAddresses` can still show an address free for a moment after it was
//! associated: `delete` disassociates the instance association it reads, then releases,
//! and starts again on `InvalidIPAddress.InUse`, for up to [`delete_bound::EIP`].

use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, ResourceType};

use super::{Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, str_value, tags};
use crate::aws::{AwsError, Backoff, delete_bound, or_absent, retry_while};
use crate::config::{Config, Front};

pub(super) struct Eip;

/// `aws_eip.b` (`front = "nlb"`).
pub(super) struct EipB;

#[async_trait]
impl Resource for EipB {
    fn only_with(&self) -> Option<Front> {
        Some(Front::Nlb)
    }
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        wanted(cfg, Kind::EipB)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::EipB, id).await
    }
    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::EipB).await
    }
    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::EipB).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::EipB, id).await
    }
}

#[async_trait]
impl Resource for Eip {
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        wanted(cfg, Kind::Eip)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::Eip, id).await
    }
    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::Eip).await
    }
    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::Eip).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::Eip, id).await
    }
}

fn wanted(cfg: &Config, kind: Kind) -> Vec<Want> {
    vec![
        Want::replace("domain", Attr::text("vpc")),
        tags::wanted(cfg, kind),
    ]
}

async fn read(s: &Stack<'_>, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
    {
        let Some(ad) = describe_by_id!(
            s,
            kind,
            describe_addresses(allocation_ids = id),
            "DescribeAddresses",
            addresses,
            allocation_id
        ) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("domain".into(), str_value(ad.domain().map(|d| d.as_str()))),
            ("public_ip".into(), str_value(ad.public_ip())),
            ("tags".into(), tags::managed(ad.tags())),
        ])))
    }
}

async fn find(s: &Stack<'_>, kind: Kind) -> Result<Vec<String>, AwsError> {
    {
        find_tagged!(
            s,
            kind,
            describe_addresses,
            "DescribeAddresses",
            addresses,
            allocation_id
        )
    }
}

async fn create(s: &Stack<'_>, kind: Kind) -> Result<String, AwsError> {
    {
        let out = s
            .clients
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tags::spec(s.cfg, kind, ResourceType::ElasticIp))
            .send()
            .await
            .map_err(|e| AwsError::new(kind.address(), "AllocateAddress", e))?;
        created_id(kind, "AllocateAddress", out.allocation_id())
    }
}

async fn delete(s: &Stack<'_>, kind: Kind, id: &str) -> Result<(), AwsError> {
    {
        let ec2 = &s.clients.ec2;
        let addr = &kind.address();
        retry_while(
            Backoff::for_at_most(delete_bound::EIP).logged(),
            |e| e.code == "InvalidIPAddress.InUse",
            || async {
                // AWS refuses to release an associated address: disassociate first.
                let out = ec2.describe_addresses().allocation_ids(id).send().await;
                let Some(out) = or_absent(out, addr, "DescribeAddresses")? else {
                    return Ok(());
                };
                // Only an instance's association: a balancer's interface gives the
                // address back itself once the balancer is deleted (AWS refuses to
                // disassociate it), so its release waits on InUse.
                for ad in out
                    .addresses()
                    .iter()
                    .filter(|ad| ad.instance_id().is_some_and(|i| !i.is_empty()))
                {
                    if let Some(assoc) = ad.association_id() {
                        tracing::info!("{addr}: disassociating {assoc} before the release");
                        let out = ec2
                            .disassociate_address()
                            .association_id(assoc)
                            .send()
                            .await;
                        or_absent(out, addr, "DisassociateAddress")?;
                    }
                }
                let out = ec2.release_address().allocation_id(id).send().await;
                or_absent(out, addr, "ReleaseAddress")?;
                Ok(())
            },
        )
        .await
    }
}
