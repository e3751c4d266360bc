//! `aws_iam_role_policy.artifact_read`: the role's only permission, reading releases
//! and models. Its id is `<role>:<policy name>`; found by its fixed names; the
//! document is updated in place.

use async_trait::async_trait;
use serde_json::json;

use super::iam_role::role_name;
use super::policy::{artifact_read_policy, policy_json};
use super::{Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, parent_id};
use crate::aws::{
    AwsError, Backoff, IAM_PROPAGATION, or_absent, retry_while, role_not_yet_visible,
};
use crate::config::Config;

const KIND: Kind = Kind::IamRolePolicy;

pub fn policy_name(cfg: &Config) -> String {
    format!("{}-artifact-read", cfg.app)
}

pub(super) struct IamRolePolicy;

#[async_trait]
impl Resource for IamRolePolicy {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace(
                "role",
                Attr::once_exists(known, Kind::IamRole, &role_name(cfg)),
            ),
            Want::replace("name", Attr::text(&policy_name(cfg))),
            Want::in_place("policy", Attr::Known(artifact_read_policy(cfg))),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let Some((role, name)) = id.split_once(':') else {
            return Ok(None);
        };
        let out = s
            .clients
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(name)
            .send();
        let out = {
            let _permit = s.permit().await;
            out.await
        };
        let Some(out) = or_absent(out, &KIND.address(), "GetRolePolicy")? else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("role".into(), json!(out.role_name())),
            ("name".into(), json!(out.policy_name())),
            ("policy".into(), policy_json(out.policy_document())),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        Ok(vec![format!("{}:{}", role_name(s.cfg), policy_name(s.cfg))])
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let role = parent_id(ids, KIND, Kind::IamRole)?;
        // A role created a moment ago can be unknown to IAM for a while.
        retry_while(
            Backoff::for_at_most(IAM_PROPAGATION).logged(),
            role_not_yet_visible,
            || async {
                s.clients
                    .iam
                    .put_role_policy()
                    .role_name(&role)
                    .policy_name(policy_name(s.cfg))
                    .policy_document(artifact_read_policy(s.cfg).to_string())
                    .send()
                    .await
                    .map_err(|e| AwsError::new(KIND.address(), "PutRolePolicy", e))
            },
        )
        .await?;
        Ok(format!("{role}:{}", policy_name(s.cfg)))
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "policy" {
            return Err(change.not_in_place());
        }
        let (role, name) = id.split_once(':').unwrap_or((id, ""));
        s.clients
            .iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(change.value.to_string())
            .send()
            .await
            .map_err(|e| AwsError::new(change.address, "PutRolePolicy", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let Some((role, name)) = id.split_once(':') else {
            return Ok(());
        };
        let out = s
            .clients
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await;
        or_absent(out, &KIND.address(), "DeleteRolePolicy")?;
        Ok(())
    }
}
