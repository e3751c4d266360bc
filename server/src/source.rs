//! Where the model comes from: a local artifact root or S3, `latest` or a pinned version.
//!
//! `--model` accepts `DIR`, `DIR@VERSION`, `s3://BUCKET/PREFIX` or
//! `s3://BUCKET/PREFIX@VERSION`. The layout under the root/prefix is the `model` crate's
//! (`latest`, `<version>/manifest.json`, ...). From S3 the server reads `latest` (unless
//! pinned), then `<version>/checksums`, then every file it lists, and verifies them with
//! [`model::Artifact::from_files`], the same check a local load makes.
//!
//! The S3 client takes the standard AWS configuration from the environment; when
//! `AWS_ENDPOINT_URL` is set (an S3-compatible store or the emulator) it uses path-style
//! addressing.

use model::artifact::{self, CHECKSUMS_FILE, LATEST_FILE};
use model::location::key;
use model::{Artifact, ArtifactError, ArtifactFiles, Location, LocationError, S3Error};

/// A parsed `--model` value: where the artifacts are, and a pinned version or `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub location: Location,
    pub version: Option<String>,
}

/// Why a model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid model source {value:?}: {reason}")]
    Parse {
        value: String,
        #[source]
        reason: LocationError,
    },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("loading task failed: {0}")]
    Join(String),
}

impl std::str::FromStr for ModelSource {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A trailing @VERSION only counts when it is a version name, so a directory
        // with an '@' in its path still works.
        let (base, version) = match s.rsplit_once('@') {
            Some((b, v)) if artifact::validate_version_name(v).is_ok() => (b, Some(v.to_string())),
            _ => (s, None),
        };
        let location = base.parse().map_err(|reason| SourceError::Parse {
            value: s.to_string(),
            reason,
        })?;
        Ok(ModelSource { location, version })
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.location),
            None => write!(f, "{}", self.location),
        }
    }
}

/// Fetches and verifies artifacts from a [`ModelSource`], reusing one S3 client.
#[derive(Debug)]
pub struct Fetcher {
    pub source: ModelSource,
    s3: tokio::sync::OnceCell<aws_sdk_s3::Client>,
}

impl Fetcher {
    pub fn new(source: ModelSource) -> Fetcher {
        Fetcher {
            source,
            s3: tokio::sync::OnceCell::new(),
        }
    }

    /// Loads the configured version (or `latest`) and verifies it.
    pub async fn fetch(&self) -> Result<Artifact, SourceError> {
        let version = self.source.version.clone();
        match &self.source.location {
            Location::Dir(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || artifact::load(&root, version.as_deref()))
                    .await
                    .map_err(|e| SourceError::Join(e.to_string()))?
                    .map_err(SourceError::from)
            }
            Location::S3 { bucket, prefix } => {
                let client = self.s3.get_or_init(s3_client).await;
                fetch_s3(client, bucket, prefix, version.as_deref()).await
            }
        }
    }
}

/// The S3 client every part of the server uses (standard configuration; path-style
/// addressing when `AWS_ENDPOINT_URL` is set).
pub(crate) async fn s3_client() -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk);
    if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        b = b.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, SourceError> {
    let err = |message: String| SourceError::S3(S3Error::new(bucket, key, message));
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            let message = match e.as_service_error() {
                Some(se) if se.is_no_such_key() => "no such key".to_string(),
                _ => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            };
            err(message)
        })?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| err(format!("reading the body: {e}")))?;
    Ok(body.into_bytes().to_vec())
}

/// Fetches `<prefix>/latest` (unless `version`), the checksums file and every file it
/// lists, and verifies the whole.
pub async fn fetch_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    version: Option<&str>,
) -> Result<Artifact, SourceError> {
    let version = match version {
        Some(v) => v.to_string(),
        None => {
            let k = key(prefix, LATEST_FILE);
            let raw = get(client, bucket, &k).await?;
            artifact::parse_latest(&raw).map_err(|_| {
                SourceError::Artifact(ArtifactError::Malformed {
                    file: format!("s3://{bucket}/{k}"),
                    reason: "does not hold a version name".into(),
                })
            })?
        }
    };
    artifact::validate_version_name(&version)?;
    let vprefix = key(prefix, &version);
    let origin = format!("s3://{bucket}/{vprefix}/");
    let sums = get(client, bucket, &key(&vprefix, CHECKSUMS_FILE)).await?;
    let listed = artifact::parse_checksums(&sums).map_err(|reason| ArtifactError::Malformed {
        file: format!("{origin}{CHECKSUMS_FILE}"),
        reason,
    })?;
    let mut files = ArtifactFiles::new();
    for name in listed.keys() {
        files.insert(
            name.clone(),
            get(client, bucket, &key(&vprefix, name)).await?,
        );
    }
    files.insert(CHECKSUMS_FILE.to_string(), sums);
    let a = Artifact::from_files(&files, &origin)?;
    if a.version() != version {
        return Err(ArtifactError::VersionMismatch {
            file: format!("{origin}manifest.json"),
            expected: version,
            found: a.manifest.model_version,
        }
        .into());
    }
    Ok(a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            "s3://b/models@20261124T170000Z-abc"
                .parse::<ModelSource>()
                .unwrap(),
            ModelSource {
                location: Location::S3 {
                    bucket: "b".into(),
                    prefix: "models".into(),
                },
                version: Some("20261124T170000Z-abc".into())
            }
        );
        assert_eq!(
            "s3://b".parse::<ModelSource>().unwrap(),
            ModelSource {
                location: Location::S3 {
                    bucket: "b".into(),
                    prefix: "".into(),
                },
                version: None
            }
        );
        assert_eq!(
            "/srv/m@x/models/".parse::<ModelSource>().unwrap(),
            ModelSource {
                location: Location::Dir("/srv/m@x/models/".into()),
                version: None
            }
        );
        assert!("http://x/y".parse::<ModelSource>().is_err());
        assert!("s3:///x".parse::<ModelSource>().is_err());
        assert!("".parse::<ModelSource>().is_err());
    }
}
