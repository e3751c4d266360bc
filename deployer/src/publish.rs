//! `deployer publish`: a release bundle in the artifact bucket.
//!
//! ```text
//! s3://<artifacts>/releases/<SHA>/server          the server binary for the instances
//! s3://<artifacts>/releases/<SHA>/manifest.json   {release, model_version, target, files: [{name, sha256, size}]}
//! s3://<artifacts>/models/latest                  the promoted model version (written by `pipeline train`)
//! ```
//!
//! The manifest is written last, so a bundle without one is incomplete and never
//! deployed. Instances verify every file against the manifest's sha256 before use.
//!
//! A release pins one model version: `--model-version latest` is resolved here, at
//! publish time, so instances never read "whatever `latest` is at boot". A model-only
//! release ([`publish_model_release`], `deploy --model`) is a manifest alone: it names
//! another release's server object (same key, same sha256) and a new model version.

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
    /// The object's key when it is not `releases/<release>/<name>`: a model-only
    /// release reuses the server object of the release it is based on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
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
    /// A model-only release: the release whose server binary it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub based_on: Option<String>,
    pub published_at: chrono::DateTime<chrono::Utc>,
    pub published_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("release name {0:?}: use 1-128 letters, digits, '.', '_' or '-' (a commit SHA)")]
    BadRelease(String),
    #[error("model version {0:?} is not a version name (YYYYMMDDTHHMMSSZ-<id>) or `latest`")]
    BadModelVersion(String),
    #[error(
        "no model has been promoted yet: s3://{bucket}/{key} does not exist (run the pipeline first)"
    )]
    NoLatestModel { bucket: String, key: String },
    #[error(
        "model {version} is not in the artifacts bucket: no s3://{bucket}/{key} (the file `pipeline train` writes last)"
    )]
    ModelMissing {
        version: String,
        bucket: String,
        key: String,
    },
    #[error("release {release} is already published with {detail}: refusing to overwrite it")]
    Conflict { release: String, detail: String },
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
        && release.len() <= 128
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

/// The key of one of `m`'s files: its own `key`, else `releases/<release>/<name>`.
pub fn file_key(m: &Manifest, f: &ManifestFile) -> String {
    f.key
        .clone()
        .unwrap_or_else(|| format!("{}{}", prefix(&m.release), f.name))
}

/// Where `pipeline train` writes in the artifacts bucket: `models/<version>/…` and
/// `models/latest`.
pub const MODELS_PREFIX: &str = "models/";
/// The file of a model version written last (so its presence means the version is whole).
pub const MODEL_LAST_FILE: &str = "checksums";

/// A model version name as `pipeline train` makes them: `YYYYMMDDTHHMMSSZ-` then 1 to
/// 32 of `[0-9a-z]` (the same rule as the `model` crate's, which the server applies).
pub fn check_model_version(v: &str) -> Result<(), PublishError> {
    let b = v.as_bytes();
    let ok = (18..=49).contains(&b.len())
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadModelVersion(v.to_string()))
    }
}

/// The concrete model version `wanted` names: `latest` is read from
/// `models/latest` now; either way the version must be whole in the bucket.
pub async fn resolve_model(
    clients: &Clients,
    bucket: &str,
    wanted: &str,
) -> Result<String, PublishError> {
    let version = if wanted == "latest" {
        let key = format!("{MODELS_PREFIX}latest");
        let Some(bytes) = get_object(clients, bucket, &key).await? else {
            return Err(PublishError::NoLatestModel {
                bucket: bucket.into(),
                key,
            });
        };
        String::from_utf8_lossy(&bytes).trim().to_string()
    } else {
        wanted.to_string()
    };
    check_model_version(&version)?;
    let key = format!("{MODELS_PREFIX}{version}/{MODEL_LAST_FILE}");
    let url = format!("s3://{bucket}/{key}");
    match clients
        .s3
        .head_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
    {
        Ok(_) => Ok(version),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
            Err(PublishError::ModelMissing {
                version,
                bucket: bucket.into(),
                key,
            })
        }
        Err(e) => Err(AwsError::new(&url, "HeadObject", e).into()),
    }
}

/// The model-only release of `model` on `base`'s server: `<server release>_<model>`,
/// where the server release is the one whose binary `base` serves. Deterministic, so
/// the same pair always gets the same name.
pub fn model_release_name(base: &Manifest, model: &str) -> String {
    format!(
        "{}_{model}",
        base.based_on.as_deref().unwrap_or(&base.release)
    )
}

/// Publishes the model-only release of `model` (a concrete version) on `base`'s server
/// binary: a manifest alone, whose files name `base`'s objects (same keys, same
/// sha256). Publishing the same pair again returns the manifest already there; a
/// different release under that name is refused.
pub async fn publish_model_release(
    clients: &Clients,
    bucket: &str,
    base: &Manifest,
    model: &str,
) -> Result<Manifest, PublishError> {
    check_model_version(model)?;
    let release = model_release_name(base, model);
    check_release(&release)?;
    let files: Vec<ManifestFile> = base
        .files
        .iter()
        .map(|f| ManifestFile {
            key: Some(file_key(base, f)),
            ..f.clone()
        })
        .collect();
    match read_manifest(clients, bucket, &release).await {
        Ok(existing) => {
            let same_files = existing.files.len() == files.len()
                && existing.files.iter().zip(&files).all(|(a, b)| {
                    a.sha256 == b.sha256 && file_key(&existing, a) == file_key(&existing, b)
                });
            if existing.model_version.as_deref() == Some(model) && same_files {
                tracing::info!(release, "model-only release already published");
                return Ok(existing);
            }
            return Err(PublishError::Conflict {
                release,
                detail: format!(
                    "model {} and server {}",
                    existing.model_version.as_deref().unwrap_or("-"),
                    existing
                        .files
                        .first()
                        .map(|f| f.sha256.as_str())
                        .unwrap_or("-")
                ),
            });
        }
        Err(PublishError::NotPublished { .. }) => {}
        Err(e) => return Err(e),
    }
    let manifest = Manifest {
        release: release.clone(),
        model_version: Some(model.to_string()),
        target: base.target.clone(),
        files,
        based_on: Some(
            base.based_on
                .clone()
                .unwrap_or_else(|| base.release.clone()),
        ),
        published_at: chrono::Utc::now(),
        published_by: crate::lock::who(),
    };
    put_manifest(clients, bucket, &manifest).await?;
    tracing::info!(release, model, "published a model-only release");
    Ok(manifest)
}

/// An object's bytes, `None` when there is no such key.
async fn get_object(
    clients: &Clients,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, PublishError> {
    let url = format!("s3://{bucket}/{key}");
    let out = match clients.s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(AwsError::new(&url, "GetObject", e).into()),
    };
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| AwsError::other(&url, "GetObject", e.to_string()))?
        .into_bytes();
    Ok(Some(bytes.to_vec()))
}

/// Writes `releases/<release>/manifest.json` (the last object of a release).
async fn put_manifest(clients: &Clients, bucket: &str, m: &Manifest) -> Result<(), PublishError> {
    let key = manifest_key(&m.release);
    let url = format!("s3://{bucket}/{key}");
    let body = serde_json::to_vec_pretty(m).map_err(|e| PublishError::BadManifest {
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
    Ok(())
}

/// Uploads the server binary and then the manifest. `model_version` `latest` is
/// resolved to the version `models/latest` names now.
pub async fn publish(
    clients: &Clients,
    bucket: &str,
    release: &str,
    server_binary: &Path,
    model_version: Option<&str>,
) -> Result<Manifest, PublishError> {
    check_release(release)?;
    let model_version = match model_version {
        Some("latest") => Some(resolve_model(clients, bucket, "latest").await?),
        Some(v) => {
            check_model_version(v)?;
            Some(v.to_string())
        }
        None => None,
    };
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
        key: None,
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
        model_version,
        target: Some(binary_target),
        files: vec![file],
        based_on: None,
        published_at: chrono::Utc::now(),
        published_by: crate::lock::who(),
    };
    put_manifest(clients, bucket, &manifest).await?;
    tracing::info!(release, url = %format!("s3://{bucket}/{}", manifest_key(release)), "published");
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
    let Some(bytes) = get_object(clients, bucket, &key).await? else {
        return Err(PublishError::NotPublished {
            release: release.into(),
            bucket: bucket.into(),
            key,
        });
    };
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
        // A commit SHA and a model version: a model-only release's name.
        assert!(
            check_release(&format!(
                "{}_20261128T074423Z-{}",
                "f".repeat(40),
                "a".repeat(32)
            ))
            .is_ok()
        );
        for bad in [
            "",
            "../x",
            "a/b",
            "a b",
            ".hidden",
            "x$(id)",
            &"a".repeat(129),
        ] {
            assert!(check_release(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn model_versions_are_checked_and_model_releases_named_after_the_server_release() {
        assert!(check_model_version("20261128T074423Z-1a2b3c4d").is_ok());
        for bad in [
            "latest",
            "",
            "20261128T074423Z-",
            "2026112xT074423Z-1",
            "20261128T074423Z-A",
            "../x",
        ] {
            assert!(check_model_version(bad).is_err(), "{bad:?} accepted");
        }
        let base = Manifest {
            release: "abc123".into(),
            model_version: Some("20260101T000000Z-1".into()),
            target: None,
            files: vec![ManifestFile {
                name: "server".into(),
                sha256: "00".into(),
                size: 1,
                key: None,
            }],
            based_on: None,
            published_at: chrono::Utc::now(),
            published_by: "me".into(),
        };
        let v2 = "20261128T074423Z-2";
        assert_eq!(model_release_name(&base, v2), "abc123_20261128T074423Z-2");
        assert_eq!(file_key(&base, &base.files[0]), "releases/abc123/server");
        // A model-only release of a model-only release still names the server's.
        let derived = Manifest {
            release: model_release_name(&base, v2),
            based_on: Some("abc123".into()),
            files: vec![ManifestFile {
                key: Some("releases/abc123/server".into()),
                ..base.files[0].clone()
            }],
            ..base.clone()
        };
        assert_eq!(
            model_release_name(&derived, "20261201T000000Z-3"),
            "abc123_20261201T000000Z-3"
        );
        assert_eq!(
            file_key(&derived, &derived.files[0]),
            "releases/abc123/server"
        );
        // Old manifests (no key, no based_on) still parse.
        let old = r#"{"release":"r","model_version":null,"files":[{"name":"server","sha256":"00","size":1}],"published_at":"2026-01-01T00:00:00Z","published_by":"x"}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(file_key(&m, &m.files[0]), "releases/r/server");
    }
}
