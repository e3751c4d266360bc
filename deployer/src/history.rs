//! The audit log: one object per operation under `<state key>.history/` in the state
//! bucket, named `<UTC timestamp>-<operation>-<random>.json` and written with
//! `If-None-Match: *`, so entries are only ever added, never replaced.

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::{AwsError, Clients};

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: chrono::DateTime<chrono::Utc>,
    /// `user@host`.
    pub who: String,
    /// The CI run, if any.
    #[serde(default)]
    pub ci_run: Option<String>,
    /// `apply`, `destroy`, `deploy`, `rollback`, `force-unlock`, ...
    pub operation: String,
    /// What it was about (release, colours, instance ids, ...).
    #[serde(default)]
    pub what: Value,
    /// `ok`, or `failed: <why>`.
    pub outcome: String,
}

impl Entry {
    pub fn new(operation: &str, what: Value, outcome: impl Into<String>) -> Entry {
        Entry {
            at: chrono::Utc::now(),
            who: crate::lock::who(),
            ci_run: crate::lock::ci_run(),
            operation: operation.into(),
            what,
            outcome: outcome.into(),
        }
    }

    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

impl std::fmt::Display for Entry {
    /// One line of `deployer history`: when, operation, who, outcome, what.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {:12} {:24} {}  {}",
            self.at.format("%Y-%m-%d %H:%M:%S"),
            self.operation,
            self.who,
            self.outcome,
            self.what
        )
    }
}

/// The log of one state object.
#[derive(Debug, Clone)]
pub struct History {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl History {
    pub fn new(clients: &Clients, bucket: &str, state_key: &str) -> History {
        History {
            s3: clients.s3.clone(),
            bucket: bucket.into(),
            prefix: format!("{state_key}.history/"),
        }
    }

    /// Adds an entry (never overwrites one).
    pub async fn append(&self, e: &Entry) -> Result<String, AwsError> {
        let id = crate::state::random_id();
        let key = format!(
            "{}{}-{}-{}.json",
            self.prefix,
            e.at.format("%Y%m%dT%H%M%S%.6fZ"),
            e.operation,
            &id[..8]
        );
        let url = format!("s3://{}/{key}", self.bucket);
        let body = serde_json::to_vec_pretty(e)
            .map_err(|err| AwsError::other(&url, "PutObject", err.to_string()))?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("application/json")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| AwsError::new(&url, "PutObject", err))?;
        Ok(key)
    }

    /// Appends, logging instead of failing (the operation itself already happened).
    pub async fn record(&self, e: Entry) {
        if let Err(err) = self.append(&e).await {
            tracing::warn!("writing the history entry for {}: {err}", e.operation);
        }
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, AwsError> {
        let url = format!("s3://{}/{}", self.bucket, self.prefix);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::new(&url, "ListObjectsV2", e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            token = out.next_continuation_token().map(String::from);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        let mut entries = Vec::new();
        for key in keys {
            let u = format!("s3://{}/{key}", self.bucket);
            let out = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| AwsError::new(&u, "GetObject", e))?;
            let bytes = out
                .body
                .collect()
                .await
                .map_err(|e| AwsError::other(&u, "GetObject", e.to_string()))?
                .into_bytes();
            match serde_json::from_slice::<Entry>(&bytes) {
                Ok(e) => entries.push(e),
                Err(e) => tracing::warn!("{u} is not a history entry: {e}"),
            }
        }
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }
}
