//! `aws_eip.api`: the Elastic IP the API is reached at; releases move it from one
//! instance to the next (`release.rs`). Found by its tags.
//!
//! AWS refuses to release an associated address (`InvalidIPAddress.InUse`), and
//! `DescribeAddresses` can still show an address free for a moment after it was
//! associated: `delete` disassociates whatever association it reads, then releases,
//! and starts again on `InvalidIPAddress.InUse`, for up to [`delete_bound::EIP`].

use async_trait::async_trait;
use aws_sdk_ec2::types::{DomainType, ResourceType};

use super::{Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, str_value, tags};
use crate::aws::{AwsError, Backoff, delete_bound, or_absent, retry_logged};
use crate::config::Config;

const KIND: Kind = Kind::Eip;

pub(super) struct Eip;

#[async_trait]
impl Resource for Eip {
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        vec![
            Want::replace("domain", Attr::text("vpc")),
            tags::wanted(cfg, KIND),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(ad) = describe_by_id!(
            s,
            KIND,
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

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_addresses,
            "DescribeAddresses",
            addresses,
            allocation_id
        )
    }

    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::ElasticIp))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "AllocateAddress", e))?;
        created_id(KIND, "AllocateAddress", out.allocation_id())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let ec2 = &s.clients.ec2;
        let addr = &KIND.address();
        retry_logged(
            Backoff::for_at_most(delete_bound::EIP),
            |e| e.code == "InvalidIPAddress.InUse",
            || async {
                // AWS refuses to release an associated address: disassociate first.
                let out = ec2.describe_addresses().allocation_ids(id).send().await;
                let Some(out) = or_absent(out, addr, "DescribeAddresses")? else {
                    return Ok(());
                };
                for ad in out.addresses() {
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
