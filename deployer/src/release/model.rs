//! `deploy --model VERSION|latest`: a model-only release, deployed blue/green like any
//! other.
//!
//! Under the deploy's lock, with the state just read: the model is resolved to a
//! concrete version (`latest` read from `models/latest` now, and the version must be
//! whole in the bucket), the base release is the one on the colour holding the Elastic
//! IP (or `--release`), and [`publish::publish_model_release`] writes the manifest of
//! `<server release>_<version>`: the base's server object (same key, same sha256) with
//! the new model pinned. The gate then checks that the new colour reports that model;
//! the old colour keeps its release and model for the rollback window.
//!
//! Run twice, it publishes nothing new and, when the colour holding the address already
//! serves that release, deploys nothing either.

use serde_json::json;

use super::{Deployed, ReleaseError};
use crate::publish::{self, Manifest};
use crate::state::State;
use crate::{Deployer, Error};

/// What `deploy` releases.
#[derive(Debug, Clone, Copy)]
pub enum DeployTarget<'a> {
    /// A published release (`deploy --release`).
    Release(&'a str),
    /// `model` (a version, or `latest`) on the server binary of `base`, else of the
    /// release on the colour holding the Elastic IP (`deploy --model`).
    Model {
        model: &'a str,
        base: Option<&'a str>,
    },
}

impl DeployTarget<'_> {
    /// How the audit log names it when the deploy fails before a release is known.
    pub(super) fn describe(&self) -> serde_json::Value {
        match self {
            DeployTarget::Release(r) => json!({ "release": r }),
            DeployTarget::Model { model, base } => json!({ "model": model, "base": base }),
        }
    }
}

/// The release a deploy goes on with, or the colour already serving it.
pub(super) enum Resolved {
    Deploy { release: String, manifest: Manifest },
    Serving(Deployed),
}

impl Deployer {
    /// `deploy --model`: see the module documentation.
    pub async fn deploy_model(
        &self,
        model: &str,
        base: Option<&str>,
        opts: &super::ReleaseOptions,
    ) -> Result<Deployed, Error> {
        self.deploy_target(DeployTarget::Model { model, base }, opts)
            .await
    }

    /// The release `target` names and its manifest (published here for a model-only
    /// release), read under the deploy's lock from `state`.
    pub(super) async fn resolve_target(
        &self,
        state: &State,
        target: DeployTarget<'_>,
    ) -> Result<Resolved, Error> {
        let bucket = &self.cfg.artifacts.bucket;
        let (model, base) = match target {
            DeployTarget::Release(r) => {
                let manifest = publish::read_manifest(&self.clients, bucket, r)
                    .await
                    .map_err(ReleaseError::from)?;
                return Ok(Resolved::Deploy {
                    release: r.to_string(),
                    manifest,
                });
            }
            DeployTarget::Model { model, base } => (model, base),
        };
        let active = state
            .release
            .eip_holder
            .and_then(|c| state.release.instances.get(&c).map(|r| (c, r)));
        let base = match (base, active) {
            (Some(b), _) => b.to_string(),
            (None, Some((_, r))) => r.release.clone(),
            (None, None) => {
                return Err(ReleaseError::NothingRunning {
                    model: model.to_string(),
                }
                .into());
            }
        };
        let version = publish::resolve_model(&self.clients, bucket, model)
            .await
            .map_err(ReleaseError::from)?;
        let base_manifest = publish::read_manifest(&self.clients, bucket, &base)
            .await
            .map_err(ReleaseError::from)?;
        let manifest =
            publish::publish_model_release(&self.clients, bucket, &base_manifest, &version)
                .await
                .map_err(ReleaseError::from)?;
        tracing::info!(
            release = %manifest.release,
            model = %version,
            server = %base_manifest.based_on.as_deref().unwrap_or(&base_manifest.release),
            "model-only release"
        );
        if let Some((color, r)) = active
            && r.release == manifest.release
            && r.model_version == manifest.model_version
        {
            tracing::info!(%color, instance = %r.instance_id, "already serving it: nothing to deploy");
            return Ok(Resolved::Serving(Deployed {
                release: manifest.release,
                color,
                instance_id: r.instance_id.clone(),
                previous: None,
                retired: Vec::new(),
            }));
        }
        Ok(Resolved::Deploy {
            release: manifest.release.clone(),
            manifest,
        })
    }
}
