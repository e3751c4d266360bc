//! `aws_route.default`: `0.0.0.0/0` through the internet gateway. Its id is
//! `<route table id>:<destination>`; it is found through its route table.

use async_trait::async_trait;
use serde_json::json;

use super::{Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, parent_id, str_value};
use crate::aws::{AwsError, or_absent};
use crate::config::Config;

const KIND: Kind = Kind::Route;
const DESTINATION: &str = "0.0.0.0/0";

pub(super) struct Route;

#[async_trait]
impl Resource for Route {
    fn wanted(&self, _cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("route_table_id", Attr::id_of(known, Kind::RouteTable)),
            Want::replace("destination_cidr_block", Attr::text(DESTINATION)),
            Want::in_place("gateway_id", Attr::id_of(known, Kind::InternetGateway)),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some((rtb, dest)) = id.split_once(':') else {
            return Ok(None);
        };
        let table = describe_by_id!(
            s,
            KIND,
            describe_route_tables(route_table_ids = rtb),
            "DescribeRouteTables",
            route_tables,
            route_table_id
        );
        let Some(route) = table.as_ref().and_then(|t| {
            t.routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(dest))
        }) else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("route_table_id".into(), json!(rtb)),
            ("destination_cidr_block".into(), json!(dest)),
            ("gateway_id".into(), str_value(route.gateway_id())),
        ])))
    }

    async fn find(&self, _s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        Ok(match current.get(&Kind::RouteTable) {
            Some(rtb) => vec![format!("{rtb}:{DESTINATION}")],
            None => vec![],
        })
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let rtb = parent_id(ids, KIND, Kind::RouteTable)?;
        s.clients
            .ec2
            .create_route()
            .route_table_id(&rtb)
            .destination_cidr_block(DESTINATION)
            .gateway_id(parent_id(ids, KIND, Kind::InternetGateway)?)
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateRoute", e))?;
        Ok(format!("{rtb}:{DESTINATION}"))
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "gateway_id" {
            return Err(change.not_in_place());
        }
        let (rtb, dest) = id.split_once(':').unwrap_or((id, DESTINATION));
        s.clients
            .ec2
            .replace_route()
            .route_table_id(rtb)
            .destination_cidr_block(dest)
            .gateway_id(change.value.as_str().unwrap_or_default())
            .send()
            .await
            .map_err(|e| AwsError::new(change.address, "ReplaceRoute", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let Some((rtb, dest)) = id.split_once(':') else {
            return Ok(());
        };
        let out = s
            .clients
            .ec2
            .delete_route()
            .route_table_id(rtb)
            .destination_cidr_block(dest)
            .send()
            .await;
        or_absent(out, &KIND.address(), "DeleteRoute")?;
        Ok(())
    }
}
