//! `aws_route_table.main`: the subnet's route table (its default route is
//! `route.rs`). Found by its tags.

use async_trait::async_trait;
use aws_sdk_ec2::types::ResourceType;

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while, parent_id,
    str_value, tags,
};
use crate::aws::{AwsError, delete_bound};
use crate::config::Config;

const KIND: Kind = Kind::RouteTable;

pub(super) struct RouteTable;

#[async_trait]
impl Resource for RouteTable {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
            tags::wanted(cfg, KIND),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(v) = describe_by_id!(
            s,
            KIND,
            describe_route_tables(route_table_ids = id),
            "DescribeRouteTables",
            route_tables,
            route_table_id
        ) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("vpc_id".into(), str_value(v.vpc_id())),
            ("tags".into(), tags::managed(v.tags())),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_route_tables,
            "DescribeRouteTables",
            route_tables,
            route_table_id
        )
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .create_route_table()
            .vpc_id(parent_id(ids, KIND, Kind::Vpc)?)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::RouteTable))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateRouteTable", e))?;
        let id = out.route_table().and_then(|v| v.route_table_id());
        created_id(KIND, "CreateRouteTable", id)
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        // A gateway endpoint being deleted can hold it for a moment.
        delete_while(
            KIND,
            "DeleteRouteTable",
            &["DependencyViolation"],
            delete_bound::ROUTE_TABLE,
            || s.clients.ec2.delete_route_table().route_table_id(id).send(),
        )
        .await
    }
}
