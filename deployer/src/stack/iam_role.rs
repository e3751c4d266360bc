//! `aws_iam_role.instance`: the role the API instances run as. Found by its fixed name;
//! its trust policy is updated in place.

use async_trait::async_trait;
use serde_json::json;

use super::policy::{assume_role_policy, policy_json};
use super::{Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, tags};
use crate::aws::{AwsError, code_of, or_absent};
use crate::config::Config;

const KIND: Kind = Kind::IamRole;

pub fn role_name(cfg: &Config) -> String {
    format!("{}-instance", cfg.app)
}

pub(super) struct IamRole;

#[async_trait]
impl Resource for IamRole {
    fn wanted(&self, cfg: &Config, _known: &Known) -> Vec<Want> {
        vec![
            Want::replace("name", Attr::text(&role_name(cfg))),
            Want::in_place("assume_role_policy", Attr::Known(assume_role_policy())),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let out = {
            let _permit = s.permit().await;
            s.clients.iam.get_role().role_name(id).send().await
        };
        let Some(out) = or_absent(out, &KIND.address(), "GetRole")? else {
            return Ok(None);
        };
        let Some(role) = out.role() else {
            return Ok(None);
        };
        Ok(Some(Actual::from([
            ("name".into(), json!(role.role_name())),
            ("arn".into(), json!(role.arn())),
            (
                "assume_role_policy".into(),
                policy_json(role.assume_role_policy_document().unwrap_or("")),
            ),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        Ok(vec![role_name(s.cfg)])
    }

    async fn create(&self, s: &Stack<'_>, _ids: &Ids) -> Result<String, AwsError> {
        let cfg = s.cfg;
        let out = s
            .clients
            .iam
            .create_role()
            .role_name(role_name(cfg))
            .assume_role_policy_document(assume_role_policy().to_string())
            .description(format!("Instances of {} (managed by deployer)", cfg.app))
            .set_tags(Some(tags::iam(cfg, KIND, "CreateRole")?))
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {}
            Err(e) => return Err(AwsError::new(KIND.address(), "CreateRole", e)),
        }
        Ok(role_name(cfg))
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "assume_role_policy" {
            return Err(change.not_in_place());
        }
        s.clients
            .iam
            .update_assume_role_policy()
            .role_name(id)
            .policy_document(change.value.to_string())
            .send()
            .await
            .map_err(|e| AwsError::new(change.address, "UpdateAssumeRolePolicy", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let iam = &s.clients.iam;
        let addr = KIND.address();
        // Inline policies and profiles that still name it would block the delete.
        if let Ok(out) = iam.list_role_policies().role_name(id).send().await {
            for p in out.policy_names() {
                let out = iam
                    .delete_role_policy()
                    .role_name(id)
                    .policy_name(p)
                    .send()
                    .await;
                or_absent(out, &addr, "DeleteRolePolicy")?;
            }
        }
        if let Ok(out) = iam
            .list_instance_profiles_for_role()
            .role_name(id)
            .send()
            .await
        {
            for p in out.instance_profiles() {
                let out = iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(p.instance_profile_name())
                    .role_name(id)
                    .send()
                    .await;
                or_absent(out, &addr, "RemoveRoleFromInstanceProfile")?;
            }
        }
        let out = iam.delete_role().role_name(id).send().await;
        or_absent(out, &addr, "DeleteRole")?;
        Ok(())
    }
}
