//! Where files live: a local folder or `s3://BUCKET/PREFIX`. One parser for the three
//! places that take such a value: the ETL's `--source` and the generator's `--out`,
//! training's `--models`, and the server's `--model`. Parsing only: reading and writing
//! are the callers' (this crate has no I/O crates).

use std::fmt;
use std::path::PathBuf;

/// A parsed location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local folder.
    Dir(PathBuf),
    /// An S3 prefix, without leading or trailing `/` (empty for the whole bucket).
    S3 { bucket: String, prefix: String },
}

/// Why a value is not a [`Location`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("empty path")]
    Empty,
    #[error("no bucket")]
    NoBucket,
    #[error("only local directories and s3:// are supported")]
    Scheme,
}

impl std::str::FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::NoBucket);
            }
            Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if s.contains("://") {
            Err(LocationError::Scheme)
        } else if s.is_empty() {
            Err(LocationError::Empty)
        } else {
            Ok(Location::Dir(PathBuf::from(s)))
        }
    }
}

/// `s3://bucket` or `s3://bucket/prefix`, or the folder's path.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// An S3 object that could not be read or written: `s3://BUCKET/KEY: what went wrong`
/// (training's model store and the server's model fetcher report S3 failures with it;
/// the S3 calls themselves are theirs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("s3://{bucket}/{key}: {message}")]
pub struct S3Error {
    pub bucket: String,
    pub key: String,
    pub message: String,
}

impl S3Error {
    pub fn new(bucket: &str, key: &str, message: String) -> S3Error {
        S3Error {
            bucket: bucket.to_string(),
            key: key.to_string(),
            message,
        }
    }
}

/// The S3 key of `name` under `prefix` (no leading `/` when the prefix is empty).
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_folders_and_s3_prefixes() {
        assert_eq!(
            "s3://b/models/".parse::<Location>().unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "models".into()
            }
        );
        assert_eq!(
            "s3://b".parse::<Location>().unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            "out/models".parse::<Location>().unwrap(),
            Location::Dir("out/models".into())
        );
        assert_eq!("s3:///x".parse::<Location>(), Err(LocationError::NoBucket));
        assert_eq!("gs://b/x".parse::<Location>(), Err(LocationError::Scheme));
        assert_eq!("".parse::<Location>(), Err(LocationError::Empty));
    }

    #[test]
    fn displays_as_parsed() {
        for s in ["s3://b", "s3://b/a/b", "/srv/models", "rel/dir"] {
            assert_eq!(s.parse::<Location>().unwrap().to_string(), s);
        }
        assert_eq!(key("", "latest"), "latest");
        assert_eq!(key("models", "latest"), "models/latest");
    }
}
