//! `aws_vpc_endpoint.s3`: an S3 gateway endpoint in the VPC, on the subnet's route
//! table, so that instances reach S3 (the release download at boot, the model reads)
//! without depending on the internet route. Gateway endpoints cost nothing. Found by
//! its tags; its route tables are updated in place (`ModifyVpcEndpoint`).
//!
//! A gateway endpoint is `pending` for a moment after `CreateVpcEndpoint` and
//! `deleting` after `DeleteVpcEndpoints` (its prefix-list route goes with it): create
//! waits until it is `available`, delete until it is gone, so that the route table can
//! be deleted right after.

use async_trait::async_trait;
use aws_sdk_ec2::types::{ResourceType, VpcEndpoint as Endpoint, VpcEndpointType};
use serde_json::{Value, json};

use super::{
    Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, created_id, parent_id,
    str_value, tags,
};
use crate::aws::{
    AwsError, Backoff, EC2_PROPAGATION, delete_bound, is_not_found, or_absent, poll_until_some,
};
use crate::config::Config;

const KIND: Kind = Kind::VpcEndpoint;

/// S3's gateway endpoint service in `region`.
pub fn s3_service_name(region: &str) -> String {
    format!("com.amazonaws.{region}.s3")
}

/// The states in which an endpoint no longer counts as there.
fn is_gone(e: &Endpoint) -> bool {
    e.state().is_some_and(|s| {
        matches!(
            s.as_str().to_ascii_lowercase().as_str(),
            "deleting" | "deleted" | "failed" | "rejected" | "expired"
        )
    })
}

/// The route tables wanted: the stack's one, once it exists.
fn wanted_route_tables(known: &Known) -> Attr {
    match known.get(&Kind::RouteTable) {
        Some(Some(id)) => Attr::Known(json!([id])),
        _ => Attr::Unknown,
    }
}

/// The route table ids of an attribute value (a JSON list of strings).
fn id_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

pub(super) struct VpcEndpoint;

impl VpcEndpoint {
    /// The endpoint `id` as EC2 describes it; `None` when gone (or going). Within a
    /// refresh, from the listing of the stack's endpoints when it is there.
    async fn describe(s: &Stack<'_>, id: &str) -> Result<Option<Endpoint>, AwsError> {
        if let Some(snap) = s.snapshot()
            && let Some(e) = snap
                .vpc_endpoints(s, KIND)
                .await?
                .iter()
                .find(|e| e.vpc_endpoint_id() == Some(id))
        {
            return Ok((!is_gone(e)).then(|| e.clone()));
        }
        let _permit = s.permit().await;
        let out = s
            .clients
            .ec2
            .describe_vpc_endpoints()
            .vpc_endpoint_ids(id)
            .send()
            .await;
        let Some(out) = or_absent(out, &KIND.address(), "DescribeVpcEndpoints")? else {
            return Ok(None);
        };
        Ok(out
            .vpc_endpoints()
            .iter()
            .find(|e| e.vpc_endpoint_id() == Some(id) && !is_gone(e))
            .cloned())
    }
}

#[async_trait]
impl Resource for VpcEndpoint {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
            Want::replace("service_name", Attr::text(&s3_service_name(&cfg.region))),
            Want::replace("vpc_endpoint_type", Attr::text("Gateway")),
            Want::in_place("route_table_ids", wanted_route_tables(known)),
            tags::wanted(cfg, KIND),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(e) = Self::describe(s, id).await? else {
            return Ok(None);
        };
        let mut tables: Vec<String> = e.route_table_ids().to_vec();
        tables.sort();
        Ok(Some(Actual::from([
            ("vpc_id".into(), str_value(e.vpc_id())),
            ("service_name".into(), str_value(e.service_name())),
            (
                "vpc_endpoint_type".into(),
                str_value(e.vpc_endpoint_type().map(|t| t.as_str())),
            ),
            ("route_table_ids".into(), json!(tables)),
            ("tags".into(), tags::managed(e.tags())),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_vpc_endpoints,
            "DescribeVpcEndpoints",
            vpc_endpoints,
            vpc_endpoint_id,
            keep | e | !is_gone(e)
        )
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let addr = KIND.address();
        let out = s
            .clients
            .ec2
            .create_vpc_endpoint()
            .vpc_id(parent_id(ids, KIND, Kind::Vpc)?)
            .service_name(s3_service_name(&s.cfg.region))
            .vpc_endpoint_type(VpcEndpointType::Gateway)
            .route_table_ids(parent_id(ids, KIND, Kind::RouteTable)?)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::VpcEndpoint))
            .send()
            .await
            .map_err(|e| AwsError::new(&addr, "CreateVpcEndpoint", e))?;
        let id = created_id(
            KIND,
            "CreateVpcEndpoint",
            out.vpc_endpoint().and_then(|e| e.vpc_endpoint_id()),
        )?;
        // Pending for a moment: wait until it is available (or say what it became).
        poll_until_some(
            Backoff::for_at_most(EC2_PROPAGATION),
            &addr,
            "DescribeVpcEndpoints",
            "available",
            || async {
                let out = s
                    .clients
                    .ec2
                    .describe_vpc_endpoints()
                    .vpc_endpoint_ids(&id)
                    .send()
                    .await;
                let Some(out) = or_absent(out, &addr, "DescribeVpcEndpoints")? else {
                    return Ok(None);
                };
                let Some(e) = out.vpc_endpoints().first() else {
                    return Ok(None);
                };
                match e.state().map(|st| st.as_str().to_ascii_lowercase()) {
                    Some(st) if st == "available" => Ok(Some(())),
                    Some(st) if st == "pending" || st == "pendingacceptance" => Ok(None),
                    other => Err(AwsError::other(
                        &addr,
                        "CreateVpcEndpoint",
                        format!("endpoint {id} is {other:?}, not available"),
                    )),
                }
            },
        )
        .await?;
        Ok(id)
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "route_table_ids" {
            return Err(change.not_in_place());
        }
        let have = id_list(change.actual.get("route_table_ids"));
        let want = id_list(Some(change.value));
        let add: Vec<String> = want.iter().filter(|t| !have.contains(t)).cloned().collect();
        let remove: Vec<String> = have.iter().filter(|t| !want.contains(t)).cloned().collect();
        s.clients
            .ec2
            .modify_vpc_endpoint()
            .vpc_endpoint_id(id)
            .set_add_route_table_ids(Some(add))
            .set_remove_route_table_ids(Some(remove))
            .send()
            .await
            .map_err(|e| AwsError::new(change.address, "ModifyVpcEndpoint", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let addr = KIND.address();
        let out = s
            .clients
            .ec2
            .delete_vpc_endpoints()
            .vpc_endpoint_ids(id)
            .send()
            .await;
        let Some(out) = or_absent(out, &addr, "DeleteVpcEndpoints")? else {
            return Ok(());
        };
        // Refusals come back per endpoint in the answer, not as an error.
        if let Some(err) = out.unsuccessful().iter().find_map(|u| u.error()) {
            if is_not_found(err.code()) {
                return Ok(());
            }
            return Err(AwsError {
                resource: addr,
                action: "DeleteVpcEndpoints",
                code: err.code().unwrap_or("Unsuccessful").to_string(),
                message: err.message().unwrap_or_default().to_string(),
            });
        }
        // Deleting takes a moment (its routes go with it): wait until it is gone.
        poll_until_some(
            Backoff::for_at_most(delete_bound::VPC_ENDPOINT),
            &addr,
            "DescribeVpcEndpoints",
            "gone",
            || async { Ok(Self::describe(s, id).await?.is_none().then_some(())) },
        )
        .await
    }
}
