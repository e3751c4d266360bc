//! The model artifact: a self-describing, versioned set of files.
//!
//! ```text
//! <root>/latest                      the promoted version's name, one line
//! <root>/<version>/manifest.json     see [`Manifest`]
//! <root>/<version>/model.json        the classifier's parameters ([`Classifier`])
//! <root>/<version>/<extra files>     anything training adds (report, pictures)
//! <root>/<version>/checksums         `sha256sum` format: "<hex>  <file>" per file
//! ```
//!
//! `cd <root>/<version> && sha256sum -c checksums` verifies an artifact by hand.
//!
//! A version name is `YYYYMMDDTHHMMSSZ-<shortid>` (UTC creation time, then 8 hex chars
//! of a digest of the parameters and time), so names sort by creation time.
//!
//! The in-memory form ([`ArtifactFiles`], [`Artifact::to_files`],
//! [`Artifact::from_files`]) is what a remote store (S3, in `pipeline` and `server`)
//! uploads and downloads; the local functions ([`Artifact::save`], [`promote`],
//! [`load`]) are thin wrappers over it with `std::fs`. Loading refuses, with an
//! [`ArtifactError`] naming the file: a missing or unlisted file, a checksum mismatch, a
//! schema version other than [`SCHEMA_VERSION`], malformed JSON, parameters that do not
//! fit the encoding.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::{Classifier, Family};
use crate::features::FeatureEncoding;
use crate::time::Utc;
use crate::{Model, ModelError};

mod local;

pub use local::{latest, load, promote};

/// The manifest layout this crate writes and accepts.
pub(crate) const SCHEMA_VERSION: u32 = 1;
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const MODEL_FILE: &str = "model.json";
pub const CHECKSUMS_FILE: &str = "checksums";
pub const LATEST_FILE: &str = "latest";

/// File name -> content: an artifact's files in memory.
pub type ArtifactFiles = BTreeMap<String, Vec<u8>>;

/// Why an artifact cannot be saved or loaded. `file` is the origin (directory or URL
/// prefix) joined with the file's name.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: missing")]
    Missing { file: String },
    #[error("{file}: not listed in the checksums file, refusing an unverified file")]
    Unlisted { file: String },
    #[error("{file}: checksum mismatch (expected sha256 {expected}, found {actual})")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: schema version {found} is not supported (this build reads {supported})")]
    SchemaVersion {
        file: String,
        found: String,
        supported: u32,
    },
    #[error("{file}: malformed: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file}: invalid: {reason}")]
    Invalid { file: String, reason: String },
    #[error("{name:?} is not a model version name (YYYYMMDDTHHMMSSZ-<id>)")]
    BadVersionName { name: String },
    #[error("{file}: names model version {found}, but was loaded as {expected}")]
    VersionMismatch {
        file: String,
        expected: String,
        found: String,
    },
    #[error("{path}: already exists; versions are immutable")]
    AlreadyExists { path: PathBuf },
}

/// Where the classifier's parameters are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub family: Family,
    pub file: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// `YYYYMMDDTHHMMSSZ-<shortid>`
    pub model_version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The code that trained it (crate version and git revision, as the trainer says).
    pub code_version: String,
    /// A fingerprint of the training data, e.g. `sha256:<hex>` from [`Fingerprint`].
    pub training_data: String,
    /// Probability at or above which the label is 1.
    pub threshold: f64,
    /// Evaluation figures, free-form (AUC, log loss, confusion matrix, baseline...).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The fitted feature encoding.
    pub features: FeatureEncoding,
    /// The family and the file holding its parameters.
    pub model: ModelRef,
}

/// What training hands over to make an artifact.
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    pub model: Model,
    pub code_version: String,
    pub training_data: String,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Further files to store and checksum (e.g. `report.svg`); plain names only.
    pub extra_files: ArtifactFiles,
    /// The creation time; it names the version.
    pub created: SystemTime,
}

/// A loaded (verified) or newly made artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Manifest,
    pub model: Model,
    pub extra_files: ArtifactFiles,
}

impl Artifact {
    /// Makes a new artifact (validating the model) and names its version.
    pub fn new(spec: ArtifactSpec) -> Result<Artifact, ArtifactError> {
        spec.model.validate().map_err(|e| ArtifactError::Invalid {
            file: MODEL_FILE.into(),
            reason: e.to_string(),
        })?;
        for name in spec.extra_files.keys() {
            if !is_plain_file_name(name)
                || [MANIFEST_FILE, MODEL_FILE, CHECKSUMS_FILE].contains(&name.as_str())
            {
                return Err(ArtifactError::Invalid {
                    file: name.clone(),
                    reason: "extra files need a plain name other than the artifact's own files"
                        .into(),
                });
            }
        }
        let params = model_json(&spec.model.classifier);
        let utc = Utc::from_system_time(spec.created);
        let nanos = spec
            .created
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(&params);
        h.update(spec.training_data.as_bytes());
        h.update(nanos.to_le_bytes());
        let short = &hex::encode(h.finalize())[..8];
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            model_version: format!("{}-{short}", utc.compact()),
            created_at: utc.rfc3339(),
            code_version: spec.code_version,
            training_data: spec.training_data,
            threshold: spec.model.threshold,
            metrics: spec.metrics,
            features: spec.model.encoding.clone(),
            model: ModelRef {
                family: spec.model.classifier.family(),
                file: MODEL_FILE.into(),
            },
        };
        Ok(Artifact {
            manifest,
            model: spec.model,
            extra_files: spec.extra_files,
        })
    }

    /// The version name.
    pub fn version(&self) -> &str {
        &self.manifest.model_version
    }

    /// All files, `checksums` included, as they are stored.
    pub fn to_files(&self) -> ArtifactFiles {
        let mut files = self.extra_files.clone();
        let mut manifest =
            serde_json::to_vec_pretty(&self.manifest).expect("a manifest always serialises");
        manifest.push(b'\n');
        files.insert(MANIFEST_FILE.into(), manifest);
        files.insert(
            self.manifest.model.file.clone(),
            model_json(&self.model.classifier),
        );
        let checksums = checksums_file(&files);
        files.insert(CHECKSUMS_FILE.into(), checksums);
        files
    }

    /// Verifies and parses an artifact's files. `origin` (a directory or URL prefix
    /// ending in `/`) only prefixes file names in errors.
    pub fn from_files(files: &ArtifactFiles, origin: &str) -> Result<Artifact, ArtifactError> {
        let at = |name: &str| format!("{origin}{name}");
        let sums = files
            .get(CHECKSUMS_FILE)
            .ok_or_else(|| ArtifactError::Missing {
                file: at(CHECKSUMS_FILE),
            })?;
        let listed = parse_checksums(sums).map_err(|reason| ArtifactError::Malformed {
            file: at(CHECKSUMS_FILE),
            reason,
        })?;
        for (name, expected) in &listed {
            let content = files
                .get(name)
                .ok_or_else(|| ArtifactError::Missing { file: at(name) })?;
            let actual = hex::encode(Sha256::digest(content));
            if &actual != expected {
                return Err(ArtifactError::ChecksumMismatch {
                    file: at(name),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        if let Some(name) = files
            .keys()
            .find(|k| k.as_str() != CHECKSUMS_FILE && !listed.contains_key(k.as_str()))
        {
            return Err(ArtifactError::Unlisted { file: at(name) });
        }

        let raw = files
            .get(MANIFEST_FILE)
            .ok_or_else(|| ArtifactError::Missing {
                file: at(MANIFEST_FILE),
            })?;
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| ArtifactError::Malformed {
                file: at(MANIFEST_FILE),
                reason: e.to_string(),
            })?;
        // The schema version first, so a future layout is reported as such and not as
        // a field-level parse error.
        match value.get("schema_version") {
            Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
            other => {
                return Err(ArtifactError::SchemaVersion {
                    file: at(MANIFEST_FILE),
                    found: other.map_or("(none)".to_string(), |v| v.to_string()),
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| ArtifactError::Malformed {
                file: at(MANIFEST_FILE),
                reason: e.to_string(),
            })?;
        validate_version_name(&manifest.model_version)?;

        let model_file = &manifest.model.file;
        if !is_plain_file_name(model_file) {
            return Err(ArtifactError::Invalid {
                file: at(MANIFEST_FILE),
                reason: format!("model.file {model_file:?} is not a plain file name"),
            });
        }
        let params = files
            .get(model_file)
            .ok_or_else(|| ArtifactError::Missing {
                file: at(model_file),
            })?;
        let classifier: Classifier =
            serde_json::from_slice(params).map_err(|e| ArtifactError::Malformed {
                file: at(model_file),
                reason: e.to_string(),
            })?;
        if classifier.family() != manifest.model.family {
            return Err(ArtifactError::Invalid {
                file: at(model_file),
                reason: format!(
                    "holds a {} model but the manifest says {}",
                    classifier.family(),
                    manifest.model.family
                ),
            });
        }
        let model = Model {
            encoding: manifest.features.clone(),
            classifier,
            threshold: manifest.threshold,
        };
        model.validate().map_err(|e| ArtifactError::Invalid {
            file: at(match e {
                ModelError::Params(_) => model_file.as_str(),
                _ => MANIFEST_FILE,
            }),
            reason: e.to_string(),
        })?;
        let extra_files = files
            .iter()
            .filter(|(k, _)| {
                ![MANIFEST_FILE, CHECKSUMS_FILE, model_file.as_str()].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Artifact {
            manifest,
            model,
            extra_files,
        })
    }
}

/// Parses the content of a `latest` file (one version name, optional newline).
pub fn parse_latest(content: &[u8]) -> Result<String, ArtifactError> {
    let s = std::str::from_utf8(content)
        .map_err(|_| ArtifactError::BadVersionName {
            name: String::from_utf8_lossy(content).into_owned(),
        })?
        .trim();
    validate_version_name(s)?;
    Ok(s.to_string())
}

/// Checks a version name: `YYYYMMDDTHHMMSSZ-` then 1 to 32 of `[0-9a-z]`. Keeps names
/// from `latest` files or URLs from ever reaching outside the root (`..`, `/`).
pub fn validate_version_name(name: &str) -> Result<(), ArtifactError> {
    let bad = || ArtifactError::BadVersionName {
        name: name.to_string(),
    };
    let b = name.as_bytes();
    if b.len() < 18 || b.len() > 17 + 32 {
        return Err(bad());
    }
    let ts_ok = b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-';
    let id_ok = b[17..]
        .iter()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
    if ts_ok && id_ok { Ok(()) } else { Err(bad()) }
}

/// Parses a `checksums` file into file name -> lower-case hex sha256.
pub fn parse_checksums(content: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("line {}: expected \"<sha256>  <file>\"", i + 1))?;
        if sum.len() != 64 || !sum.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("line {}: {sum:?} is not a sha256", i + 1));
        }
        if !is_plain_file_name(name) || name == CHECKSUMS_FILE {
            return Err(format!("line {}: {name:?} is not an artifact file", i + 1));
        }
        if out
            .insert(name.to_string(), sum.to_ascii_lowercase())
            .is_some()
        {
            return Err(format!("line {}: {name:?} listed twice", i + 1));
        }
    }
    if out.is_empty() {
        return Err("lists no files".into());
    }
    Ok(out)
}

fn checksums_file(files: &ArtifactFiles) -> Vec<u8> {
    let mut out = String::new();
    for (name, content) in files {
        out.push_str(&hex::encode(Sha256::digest(content)));
        out.push_str("  ");
        out.push_str(name);
        out.push('\n');
    }
    out.into_bytes()
}

fn model_json(c: &Classifier) -> Vec<u8> {
    let mut v = serde_json::to_vec(c).expect("parameters always serialise");
    v.push(b'\n');
    v
}

/// A plain file name: no separators, not hidden, not `.`/`..`, printable ASCII.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// A fingerprint of the training data: feed every row (in a fixed order) and get
/// `sha256:<hex>`. Rows are hashed in a fixed binary layout, so the same data always
/// gives the same fingerprint.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    hasher: Sha256,
    rows: u64,
}

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one labelled row.
    pub fn add(&mut self, idx: i64, f: &crate::Features, label: u8) {
        self.hasher.update(idx.to_le_bytes());
        self.hasher.update(f.attr_a.to_le_bytes());
        self.hasher.update((f.attr_b.len() as u64).to_le_bytes());
        self.hasher.update(f.attr_b.as_bytes());
        self.hasher.update(f.scd_a.to_bits().to_le_bytes());
        self.hasher.update(f.scd_b.to_le_bytes());
        self.hasher.update([label]);
        self.rows += 1;
    }

    /// `sha256:<hex>` over the rows (with the row count mixed in).
    pub fn finish(self) -> String {
        let mut h = self.hasher;
        h.update(self.rows.to_le_bytes());
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}
