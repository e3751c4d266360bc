//! `deployer publish`: a release bundle in the artifact bucket.
//!
//! ```text
//! s3://<artifacts>/releases/<SHA>/server          the server binary for the instances
//! s3://<artifacts>/releases/<SHA>/manifest.json   {release, model_version, target, files: [{name, sha256, size}]}
//! ```
//!
//! The manifest is written last, so a bundle without one is incomplete and never
//! deployed. Instances verify every file against the manifest's sha256 before use.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::{AwsError, Clients};
use crate::target::{self, BinaryTarget};

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// `releases/<SHA>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub release: String,
    /// The model version the release serves (checked by the health gate).
    pub model_version: Option<String>,
    /// What the server binary runs on (architecture, static or which loader). Absent in
    /// manifests published before it was recorded.
    #[serde(default)]
    pub target: Option<BinaryTarget>,
    pub files: Vec<ManifestFile>,
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub published_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("release name {0:?}: use 1-64 letters, digits, '.', '_' or '-' (a commit SHA)")]
    BadRelease(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} cannot be the server binary: {why}")]
    NotRunnable {
        path: String,
        why: target::NotRunnable,
    },
    #[error("s3://{bucket}/{key} is not a release manifest: {detail}")]
    BadManifest {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("release {release} is not published: no s3://{bucket}/{key}")]
    NotPublished {
        release: String,
        bucket: String,
        key: String,
    },
}

/// A release name is used in S3 keys, tags, user data and file names: keep it tame.
pub fn check_release(release: &str) -> Result<(), PublishError> {
    let ok = !release.is_empty()
        && release.len() <= 64
        && !release.starts_with('.')
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadRelease(release.to_string()))
    }
}

pub fn prefix(release: &str) -> String {
    format!("releases/{release}/")
}

pub fn manifest_key(release: &str) -> String {
    format!("releases/{release}/manifest.json")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads the server binary and then the manifest.
pub async fn publish(
    clients: &Clients,
    bucket: &str,
    release: &str,
    server_binary: &Path,
    model_version: Option<&str>,
) -> Result<Manifest, PublishError> {
    check_release(release)?;
    let bytes = std::fs::read(server_binary).map_err(|source| PublishError::Read {
        path: server_binary.display().to_string(),
        source,
    })?;
    let binary_target = target::detect(&bytes).map_err(|why| PublishError::NotRunnable {
        path: server_binary.display().to_string(),
        why,
    })?;
    let file = ManifestFile {
        name: "server".into(),
        sha256: sha256_hex(&bytes),
        size: bytes.len() as u64,
    };
    let key = format!("{}server", prefix(release));
    let url = format!("s3://{bucket}/{key}");
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/octet-stream")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|e| AwsError::new(&url, "PutObject", e))?;
    let manifest = Manifest {
        release: release.to_string(),
        model_version: model_version.map(str::to_string),
        target: Some(binary_target),
        files: vec![file],
        published_at: chrono::Utc::now(),
        published_by: crate::lock::who(),
    };
    let key = manifest_key(release);
    let url = format!("s3://{bucket}/{key}");
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| PublishError::BadManifest {
        bucket: bucket.into(),
        key: key.clone(),
        detail: e.to_string(),
    })?;
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| AwsError::new(&url, "PutObject", e))?;
    tracing::info!(release, %url, "published");
    Ok(manifest)
}

/// Reads a release's manifest (a missing one: not published).
pub async fn read_manifest(
    clients: &Clients,
    bucket: &str,
    release: &str,
) -> Result<Manifest, PublishError> {
    check_release(release)?;
    let key = manifest_key(release);
    let url = format!("s3://{bucket}/{key}");
    let out = match clients
        .s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) => {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                return Err(PublishError::NotPublished {
                    release: release.into(),
                    bucket: bucket.into(),
                    key,
                });
            }
            return Err(AwsError::new(&url, "GetObject", e).into());
        }
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| AwsError::other(&url, "GetObject", e.to_string()))?
        .into_bytes();
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| PublishError::BadManifest {
        bucket: bucket.into(),
        key: key.clone(),
        detail: e.to_string(),
    })?;
    if m.release != release {
        return Err(PublishError::BadManifest {
            bucket: bucket.into(),
            key,
            detail: format!("it names release {:?}", m.release),
        });
    }
    Ok(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn release_names_are_tame() {
        assert!(check_release("3f9c2e1").is_ok());
        assert!(check_release("v1.2_rc-1").is_ok());
        for bad in [
            "",
            "../x",
            "a/b",
            "a b",
            ".hidden",
            "x$(id)",
            &"a".repeat(65),
        ] {
            assert!(check_release(bad).is_err(), "{bad:?} accepted");
        }
    }
}
