//! Where input files come from: an S3 prefix (`s3://BUCKET/PREFIX`, read with the AWS
//! SDK; `AWS_ENDPOINT_URL` points it at an emulator) or a local directory (benchmarks,
//! the local demo). Objects are read as a stream of byte chunks, never whole.

use std::fmt;
use std::path::PathBuf;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::AsyncReadExt;

use model::location::key;
use model::{Location, LocationError};

use super::EtlError;

/// `--source`/`--out`: the shared parser, with the ETL's own messages. An empty value
/// is the current directory, as it has always been for the ETL.
fn parse(location: &str) -> Result<Location, EtlError> {
    match location.parse() {
        Ok(l) => Ok(l),
        Err(LocationError::Empty) => Ok(Location::Dir(PathBuf::new())),
        Err(LocationError::NoBucket) => Err(EtlError::Config(format!(
            "not an S3 location: {location:?}"
        ))),
        Err(LocationError::Scheme) => Err(EtlError::Config(format!(
            "unsupported source {location:?}: use s3://BUCKET/PREFIX or a directory"
        ))),
    }
}

/// A place that holds the input files, laid out as the original bucket.
#[derive(Clone)]
pub enum Source {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    Dir(PathBuf),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// An S3 client from the standard configuration chain. When an endpoint URL is
/// configured (`AWS_ENDPOINT_URL`, an emulator), path-style addressing is used, since
/// emulators on loopback do not serve `bucket.host` names.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// The SDK configuration from the environment (credentials chain, region, endpoint).
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

impl Source {
    /// `s3://BUCKET/PREFIX` with the given SDK configuration, or a local directory.
    pub fn new(location: &str, sdk: Option<&aws_config::SdkConfig>) -> Result<Source, EtlError> {
        Source::at(parse(location)?, sdk)
    }

    /// `new` for a parsed location.
    pub fn at(location: Location, sdk: Option<&aws_config::SdkConfig>) -> Result<Source, EtlError> {
        match location {
            Location::S3 { bucket, prefix } => {
                let sdk = sdk.ok_or_else(|| {
                    EtlError::Config("an S3 source needs an AWS SDK configuration".into())
                })?;
                Ok(Source::S3 {
                    client: s3_client(sdk),
                    bucket,
                    prefix,
                })
            }
            Location::Dir(dir) => Ok(Source::Dir(dir)),
        }
    }

    /// `new`, loading the SDK configuration from the environment when it is needed.
    pub async fn from_env_location(location: &str) -> Result<Source, EtlError> {
        let location = parse(location)?;
        let sdk = match location {
            Location::S3 { .. } => Some(sdk_config_from_env().await),
            Location::Dir(_) => None,
        };
        Source::at(location, sdk.as_ref())
    }

    /// `s3://bucket`, `s3://bucket/prefix` or the directory.
    pub fn describe(&self) -> String {
        match self {
            Source::S3 { bucket, prefix, .. } => Location::S3 {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            }
            .to_string(),
            Source::Dir(p) => p.display().to_string(),
        }
    }

    /// The full name of `rel` (e.g. `sales/2020-01-01/sales.csv`) in this source, for
    /// messages.
    pub fn location_of(&self, rel: &str) -> String {
        format!("{}/{rel}", self.describe().trim_end_matches('/'))
    }

    /// Where `rel` is: its client, bucket and key in S3, or its path.
    fn object(&self, rel: &str) -> Object<'_> {
        match self {
            Source::S3 {
                client,
                bucket,
                prefix,
            } => Object::S3(client, bucket, key(prefix, rel)),
            Source::Dir(dir) => Object::File(dir.join(rel)),
        }
    }

    /// Opens `rel` for streaming. A file that is not there is [`EtlError::Missing`].
    pub async fn open(&self, rel: &str) -> Result<ObjectReader, EtlError> {
        let location = self.location_of(rel);
        match self.object(rel) {
            Object::S3(client, bucket, key) => {
                let out = client.get_object().bucket(bucket).key(key).send().await;
                match out {
                    Ok(o) => Ok(ObjectReader {
                        len: o.content_length().and_then(|l| u64::try_from(l).ok()),
                        inner: Inner::S3(o.body),
                        location,
                    }),
                    Err(e) => Err(classify_s3(&location, e)),
                }
            }
            Object::File(path) => match tokio::fs::File::open(&path).await {
                Ok(f) => {
                    let len = f.metadata().await.ok().map(|m| m.len());
                    Ok(ObjectReader {
                        len,
                        inner: Inner::File(f),
                        location,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(EtlError::Missing { location })
                }
                Err(e) => Err(io_error(&location, e)),
            },
        }
    }

    /// Writes a whole object (the generator's output).
    pub async fn put(&self, rel: &str, data: Vec<u8>) -> Result<(), EtlError> {
        let location = self.location_of(rel);
        match self.object(rel) {
            Object::S3(client, bucket, key) => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| classify_s3(&location, e))?;
                Ok(())
            }
            Object::File(path) => {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| io_error(&location, e))?;
                }
                tokio::fs::write(&path, data)
                    .await
                    .map_err(|e| io_error(&location, e))
            }
        }
    }
}

/// One file of a [`Source`].
enum Object<'a> {
    S3(&'a aws_sdk_s3::Client, &'a str, String),
    File(std::path::PathBuf),
}

fn io_error(location: &str, e: std::io::Error) -> EtlError {
    EtlError::Source {
        location: location.to_string(),
        message: e.to_string(),
        transient: false,
    }
}

/// Maps an SDK error: a missing key is `Missing`; throttling, 5xx, timeouts and
/// connection failures are transient; the rest (access denied, no such bucket) are not.
fn classify_s3<E, R>(location: &str, err: SdkError<E, R>) -> EtlError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    let code = err.code().unwrap_or_default().to_string();
    if code == "NoSuchKey" || code == "NotFound" {
        return EtlError::Missing {
            location: location.to_string(),
        };
    }
    let status = match &err {
        SdkError::ServiceError(s) => Some(format!("{:?}", s.raw())),
        _ => None,
    };
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            matches!(
                code.as_str(),
                "SlowDown"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestTimeout"
                    | "InternalError"
                    | "ServiceUnavailable"
                    | "RequestTimeTooSkewed"
            ) || status.is_some_and(|s| s.contains("StatusCode(5") || s.contains("429"))
        }
        _ => false,
    };
    let message = match err.message() {
        Some(m) if !code.is_empty() => format!("{code}: {m}"),
        Some(m) => m.to_string(),
        None if !code.is_empty() => code,
        None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err)),
    };
    EtlError::Source {
        location: location.to_string(),
        message,
        transient,
    }
}

enum Inner {
    S3(ByteStream),
    File(tokio::fs::File),
}

/// One input file, read as a stream of byte chunks.
pub struct ObjectReader {
    inner: Inner,
    len: Option<u64>,
    location: String,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader")
            .field("location", &self.location)
            .field("len", &self.len)
            .finish()
    }
}

impl ObjectReader {
    /// Size in bytes, when the source says.
    pub fn size(&self) -> Option<u64> {
        self.len
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Appends the next piece of the object to `buf`; `false` at the end.
    pub async fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, EtlError> {
        match &mut self.inner {
            Inner::S3(body) => match body.next().await {
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    Ok(true)
                }
                Some(Err(e)) => Err(EtlError::Source {
                    location: self.location.clone(),
                    message: e.to_string(),
                    transient: true,
                }),
                None => Ok(false),
            },
            Inner::File(f) => {
                let start = buf.len();
                buf.resize(start + (1 << 20), 0);
                let n = f.read(&mut buf[start..]).await;
                match n {
                    Ok(n) => {
                        buf.truncate(start + n);
                        Ok(n > 0)
                    }
                    Err(e) => {
                        buf.truncate(start);
                        Err(io_error(&self.location, e))
                    }
                }
            }
        }
    }
}
