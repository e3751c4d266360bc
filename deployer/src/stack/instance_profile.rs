//! `aws_iam_instance_profile.instance`: carries the role onto the instances. Found by
//! its fixed name; the role in it is updated in place.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::iam_role::role_name;
use super::{Actual, Attr, Change, Ids, Kind, Known, Resource, Stack, Want, parent_id, tags};
use crate::aws::{
    AwsError, Backoff, IAM_PROPAGATION, code_of, or_absent, retry_while, role_not_yet_visible,
};
use crate::config::Config;

const KIND: Kind = Kind::InstanceProfile;

pub fn profile_name(cfg: &Config) -> String {
    format!("{}-instance", cfg.app)
}

pub(super) struct InstanceProfile;

#[async_trait]
impl Resource for InstanceProfile {
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want> {
        vec![
            Want::replace("name", Attr::text(&profile_name(cfg))),
            Want::in_place(
                "role",
                Attr::once_exists(known, Kind::IamRole, &role_name(cfg)),
            ),
        ]
    }

    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError> {
        let out = s
            .clients
            .iam
            .get_instance_profile()
            .instance_profile_name(id)
            .send();
        let out = {
            let _permit = s.permit().await;
            out.await
        };
        let Some(out) = or_absent(out, &KIND.address(), "GetInstanceProfile")? else {
            return Ok(None);
        };
        let Some(p) = out.instance_profile() else {
            return Ok(None);
        };
        let role = p.roles().first().map(|r| json!(r.role_name()));
        Ok(Some(Actual::from([
            ("name".into(), json!(p.instance_profile_name())),
            ("arn".into(), json!(p.arn())),
            ("role".into(), role.unwrap_or(Value::Null)),
        ])))
    }

    async fn find(&self, s: &Stack<'_>, _current: &Ids) -> Result<Vec<String>, AwsError> {
        Ok(vec![profile_name(s.cfg)])
    }

    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError> {
        let role = parent_id(ids, KIND, Kind::IamRole)?;
        let iam = &s.clients.iam;
        let out = iam
            .create_instance_profile()
            .instance_profile_name(profile_name(s.cfg))
            .set_tags(Some(tags::iam(s.cfg, KIND, "CreateInstanceProfile")?))
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some("EntityAlreadyExists") => {}
            Err(e) => return Err(AwsError::new(KIND.address(), "CreateInstanceProfile", e)),
        }
        // IAM is eventually consistent: a role created a moment ago can be unknown
        // (NoSuchEntity) to the call that names it (terraform-provider-aws retries the
        // same for its propagation timeout).
        retry_while(
            Backoff::for_at_most(IAM_PROPAGATION).logged(),
            role_not_yet_visible,
            || async {
                iam.add_role_to_instance_profile()
                    .instance_profile_name(profile_name(s.cfg))
                    .role_name(&role)
                    .send()
                    .await
                    .map_err(|e| AwsError::new(KIND.address(), "AddRoleToInstanceProfile", e))
            },
        )
        .await?;
        Ok(profile_name(s.cfg))
    }

    async fn update(&self, s: &Stack<'_>, id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        if change.attr != "role" {
            return Err(change.not_in_place());
        }
        let iam = &s.clients.iam;
        if let Some(old) = change.actual.get("role").and_then(Value::as_str) {
            iam.remove_role_from_instance_profile()
                .instance_profile_name(id)
                .role_name(old)
                .send()
                .await
                .map_err(|e| AwsError::new(change.address, "RemoveRoleFromInstanceProfile", e))?;
        }
        iam.add_role_to_instance_profile()
            .instance_profile_name(id)
            .role_name(change.value.as_str().unwrap_or_default())
            .send()
            .await
            .map_err(|e| AwsError::new(change.address, "AddRoleToInstanceProfile", e))?;
        Ok(())
    }

    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError> {
        let iam = &s.clients.iam;
        let addr = KIND.address();
        if let Ok(out) = iam
            .get_instance_profile()
            .instance_profile_name(id)
            .send()
            .await
            && let Some(p) = out.instance_profile()
        {
            for r in p.roles() {
                let out = iam
                    .remove_role_from_instance_profile()
                    .instance_profile_name(id)
                    .role_name(r.role_name())
                    .send()
                    .await;
                or_absent(out, &addr, "RemoveRoleFromInstanceProfile")?;
            }
        }
        let out = iam
            .delete_instance_profile()
            .instance_profile_name(id)
            .send()
            .await;
        or_absent(out, &addr, "DeleteInstanceProfile")?;
        Ok(())
    }
}
