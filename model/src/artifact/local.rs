//! The artifact on a local disk: [`Artifact::save`], [`promote`], [`latest`], [`load`],
//! thin wrappers with `std::fs` over the in-memory form.

use std::path::{Path, PathBuf};

use super::{
    Artifact, ArtifactError, ArtifactFiles, LATEST_FILE, MANIFEST_FILE, parse_latest,
    validate_version_name,
};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Artifact {
    /// Writes `<root>/<version>/` (atomically: a temp dir renamed into place). Does not
    /// move `latest`: call [`promote`] for that. Returns the version's directory.
    pub fn save(&self, root: &Path) -> Result<PathBuf, ArtifactError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let dir = root.join(self.version());
        if dir.exists() {
            return Err(ArtifactError::AlreadyExists { path: dir });
        }
        let tmp = root.join(format!(".{}.tmp-{}", self.version(), std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        for (name, content) in self.to_files() {
            let p = tmp.join(name);
            std::fs::write(&p, content).map_err(io(&p))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(dir)
    }
}

/// Makes `version` the one `latest` names (write a temp file, rename over `latest`).
/// The version must exist and load cleanly.
pub fn promote(root: &Path, version: &str) -> Result<(), ArtifactError> {
    load(root, Some(version))?;
    let tmp = root.join(format!(".{LATEST_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, format!("{version}\n")).map_err(io(&tmp))?;
    let latest = root.join(LATEST_FILE);
    std::fs::rename(&tmp, &latest).map_err(io(&latest))
}

/// The version `<root>/latest` names.
pub fn latest(root: &Path) -> Result<String, ArtifactError> {
    let p = root.join(LATEST_FILE);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::Missing {
                file: p.display().to_string(),
            });
        }
        Err(e) => return Err(io(&p)(e)),
    };
    parse_latest(&text).map_err(|_| ArtifactError::Malformed {
        file: p.display().to_string(),
        reason: "does not hold a version name".into(),
    })
}

/// Loads `<root>/<version>`, or the version `latest` names when `version` is `None`.
pub fn load(root: &Path, version: Option<&str>) -> Result<Artifact, ArtifactError> {
    let version = match version {
        Some(v) => {
            validate_version_name(v)?;
            v.to_string()
        }
        None => latest(root)?,
    };
    let dir = root.join(&version);
    let artifact = load_dir(&dir)?;
    if artifact.version() != version {
        return Err(ArtifactError::VersionMismatch {
            file: dir.join(MANIFEST_FILE).display().to_string(),
            expected: version,
            found: artifact.manifest.model_version,
        });
    }
    Ok(artifact)
}

/// Loads and verifies the artifact in one version directory.
fn load_dir(dir: &Path) -> Result<Artifact, ArtifactError> {
    let mut files = ArtifactFiles::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::Missing {
                file: dir.display().to_string(),
            });
        }
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(io(&path))?.is_file() {
            return Err(ArtifactError::Invalid {
                file: path.display().to_string(),
                reason: "not a regular file".into(),
            });
        }
        files.insert(name, std::fs::read(&path).map_err(io(&path))?);
    }
    let origin = format!("{}/", dir.display());
    Artifact::from_files(&files, &origin)
}
