//! Where artifacts are published: a local directory or `s3://BUCKET/PREFIX`.
//!
//! The layout under the root is the `model` crate's and exactly what the server's
//! `--model DIR|s3://BUCKET/PREFIX` reads: `<root>/latest` and
//! `<root>/<version>/{manifest.json, model.json, evaluation.svg, checksums}`. So
//! `pipeline train --models s3://b/models` and `server --model s3://b/models` meet.
//!
//! On S3 a version's files are written first and its `checksums` last (a reader that
//! finds `checksums` finds every file it lists), then `latest` only on promotion.

use std::path::PathBuf;

use model::artifact::{self, CHECKSUMS_FILE, LATEST_FILE};
use model::location::key;
use model::{Artifact, ArtifactError, ArtifactFiles, Location, S3Error};

use super::TrainError;
use crate::etl::source::{s3_client, sdk_config_from_env};

/// A store with its S3 client (made once, from the standard AWS configuration).
#[derive(Debug)]
pub struct Store {
    pub location: Location,
    s3: Option<aws_sdk_s3::Client>,
}

impl Store {
    pub async fn open(location: Location) -> Store {
        let s3 = match location {
            Location::S3 { .. } => Some(s3_client(&sdk_config_from_env().await)),
            Location::Dir(_) => None,
        };
        Store { location, s3 }
    }

    /// With a given client (tests).
    pub fn with_client(location: Location, client: aws_sdk_s3::Client) -> Store {
        Store {
            location,
            s3: Some(client),
        }
    }

    fn s3_err(bucket: &str, key: &str, message: String) -> TrainError {
        S3Error::new(bucket, key, message).into()
    }

    fn client(&self, bucket: &str, key: &str) -> Result<&aws_sdk_s3::Client, TrainError> {
        self.s3.as_ref().ok_or_else(|| {
            Self::s3_err(
                bucket,
                key,
                "no S3 client (store opened as a directory)".into(),
            )
        })
    }

    /// `Ok(None)` when the object does not exist.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, TrainError> {
        let client = self.client(bucket, key)?;
        let out = match client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) => {
                if e.as_service_error().is_some_and(|se| se.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(Self::s3_err(
                    bucket,
                    key,
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                ));
            }
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| Self::s3_err(bucket, key, format!("reading the body: {e}")))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn put(&self, bucket: &str, key: &str, content: Vec<u8>) -> Result<(), TrainError> {
        let client = self.client(bucket, key)?;
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(content.into())
            .send()
            .await
            .map_err(|e| {
                Self::s3_err(
                    bucket,
                    key,
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                )
            })?;
        Ok(())
    }

    /// The version `latest` names, or `None` when there is no `latest` yet.
    pub async fn latest(&self) -> Result<Option<String>, TrainError> {
        match &self.location {
            Location::Dir(root) => match artifact::latest(root) {
                Ok(v) => Ok(Some(v)),
                Err(ArtifactError::Missing { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Location::S3 { bucket, prefix } => {
                let k = key(prefix, LATEST_FILE);
                match self.get(bucket, &k).await? {
                    None => Ok(None),
                    Some(raw) => artifact::parse_latest(&raw).map(Some).map_err(|_| {
                        TrainError::Artifact(ArtifactError::Malformed {
                            file: format!("s3://{bucket}/{k}"),
                            reason: "does not hold a version name".into(),
                        })
                    }),
                }
            }
        }
    }

    /// Loads and verifies one version (checksums, schema version, parameters).
    pub async fn load(&self, version: &str) -> Result<Artifact, TrainError> {
        artifact::validate_version_name(version)?;
        match &self.location {
            Location::Dir(root) => Ok(artifact::load(root, Some(version))?),
            Location::S3 { bucket, prefix } => {
                let vprefix = key(prefix, version);
                let origin = format!("s3://{bucket}/{vprefix}/");
                let sums_key = key(&vprefix, CHECKSUMS_FILE);
                let sums = self.get(bucket, &sums_key).await?.ok_or_else(|| {
                    TrainError::Artifact(ArtifactError::Missing {
                        file: format!("{origin}{CHECKSUMS_FILE}"),
                    })
                })?;
                let listed = artifact::parse_checksums(&sums).map_err(|reason| {
                    ArtifactError::Malformed {
                        file: format!("{origin}{CHECKSUMS_FILE}"),
                        reason,
                    }
                })?;
                let mut files = ArtifactFiles::new();
                for name in listed.keys() {
                    let content =
                        self.get(bucket, &key(&vprefix, name))
                            .await?
                            .ok_or_else(|| {
                                TrainError::Artifact(ArtifactError::Missing {
                                    file: format!("{origin}{name}"),
                                })
                            })?;
                    files.insert(name.clone(), content);
                }
                files.insert(CHECKSUMS_FILE.to_string(), sums);
                let a = Artifact::from_files(&files, &origin)?;
                if a.version() != version {
                    return Err(ArtifactError::VersionMismatch {
                        file: format!("{origin}manifest.json"),
                        expected: version.to_string(),
                        found: a.manifest.model_version,
                    }
                    .into());
                }
                Ok(a)
            }
        }
    }

    /// Writes a new version (never overwriting one) without moving `latest`. Returns
    /// where it went.
    pub async fn save(&self, a: &Artifact) -> Result<String, TrainError> {
        match &self.location {
            Location::Dir(root) => {
                let root = root.clone();
                let a = a.clone();
                let dir = tokio::task::spawn_blocking(move || a.save(&root))
                    .await
                    .map_err(|e| TrainError::Join(e.to_string()))??;
                Ok(dir.display().to_string())
            }
            Location::S3 { bucket, prefix } => {
                let vprefix = key(prefix, a.version());
                let sums_key = key(&vprefix, CHECKSUMS_FILE);
                if self.get(bucket, &sums_key).await?.is_some() {
                    return Err(TrainError::Artifact(ArtifactError::AlreadyExists {
                        path: PathBuf::from(format!("s3://{bucket}/{vprefix}")),
                    }));
                }
                let mut files = a.to_files();
                let sums = files.remove(CHECKSUMS_FILE).unwrap_or_default();
                for (name, content) in files {
                    self.put(bucket, &key(&vprefix, &name), content).await?;
                }
                self.put(bucket, &sums_key, sums).await?;
                Ok(format!("s3://{bucket}/{vprefix}/"))
            }
        }
    }

    /// Points `latest` at `version` (which must load cleanly).
    pub async fn promote(&self, version: &str) -> Result<(), TrainError> {
        match &self.location {
            Location::Dir(root) => Ok(artifact::promote(root, version)?),
            Location::S3 { bucket, prefix } => {
                self.load(version).await?;
                self.put(
                    bucket,
                    &key(prefix, LATEST_FILE),
                    format!("{version}\n").into_bytes(),
                )
                .await
            }
        }
    }
}
