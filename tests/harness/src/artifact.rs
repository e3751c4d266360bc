//! The model-artifact fixture: a small logistic model over a fixed training set, saved
//! in the artifact format the server loads (`manifest.json`, `model.json`, `checksums`,
//! `<root>/latest`). Every value is fixed, so a test can compute the score it expects
//! with [`model`] and compare it with what a server answers.
//!
//! ```no_run
//! let root = tempfile::tempdir().unwrap();
//! let version = harness::artifact::publish(root.path(), 0.1, 0); // saved and promoted
//! let expected = harness::artifact::model(0.1); // the same parameters, to score with
//! let (dir, v) = harness::artifact::promoted_dir(); // one promoted artifact in a temp dir
//! ```

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use model::classifier::{Classifier, Logistic};
use model::{Artifact, ArtifactSpec, FeatureEncoding, Features, Model};

/// The instant the fixture's artifacts are created at (plus the `secs` asked for), so
/// versions sort in the order a test makes them.
const CREATED: u64 = 1_795_539_600;

/// The 20 rows the encoding is fitted on: every `attr_b` category `a`…`d`, five rows each.
pub fn training() -> Vec<Features> {
    let mut v = Vec::new();
    for (i, b) in ["a", "b", "c", "d"].iter().enumerate() {
        for k in 0..5 {
            v.push(Features {
                attr_a: (i + k) as i64 % 3,
                attr_b: (*b).into(),
                scd_a: 0.1 * (k as f64) + 0.2 * i as f64,
                scd_b: (k as i64) + 1,
            });
        }
    }
    v
}

/// A logistic model whose intercept is `intercept` (so versions score differently),
/// with decision threshold 0.5.
pub fn model(intercept: f64) -> Model {
    let enc = FeatureEncoding::fit(&training()).expect("the fixture's training rows encode");
    let w = enc.width();
    Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: (0..w).map(|i| 0.3 - 0.1 * i as f64).collect(),
            intercept,
        }),
        0.5,
    )
    .expect("the fixture's model is valid")
}

/// An artifact of [`model`]`(intercept)` created `secs` after a fixed instant, with a
/// test ROC AUC of 0.8 in its metrics.
pub fn artifact(intercept: f64, secs: u64) -> Artifact {
    let mut metrics = serde_json::Map::new();
    metrics.insert("roc_auc".into(), serde_json::json!(0.8));
    Artifact::new(ArtifactSpec {
        model: model(intercept),
        code_version: "harness-fixture".into(),
        training_data: "sha256:00".into(),
        metrics,
        extra_files: Default::default(),
        created: UNIX_EPOCH + Duration::from_secs(CREATED + secs),
    })
    .expect("the fixture's artifact is valid")
}

/// Saves [`artifact`]`(intercept, secs)` under `root` and promotes it to `latest`;
/// returns its version.
pub fn publish(root: &Path, intercept: f64, secs: u64) -> String {
    let a = artifact(intercept, secs);
    a.save(root)
        .unwrap_or_else(|e| panic!("saving the fixture under {}: {e}", root.display()));
    model::artifact::promote(root, a.version())
        .unwrap_or_else(|e| panic!("promoting the fixture under {}: {e}", root.display()));
    a.version().to_string()
}

/// A temp dir holding one promoted artifact (intercept 0.1); returns it and the version.
pub fn promoted_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temp dir for the artifact");
    let version = publish(dir.path(), 0.1, 0);
    (dir, version)
}
