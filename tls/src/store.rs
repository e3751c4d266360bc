//! The ACME account and the certificate in S3, and the renewal lock.
//!
//! Layout under the prefix (default `tls/<ip>/`):
//!
//! | object | content |
//! | --- | --- |
//! | `accounts/<directory>.json` | the ACME account credentials (its private key), per directory URL |
//! | `certificate.json` | [`StoredCert`]: chain and private key together, so a reader never pairs a key with another certificate |
//! | `renew.lock` | [`LockRecord`]: who renews, until when |
//!
//! Every object is written with server-side encryption: SSE-KMS with the configured key,
//! else SSE-S3 (AES256). Who may read the prefix is the bucket policy's and the instance
//! role's business (the deployer's).
//!
//! The lock is a conditional write: `PUT renew.lock` with `If-None-Match: *` takes a free
//! lock; an expired one is taken over with `If-Match: <its ETag>`, so of two takers only
//! one wins; the holder releases it by overwriting it, again `If-Match` its own ETag,
//! with an expired record. Expiry is judged by the taker's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Serialize};

use crate::cert::StoredCert;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("s3://{bucket}/{key}: not valid JSON: {source}")]
    Json {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The renewal lock's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// A lock this process holds.
#[derive(Debug, Clone)]
pub struct RenewalLock {
    pub owner: String,
    etag: String,
}

/// Where the TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    kms_key_id: Option<String>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The conditional write lost: 412 Precondition Failed, or 409 when S3 saw two
/// conditional writes race.
fn lost_race<E>(e: &SdkError<E>) -> bool {
    matches!(status(e), Some(412 | 409))
}

impl TlsStore {
    /// `prefix` gets a trailing `/` if it lacks one (an empty prefix is the bucket root).
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
        kms_key_id: Option<String>,
    ) -> TlsStore {
        let mut prefix: String = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        TlsStore {
            s3,
            bucket: bucket.into(),
            prefix,
            kms_key_id: kms_key_id.filter(|k| !k.is_empty()),
        }
    }

    /// The default prefix for an address: `tls/<ip>/`.
    pub fn default_prefix(ip: std::net::IpAddr) -> String {
        format!("tls/{ip}/")
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full key of an object under the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn err(&self, key: &str, message: String) -> StoreError {
        StoreError::S3 {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            message,
        }
    }

    /// The account object's key for an ACME directory URL.
    pub fn account_key(&self, directory_url: &str) -> String {
        let name: String = directory_url
            .trim_start_matches("https://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.key(&format!("accounts/{name}.json"))
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_string);
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.err(key, format!("reading the body: {e}")))?;
                Ok(Some((body.into_bytes().to_vec(), etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err(key, DisplayErrorContext(&e).to_string())),
        }
    }

    /// Writes with encryption; `cond` is `If-None-Match: *` (None) or `If-Match: etag`.
    /// Returns the new ETag, or `None` when the condition failed.
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        cond: Option<Cond<'_>>,
    ) -> Result<Option<String>, StoreError> {
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match &self.kms_key_id {
            Some(id) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(id),
            None => req.server_side_encryption(ServerSideEncryption::Aes256),
        };
        req = match cond {
            Some(Cond::Absent) => req.if_none_match("*"),
            Some(Cond::Etag(etag)) => req.if_match(etag),
            None => req,
        };
        match req.send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e) if cond.is_some() && lost_race(&e) => Ok(None),
            Err(e) => Err(self.err(key, format!("{} ({:?})", DisplayErrorContext(&e), e.code()))),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str, b: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(b).map_err(|source| StoreError::Json {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            source,
        })
    }

    /// The stored account credentials for `directory_url` (instant-acme's JSON).
    pub async fn load_account(&self, directory_url: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .get(&self.account_key(directory_url))
            .await?
            .map(|(b, _)| b))
    }

    pub async fn save_account(&self, directory_url: &str, json: Vec<u8>) -> Result<(), StoreError> {
        self.put(&self.account_key(directory_url), json, None)
            .await
            .map(|_| ())
    }

    /// The current certificate, if one was ever stored.
    pub async fn load_cert(&self) -> Result<Option<StoredCert>, StoreError> {
        let key = self.key("certificate.json");
        match self.get(&key).await? {
            Some((b, _)) => Ok(Some(self.json(&key, &b)?)),
            None => Ok(None),
        }
    }

    pub async fn save_cert(&self, cert: &StoredCert) -> Result<(), StoreError> {
        let key = self.key("certificate.json");
        let body = serde_json::to_vec(cert).map_err(|source| StoreError::Json {
            bucket: self.bucket.clone(),
            key: key.clone(),
            source,
        })?;
        self.put(&key, body, None).await.map(|_| ())
    }

    /// The lock's current record, if any.
    pub async fn lock_record(&self) -> Result<Option<LockRecord>, StoreError> {
        let key = self.key("renew.lock");
        match self.get(&key).await? {
            Some((b, _)) => Ok(Some(self.json(&key, &b)?)),
            None => Ok(None),
        }
    }

    /// Takes the renewal lock for `ttl` if it is free or expired; `None` when another
    /// owner holds it (or won the race for it).
    pub async fn try_lock(
        &self,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<RenewalLock>, StoreError> {
        let key = self.key("renew.lock");
        let record = |now: SystemTime| LockRecord {
            owner: owner.to_string(),
            expires_unix_ms: unix_ms(now + ttl),
        };
        let body = |r: &LockRecord| serde_json::to_vec(r).unwrap_or_default();
        if let Some(etag) = self
            .put(&key, body(&record(SystemTime::now())), Some(Cond::Absent))
            .await?
        {
            return Ok(Some(RenewalLock {
                owner: owner.to_string(),
                etag,
            }));
        }
        let Some((current, Some(etag))) = self.get(&key).await? else {
            return Ok(None); // released and deleted meanwhile: try again next time
        };
        // An unreadable lock counts as expired: it can only be our own format.
        let expired = self
            .json::<LockRecord>(&key, &current)
            .map(|r| r.expires_unix_ms <= unix_ms(SystemTime::now()))
            .unwrap_or(true);
        if !expired {
            return Ok(None);
        }
        Ok(self
            .put(
                &key,
                body(&record(SystemTime::now())),
                Some(Cond::Etag(&etag)),
            )
            .await?
            .map(|etag| RenewalLock {
                owner: owner.to_string(),
                etag,
            }))
    }

    /// Releases a lock: overwrites it with an expired record, only if it is still ours.
    /// Returns false when it was not ours any more (it had expired and was taken over).
    pub async fn release(&self, lock: RenewalLock) -> Result<bool, StoreError> {
        let key = self.key("renew.lock");
        let body = serde_json::to_vec(&LockRecord {
            owner: lock.owner.clone(),
            expires_unix_ms: 0,
        })
        .unwrap_or_default();
        Ok(self
            .put(&key, body, Some(Cond::Etag(&lock.etag)))
            .await?
            .is_some())
    }
}

#[derive(Debug, Clone, Copy)]
enum Cond<'a> {
    Absent,
    Etag(&'a str),
}
