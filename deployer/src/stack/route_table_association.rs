//! `aws_route_table_association.main`: the route table associated with the subnet.
//! Found through its route table (the table's main association excluded).

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, RouteTableAssociation as RouteTableAssociationType};

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, parent_id, str_value,
};
use crate::aws::{AwsError, or_absent};
use crate::config::Config;

const KIND: Kind = Kind::RouteTableAssociation;

pub(super) struct RouteTableAssociation;

/// Its attributes as read.
fn actual(assoc: &RouteTableAssociationType) -> Actual {
    Actual::from([
        ("route_table_id".into(), str_value(assoc.route_table_id())),
        ("subnet_id".into(), str_value(assoc.subnet_id())),
    ])
}

#[async_trait]
impl Resource for RouteTableAssociation {
    fn wanted(&self, _cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("route_table_id", Attr::id_of(known, Kind::RouteTable)),
            Want::replace("subnet_id", Attr::id_of(known, Kind::Subnet)),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        // Within a refresh: in the stack's route tables as listed, if it is there.
        if let Some(snap) = s.snapshot()
            && let Some(assoc) = snap
                .route_tables(s, KIND)
                .await?
                .iter()
                .flat_map(|t| t.associations())
                .find(|x| x.route_table_association_id() == Some(id))
        {
            return Ok(Some(actual(assoc)));
        }
        let by_association = Filter::builder()
            .name("association.route-table-association-id")
            .values(id)
            .build();
        let out = s
            .clients
            .ec2
            .describe_route_tables()
            .filters(by_association)
            .send();
        let out = {
            let _permit = s.permit().await;
            out.await
        };
        let Some(out) = or_absent(out, &KIND.address(), "DescribeRouteTables")? else {
            return Ok(None);
        };
        let Some(assoc) = out.route_tables().iter().find_map(|t| {
            t.associations()
                .iter()
                .find(|x| x.route_table_association_id() == Some(id))
        }) else {
            return Ok(None);
        };
        Ok(Some(actual(assoc)))
    }

    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        let Some(rtb) = current.get(&Kind::RouteTable) else {
            return Ok(vec![]);
        };
        let table = describe_by_id!(
            s,
            KIND,
            describe_route_tables(route_table_ids = rtb),
            "DescribeRouteTables",
            route_tables,
            route_table_id
        );
        Ok(table
            .iter()
            .flat_map(|t| t.associations())
            .filter(|x| x.main() != Some(true))
            .filter_map(|x| x.route_table_association_id().map(str::to_string))
            .collect())
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .associate_route_table()
            .route_table_id(parent_id(ids, KIND, Kind::RouteTable)?)
            .subnet_id(parent_id(ids, KIND, Kind::Subnet)?)
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "AssociateRouteTable", e))?;
        created_id(KIND, "AssociateRouteTable", out.association_id())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let out = s
            .clients
            .ec2
            .disassociate_route_table()
            .association_id(id)
            .send()
            .await;
        or_absent(out, &KIND.address(), "DisassociateRouteTable")?;
        Ok(())
    }
}
