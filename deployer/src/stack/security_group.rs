//! `aws_security_group.api`: the API port open to the world, SSH to one CIDR if
//! configured. Found by its tags; its ingress rules are updated in place.
//!
//! AWS's eventual consistency, handled as terraform-provider-aws does: a new group is
//! unknown to EC2 for a moment (`InvalidGroup.NotFound`), so `create` reads it back
//! until it is visible before authorizing its ingress, and every rule change is retried
//! on `InvalidGroup.NotFound`, within [`EC2_PROPAGATION`]. A terminated instance's
//! interfaces keep the group in use for a while: `delete` retries `DependencyViolation`
//! and `InvalidGroup.InUse` for up to [`delete_bound::SECURITY_GROUP`].

use async_trait::async_trait;
use aws_sdk_ec2::types::{IpPermission, ResourceType};
use serde_json::json;

use super::rules::{parse_rule, rule_strings};
use super::{
    Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, created_id, delete_while,
    parent_id, str_value, tags,
};
use crate::aws::{AwsError, Backoff, EC2_PROPAGATION, delete_bound, poll_until_some, retry_while};
use crate::config::Config;

const KIND: Kind = Kind::SecurityGroup;

pub fn security_group_name(cfg: &Config) -> String {
    format!("{}-api", cfg.app)
}

fn description(cfg: &Config) -> String {
    format!("API ingress for {} (managed by deployer)", cfg.app)
}

/// The security group's ingress rules, one string per rule and source:
/// `tcp/8080-8080 from 0.0.0.0/0`.
pub fn wanted_ingress(cfg: &Config) -> Vec<String> {
    let mut rules = vec![format!("tcp/{p}-{p} from 0.0.0.0/0", p = cfg.api_port)];
    // HTTPS and the ACME HTTP-01 challenge (the CA connects from anywhere), only when on.
    if cfg.tls == crate::config::TlsMode::Acme {
        for p in [cfg.https.port, cfg.https.challenge_port] {
            rules.push(format!("tcp/{p}-{p} from 0.0.0.0/0"));
        }
    }
    if let Some(cidr) = &cfg.ssh_cidr {
        rules.push(format!("tcp/22-22 from {cidr}"));
    }
    rules.sort();
    rules
}

pub(super) struct SecurityGroup;

#[async_trait]
impl Resource for SecurityGroup {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("name", Attr::text(&security_group_name(cfg))),
            Want::replace("description", Attr::text(&description(cfg))),
            Want::replace("vpc_id", Attr::id_of(known, Kind::Vpc)),
            Want::in_place("ingress", Attr::Known(json!(wanted_ingress(cfg)))),
            tags::wanted(cfg, KIND),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some(g) = describe_by_id!(
            s,
            KIND,
            describe_security_groups(group_ids = id),
            "DescribeSecurityGroups",
            security_groups,
            group_id
        ) else {
            return Ok(None);
        };
        let mut rules: Vec<String> = g.ip_permissions().iter().flat_map(rule_strings).collect();
        rules.sort();
        Ok(Some(Actual::from([
            ("name".into(), str_value(g.group_name())),
            ("description".into(), str_value(g.description())),
            ("vpc_id".into(), str_value(g.vpc_id())),
            ("ingress".into(), json!(rules)),
            ("tags".into(), tags::managed(g.tags())),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        find_tagged!(
            s,
            KIND,
            describe_security_groups,
            "DescribeSecurityGroups",
            security_groups,
            group_id
        )
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let out = s
            .clients
            .ec2
            .create_security_group()
            .group_name(security_group_name(s.cfg))
            .description(description(s.cfg))
            .vpc_id(parent_id(ids, KIND, Kind::Vpc)?)
            .tag_specifications(tags::spec(s.cfg, KIND, ResourceType::SecurityGroup))
            .send()
            .await
            .map_err(|e| AwsError::new(KIND.address(), "CreateSecurityGroup", e))?;
        let id = created_id(KIND, "CreateSecurityGroup", out.group_id())?;
        // EC2 knows the new group only after a moment: wait until it reads back.
        poll_until_some(
            Backoff::for_at_most(EC2_PROPAGATION),
            &KIND.address(),
            "DescribeSecurityGroups",
            "visible",
            || self.read(s, &id),
        )
        .await?;
        // Ingress is converged right away; a crash in between shows as drift.
        set_ingress(s, &id, &[], &wanted_ingress(s.cfg)).await?;
        Ok(id)
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "ingress" {
            return Err(change.not_in_place());
        }
        let have: Vec<String> = change
            .actual
            .get("ingress")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        set_ingress(s, id, &have, &wanted_ingress(s.cfg)).await
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        delete_while(
            KIND,
            "DeleteSecurityGroup",
            &["DependencyViolation", "InvalidGroup.InUse"],
            delete_bound::SECURITY_GROUP,
            || s.clients.ec2.delete_security_group().group_id(id).send(),
        )
        .await
    }
}

/// Revokes the rules in `have` that are not wanted and authorizes the missing ones.
async fn set_ingress(
    s: &Stack<'_>,
    group: &str,
    have: &[String],
    want: &[String],
) -> Result<(), AwsError> {
    let addr = KIND.address();
    let extra: Vec<IpPermission> = have
        .iter()
        .filter(|r| !want.contains(r))
        .filter_map(|r| parse_rule(r))
        .collect();
    let missing: Vec<IpPermission> = want
        .iter()
        .filter(|r| !have.contains(r))
        .filter_map(|r| parse_rule(r))
        .collect();
    // A group created a moment ago can still be unknown here.
    let not_yet = |e: &AwsError| e.code == "InvalidGroup.NotFound";
    let bound = Backoff::for_at_most(EC2_PROPAGATION).logged();
    if !extra.is_empty() {
        retry_while(bound, not_yet, || async {
            s.clients
                .ec2
                .revoke_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(extra.clone()))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "RevokeSecurityGroupIngress", e))
        })
        .await?;
    }
    if !missing.is_empty() {
        retry_while(bound, not_yet, || async {
            s.clients
                .ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(missing.clone()))
                .send()
                .await
                .map_err(|e| AwsError::new(&addr, "AuthorizeSecurityGroupIngress", e))
        })
        .await?;
    }
    Ok(())
}
