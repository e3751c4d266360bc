//! The lock's single conditional writes, one `match` arm per backend: take (or take
//! over an expired lease), read, renew, delete. Each is one conditional request, so two
//! contenders never both win.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};

use super::{Attempt, Backend, LockError, LockInfo, Locker};
use crate::aws::{AwsError, code_of};

impl Locker {
    pub(super) async fn try_acquire(&self, info: &LockInfo) -> Result<Attempt, LockError> {
        // A few rounds: the holder may vanish between our failed write and our read.
        for _ in 0..5 {
            match &self.backend {
                Backend::Dynamo { client, table } => {
                    let put = client
                        .put_item()
                        .table_name(table)
                        .set_item(Some(dynamo_item(info)))
                        .condition_expression("attribute_not_exists(LockID) OR Expires < :now")
                        .expression_attribute_values(
                            ":now",
                            AttributeValue::N(Utc::now().timestamp_millis().to_string()),
                        )
                        .send()
                        .await;
                    match put {
                        Ok(_) => return Ok(Attempt::Won(None)),
                        Err(e) if code_of(&e) == Some("ConditionalCheckFailedException") => {}
                        Err(e) => return Err(AwsError::new(self.resource(), "PutItem", e).into()),
                    }
                }
                Backend::S3 {
                    client,
                    bucket,
                    key,
                } => {
                    let put = client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .if_none_match("*")
                        .body(ByteStream::from(json(info)))
                        .send()
                        .await;
                    match put {
                        Ok(out) => return Ok(Attempt::Won(out.e_tag)),
                        Err(e) if is_precondition(&e) => {}
                        Err(e) => {
                            return Err(AwsError::new(self.resource(), "PutObject", e).into());
                        }
                    }
                    // Someone holds it: take it over only if the lease ran out, with a
                    // write conditional on the expired object's ETag.
                    if let Some((holder, Some(etag))) = self.read().await?
                        && holder.expires < Utc::now()
                    {
                        let put = client
                            .put_object()
                            .bucket(bucket)
                            .key(key)
                            .if_match(etag)
                            .body(ByteStream::from(json(info)))
                            .send()
                            .await;
                        match put {
                            Ok(out) => {
                                tracing::warn!("took over an expired lock: {holder}");
                                return Ok(Attempt::Won(out.e_tag));
                            }
                            Err(e) if is_precondition(&e) => {}
                            Err(e) => {
                                return Err(AwsError::new(self.resource(), "PutObject", e).into());
                            }
                        }
                    }
                }
            }
            if let Some((holder, _)) = self.read().await? {
                return Ok(Attempt::Held(holder));
            }
        }
        Err(LockError::Corrupt {
            path: self.path.clone(),
            detail: "the lock kept changing hands while being read".into(),
        })
    }

    /// The lock record and (S3) its ETag.
    pub(super) async fn read(&self) -> Result<Option<(LockInfo, Option<String>)>, LockError> {
        match &self.backend {
            Backend::Dynamo { client, table } => {
                let got = client
                    .get_item()
                    .table_name(table)
                    .key("LockID", AttributeValue::S(self.path.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| AwsError::new(self.resource(), "GetItem", e))?;
                match got.item {
                    None => Ok(None),
                    Some(item) => Ok(Some((self.parse_item(&item)?, None))),
                }
            }
            Backend::S3 {
                client,
                bucket,
                key,
            } => {
                let got = client.get_object().bucket(bucket).key(key).send().await;
                let out = match got {
                    Ok(o) => o,
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                        return Ok(None);
                    }
                    Err(e) => return Err(AwsError::new(self.resource(), "GetObject", e).into()),
                };
                let etag = out.e_tag.clone();
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| AwsError::other(self.resource(), "GetObject", e.to_string()))?
                    .into_bytes();
                let info: LockInfo =
                    serde_json::from_slice(&bytes).map_err(|e| LockError::Corrupt {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })?;
                Ok(Some((info, etag)))
            }
        }
    }

    pub(super) fn parse_item(
        &self,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<LockInfo, LockError> {
        let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let corrupt = |what: &str| LockError::Corrupt {
            path: self.path.clone(),
            detail: format!("missing or bad {what}"),
        };
        let expires = item
            .get("Expires")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| corrupt("Expires"))?;
        let created = s("Created")
            .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| c.with_timezone(&Utc))
            .ok_or_else(|| corrupt("Created"))?;
        Ok(LockInfo {
            id: s("ID").ok_or_else(|| corrupt("ID"))?,
            path: self.path.clone(),
            operation: s("Operation").unwrap_or_default(),
            who: s("Who").unwrap_or_default(),
            created,
            ci_run: s("CIRun").filter(|r| !r.is_empty()),
            expires,
        })
    }

    /// Extends the lease of lock `id`. `Ok(false)`: it is no longer ours.
    pub(super) async fn renew(
        &self,
        id: &str,
        etag: &mut Option<String>,
    ) -> Result<bool, LockError> {
        let expires = Utc::now() + self.lease_delta();
        match &self.backend {
            Backend::Dynamo { client, table } => {
                let upd = client
                    .update_item()
                    .table_name(table)
                    .key("LockID", AttributeValue::S(self.path.clone()))
                    .update_expression("SET Expires = :e")
                    .condition_expression("ID = :id")
                    .expression_attribute_values(
                        ":e",
                        AttributeValue::N(expires.timestamp_millis().to_string()),
                    )
                    .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
                    .send()
                    .await;
                match upd {
                    Ok(_) => Ok(true),
                    Err(e) if code_of(&e) == Some("ConditionalCheckFailedException") => Ok(false),
                    Err(e) => Err(AwsError::new(self.resource(), "UpdateItem", e).into()),
                }
            }
            Backend::S3 {
                client,
                bucket,
                key,
            } => {
                let Some((mut info, _)) = self.read().await? else {
                    return Ok(false);
                };
                if info.id != id {
                    return Ok(false);
                }
                info.expires = expires;
                let mut put = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(json(&info)));
                if let Some(tag) = etag.as_deref() {
                    put = put.if_match(tag);
                }
                match put.send().await {
                    Ok(out) => {
                        *etag = out.e_tag;
                        Ok(true)
                    }
                    Err(e) if is_precondition(&e) => Ok(false),
                    Err(e) => Err(AwsError::new(self.resource(), "PutObject", e).into()),
                }
            }
        }
    }

    /// Deletes lock `id` (S3: only if it still has `etag`). `Ok(false)`: not ours.
    pub(super) async fn delete(&self, id: &str, etag: Option<&str>) -> Result<bool, LockError> {
        match &self.backend {
            Backend::Dynamo { client, table } => {
                let del = client
                    .delete_item()
                    .table_name(table)
                    .key("LockID", AttributeValue::S(self.path.clone()))
                    .condition_expression("ID = :id")
                    .expression_attribute_values(":id", AttributeValue::S(id.to_string()))
                    .send()
                    .await;
                match del {
                    Ok(_) => Ok(true),
                    Err(e) if code_of(&e) == Some("ConditionalCheckFailedException") => Ok(false),
                    Err(e) => Err(AwsError::new(self.resource(), "DeleteItem", e).into()),
                }
            }
            Backend::S3 {
                client,
                bucket,
                key,
            } => {
                let mut del = client.delete_object().bucket(bucket).key(key);
                if let Some(tag) = etag {
                    del = del.if_match(tag);
                }
                match del.send().await {
                    Ok(_) => Ok(true),
                    Err(e) if is_precondition(&e) || code_of(&e) == Some("NoSuchKey") => Ok(false),
                    Err(e) => Err(AwsError::new(self.resource(), "DeleteObject", e).into()),
                }
            }
        }
    }
}

pub(super) fn describe_current(current: Option<&LockInfo>) -> String {
    match current {
        Some(c) => format!("the current lock is: {c}"),
        None => "it is not locked".into(),
    }
}

pub(super) fn is_precondition<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> bool {
    matches!(
        code_of(e),
        Some("PreconditionFailed") | Some("ConditionalRequestConflict")
    )
}

pub(super) fn json(info: &LockInfo) -> Vec<u8> {
    serde_json::to_vec_pretty(info).unwrap_or_default()
}

pub(super) fn dynamo_item(info: &LockInfo) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::new();
    let s = |v: &str| AttributeValue::S(v.to_string());
    item.insert("LockID".into(), s(&info.path));
    item.insert("ID".into(), s(&info.id));
    item.insert("Operation".into(), s(&info.operation));
    item.insert("Who".into(), s(&info.who));
    item.insert("Created".into(), s(&info.created.to_rfc3339()));
    if let Some(run) = &info.ci_run {
        item.insert("CIRun".into(), s(run));
    }
    item.insert(
        "Expires".into(),
        AttributeValue::N(info.expires.timestamp_millis().to_string()),
    );
    item
}
