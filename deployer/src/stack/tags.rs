//! The tags the deployer manages: set at creation, compared for drift, searched by.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde_json::Value;

use super::{Attr, Kind, Stack, Want};
use crate::aws::AwsError;
use crate::config::Config;

/// The `managed-by` tag value.
pub const MANAGED_BY: &str = "deployer";
/// The tag naming a resource's address in the state.
pub const ADDRESS_TAG: &str = "deployer:address";

/// The tags of a resource. Shared stack resources have colour `shared` and release
/// `none`; instances carry their colour and release.
pub fn tags_for(cfg: &Config, address: &str, color: &str, release: &str) -> Vec<(String, String)> {
    let name = address
        .split_once('.')
        .map(|(t, n)| format!("{}-{}-{n}", cfg.app, t.trim_start_matches("aws_")))
        .unwrap_or_else(|| format!("{}-{address}", cfg.app));
    vec![
        ("Name".into(), name.replace('_', "-")),
        ("app".into(), cfg.app.clone()),
        ("managed-by".into(), MANAGED_BY.into()),
        ("color".into(), color.into()),
        ("release".into(), release.into()),
        (ADDRESS_TAG.into(), address.into()),
    ]
}

pub fn tag_specification(rt: ResourceType, tags: &[(String, String)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn ec2_tags(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The tags of a resource of the shared stack.
pub(super) fn stack_tags(cfg: &Config, kind: Kind) -> Vec<(String, String)> {
    tags_for(cfg, &kind.address(), "shared", "none")
}

/// The `tags` attribute `kind` wants (updated in place).
pub(super) fn wanted(cfg: &Config, kind: Kind) -> Want {
    let tags = stack_tags(cfg, kind)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Want::in_place("tags", Attr::Known(Value::Object(tags)))
}

/// The tags to create an EC2 resource of `kind` with, in the create call itself.
pub(super) fn spec(cfg: &Config, kind: Kind, rt: ResourceType) -> TagSpecification {
    tag_specification(rt, &stack_tags(cfg, kind))
}

/// The tags to create an IAM resource of `kind` with.
pub(super) fn iam(
    cfg: &Config,
    kind: Kind,
    action: &'static str,
) -> Result<Vec<aws_sdk_iam::types::Tag>, AwsError> {
    stack_tags(cfg, kind)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| AwsError::other(kind.address(), action, e.to_string()))
        })
        .collect()
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// The filters that find the EC2 resources of `kind` by their tags.
pub(super) fn filters(cfg: &Config, kind: Kind) -> Vec<Filter> {
    let mut f = stack_filters(cfg);
    f.push(tag_filter(ADDRESS_TAG, &kind.address()));
    f
}

/// The filters that find every EC2 resource of the stack, whatever its kind: one
/// listing per type in a refresh ([`super::snapshot`]), split by [`has_address`].
pub(super) fn stack_filters(cfg: &Config) -> Vec<Filter> {
    vec![
        tag_filter("app", &cfg.app),
        tag_filter("managed-by", MANAGED_BY),
    ]
}

/// Whether `actual` carries `kind`'s address tag.
pub(super) fn has_address(actual: &[Tag], kind: Kind) -> bool {
    let addr = kind.address();
    actual
        .iter()
        .any(|t| t.key() == Some(ADDRESS_TAG) && t.value() == Some(addr.as_str()))
}

/// The managed tags among `actual` (other tags people add are not drift).
pub(super) fn managed(actual: &[Tag]) -> Value {
    const KEYS: [&str; 6] = ["Name", "app", "managed-by", "color", "release", ADDRESS_TAG];
    Value::Object(
        actual
            .iter()
            .filter_map(|t| {
                let k = t.key()?;
                KEYS.contains(&k)
                    .then(|| (k.to_string(), Value::String(t.value().unwrap_or("").into())))
            })
            .collect(),
    )
}

/// Sets the managed tags of the EC2 resource `id` of `kind` to the wanted ones.
pub(super) async fn put(s: &Stack<'_>, kind: Kind, id: &str) -> Result<(), AwsError> {
    s.clients
        .ec2
        .create_tags()
        .resources(id)
        .set_tags(Some(ec2_tags(&stack_tags(s.cfg, kind))))
        .send()
        .await
        .map_err(|e| AwsError::new(kind.address(), "CreateTags", e))?;
    Ok(())
}
