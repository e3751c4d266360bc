//! Step 5 of training: the artifact (metrics, picture, fingerprint, code version) and
//! the promotion gate that decides whether `latest` moves to it.

use std::time::SystemTime;

use model::{Artifact, ArtifactSpec, Features, Model};

use super::{Data, Fitted, PICTURE_FILE, Store, TrainError, Trained, family_of, metrics, plot};

/// The code version recorded in the manifest: crate version, plus the git revision
/// when the build or the environment names one (`GIT_SHA`, `GITHUB_SHA`).
pub fn code_version() -> String {
    let rev = option_env!("GIT_SHA")
        .map(str::to_string)
        .or_else(|| std::env::var("GIT_SHA").ok())
        .or_else(|| std::env::var("GITHUB_SHA").ok());
    match rev {
        Some(r) if !r.is_empty() => format!("pipeline {} ({r})", env!("CARGO_PKG_VERSION")),
        _ => format!("pipeline {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The artifact for a trained model: metrics, picture, fingerprint, code version.
pub fn make_artifact(t: &Trained, data: &Data, seed: u64) -> Result<Artifact, TrainError> {
    let mut m = serde_json::Map::new();
    m.insert("test".into(), t.test.to_json());
    m.insert("validation".into(), t.valid.to_json());
    m.insert("baseline_majority_class".into(), t.baseline.to_json());
    m.insert(
        "candidates".into(),
        serde_json::Value::Array(
            t.candidates
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "family": c.family,
                        "validation_roc_auc": c.valid_auc,
                        "fit_seconds": c.fit_seconds,
                    })
                })
                .collect(),
        ),
    );
    m.insert("chosen".into(), family_of(&t.model).into());
    m.insert(
        "split".into(),
        serde_json::json!({
            "seed": seed,
            "train": t.split.train.len(),
            "validation": t.split.valid.len(),
            "test": t.split.test.len(),
            "stratified": true,
        }),
    );
    let svg = plot::evaluation_svg(
        family_of(&t.model),
        &t.test_scores,
        &t.test_labels,
        &t.test,
        &t.baseline,
    );
    let mut extra = model::ArtifactFiles::new();
    extra.insert(PICTURE_FILE.into(), svg.into_bytes());
    Ok(Artifact::new(ArtifactSpec {
        model: t.model.clone(),
        code_version: code_version(),
        training_data: data.fingerprint.clone(),
        metrics: m,
        extra_files: extra,
        created: SystemTime::now(),
    })?)
}

/// The test ROC AUC stored in an artifact's metrics.
pub fn stored_test_auc(a: &Artifact) -> Option<f64> {
    a.manifest
        .metrics
        .get("test")
        .and_then(|t| t.get("roc_auc"))
        .and_then(serde_json::Value::as_f64)
}

/// What happened to `latest`.
#[derive(Debug, Clone, PartialEq)]
pub enum Promotion {
    /// No `latest` before: the first model.
    First,
    /// Within the margin (or better) than `previous`.
    Promoted { previous: String, previous_auc: f64 },
    /// Worse than the margin allows, promoted because of `--force`.
    Forced {
        previous: String,
        previous_auc: Option<f64>,
    },
}

/// Saves `a` and moves `latest` to it unless the gate refuses
/// ([`TrainError::NotPromoted`]: the version stays saved, `latest` unchanged).
///
/// `test` (features and labels of this run's test split), when given, is scored with
/// the incumbent too, for the refusal message.
pub async fn publish(
    store: &Store,
    a: &Artifact,
    margin: f64,
    force: bool,
    test: Option<(&[Features], &[u8])>,
) -> Result<(String, Promotion), TrainError> {
    let new_auc = stored_test_auc(a).unwrap_or(f64::NAN);
    // Read the incumbent before saving, so a broken `latest` is reported up front.
    let incumbent = match store.latest().await? {
        None => None,
        Some(v) => {
            let (auc, here) = match store.load(&v).await {
                Ok(old) => (
                    stored_test_auc(&old)
                        .ok_or_else(|| "its manifest has no metrics.test.roc_auc".to_string()),
                    test.and_then(|(f, y)| rescore(&old.model, f, y)),
                ),
                Err(e) => (Err(e.to_string()), None),
            };
            Some((v, auc, here))
        }
    };
    let saved = store.save(a).await?;
    tracing::info!(version = a.version(), at = %saved, "saved");
    let promotion = match incumbent {
        None => Promotion::First,
        Some((previous, Ok(previous_auc), here)) => {
            if new_auc >= previous_auc - margin {
                Promotion::Promoted {
                    previous,
                    previous_auc,
                }
            } else if force {
                Promotion::Forced {
                    previous,
                    previous_auc: Some(previous_auc),
                }
            } else {
                return Err(TrainError::NotPromoted {
                    note: here.map_or_else(String::new, |h| {
                        format!(" (on this run's test split latest scores {h:.4})")
                    }),
                    new_version: a.version().to_string(),
                    new_auc,
                    latest_version: previous,
                    latest_auc: previous_auc,
                    margin,
                    saved,
                });
            }
        }
        Some((previous, Err(reason), _)) => {
            if force {
                Promotion::Forced {
                    previous,
                    previous_auc: None,
                }
            } else {
                return Err(TrainError::Incumbent {
                    version: previous,
                    reason,
                });
            }
        }
    };
    store.promote(a.version()).await?;
    Ok((saved, promotion))
}

/// ROC AUC of `m` on records; `None` if a record cannot be scored by it.
fn rescore(m: &Model, features: &[Features], labels: &[u8]) -> Option<f64> {
    let scores = features
        .iter()
        .map(|f| m.predict_proba(f).ok())
        .collect::<Option<Vec<f64>>>()?;
    Some(metrics::roc_auc(&scores, labels))
}

/// Checks the promotion gate's margin: a finite number >= 0.
pub fn check_margin(margin: f64) -> Result<f64, TrainError> {
    if margin.is_finite() && margin >= 0.0 {
        Ok(margin)
    } else {
        Err(TrainError::Margin(margin))
    }
}

/// What [`run`] (or [`publish_fitted`]) did.
#[derive(Debug)]
pub struct Report {
    pub version: String,
    pub saved: String,
    pub promotion: Promotion,
    pub trained: Trained,
    /// The evaluation table (`trained`'s `Display`).
    pub table: String,
}

/// Step 5: the artifact, saved, and `latest` moved behind the gate. A refused promotion
/// is the error [`TrainError::NotPromoted`] (the version is saved).
pub async fn publish_fitted(
    store: &Store,
    fitted: Fitted,
    margin: f64,
    force: bool,
) -> Result<Report, TrainError> {
    let Fitted {
        data,
        trained,
        seed,
    } = fitted;
    let artifact = make_artifact(&trained, &data, seed)?;
    let version = artifact.version().to_string();
    let test_features: Vec<Features> = trained
        .split
        .test
        .iter()
        .map(|&i| data.features[i].clone())
        .collect();
    let test = Some((&test_features[..], &trained.test_labels[..]));
    let (saved, promotion) = publish(store, &artifact, margin, force, test).await?;
    tracing::info!(version, ?promotion, "published");
    Ok(Report {
        version,
        saved,
        promotion,
        table: trained.to_string(),
        trained,
    })
}
