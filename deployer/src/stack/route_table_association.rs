//! `aws_route_table_association.main`: the route table associated with the subnet;
//! `aws_route_table_association.b` (`front = "nlb"`): with `aws_subnet.b`. Found
//! through the route table: its association with the kind's subnet.

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, RouteTableAssociation as RouteTableAssociationType};

use super::{
    Actual, Attr, Ids, Kind, Known, Resource, Stack, Want, created_id, parent_id, str_value,
};
use crate::aws::{AwsError, or_absent};
use crate::config::{Config, Front};

pub(super) struct RouteTableAssociation;

/// `aws_route_table_association.b` (`front = "nlb"`).
pub(super) struct RouteTableAssociationB;

/// The subnet `kind` associates.
fn subnet_of(kind: Kind) -> Kind {
    match kind {
        Kind::RouteTableAssociationB => Kind::SubnetB,
        _ => Kind::Subnet,
    }
}

#[async_trait]
impl Resource for RouteTableAssociationB {
    fn only_with(&self) -> Option<Front> {
        Some(Front::Nlb)
    }
    fn wanted(&self, _cfg: &Config, known: &Known) -> Vec<Want> {
        wanted(Kind::RouteTableAssociationB, known)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::RouteTableAssociationB, id).await
    }
    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::RouteTableAssociationB, current).await
    }
    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::RouteTableAssociationB, ids).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::RouteTableAssociationB, id).await
    }
}

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
        wanted(Kind::RouteTableAssociation, known)
    }
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        read(s, Kind::RouteTableAssociation, id).await
    }
    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError> {
        find(s, Kind::RouteTableAssociation, current).await
    }
    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        create(s, Kind::RouteTableAssociation, ids).await
    }
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete(s, Kind::RouteTableAssociation, id).await
    }
}

fn wanted(kind: Kind, known: &Known) -> Vec<Want> {
    vec![
        Want::replace("route_table_id", Attr::id_of(known, Kind::RouteTable)),
        Want::replace("subnet_id", Attr::id_of(known, subnet_of(kind))),
    ]
}

async fn read(s: &Stack<'_>, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
    {
        // Within a refresh: in the stack's route tables as listed, if it is there.
        if let Some(snap) = s.snapshot()
            && let Some(assoc) = snap
                .route_tables(s, kind)
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
        let Some(out) = or_absent(out, &kind.address(), "DescribeRouteTables")? else {
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
}

/// The route table's associations with `kind`'s subnet (with none known: every one
/// but the table's main association and those of the stack's other subnet).
async fn find(s: &Stack<'_>, kind: Kind, current: &Ids) -> Result<Vec<String>, AwsError> {
    {
        let Some(rtb) = current.get(&Kind::RouteTable) else {
            return Ok(vec![]);
        };
        let subnet = current.get(&subnet_of(kind));
        let other = [Kind::Subnet, Kind::SubnetB]
            .into_iter()
            .filter(|k| *k != subnet_of(kind))
            .find_map(|k| current.get(&k));
        let table = describe_by_id!(
            s,
            kind,
            describe_route_tables(route_table_ids = rtb),
            "DescribeRouteTables",
            route_tables,
            route_table_id
        );
        Ok(table
            .iter()
            .flat_map(|t| t.associations())
            .filter(|x| x.main() != Some(true))
            .filter(|x| match subnet {
                Some(id) => x.subnet_id() == Some(id.as_str()),
                None => {
                    kind == Kind::RouteTableAssociation
                        && x.subnet_id() != other.map(|o| o.as_str())
                }
            })
            .filter_map(|x| x.route_table_association_id().map(str::to_string))
            .collect())
    }
}

async fn create(s: &Stack<'_>, kind: Kind, ids: &Ids) -> Result<String, AwsError> {
    {
        let out = s
            .clients
            .ec2
            .associate_route_table()
            .route_table_id(parent_id(ids, kind, Kind::RouteTable)?)
            .subnet_id(parent_id(ids, kind, subnet_of(kind))?)
            .send()
            .await
            .map_err(|e| AwsError::new(kind.address(), "AssociateRouteTable", e))?;
        created_id(kind, "AssociateRouteTable", out.association_id())
    }
}

async fn delete(s: &Stack<'_>, kind: Kind, id: &str) -> Result<(), AwsError> {
    {
        let out = s
            .clients
            .ec2
            .disassociate_route_table()
            .association_id(id)
            .send()
            .await;
        or_absent(out, &kind.address(), "DisassociateRouteTable")?;
        Ok(())
    }
}
