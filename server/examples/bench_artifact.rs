//! Writes and promotes the load benchmark's model artifact (a logistic model, which the
//! Python baseline in bench/server/flask_app.py can also score) under DIR, and prints
//! the version's path. Idempotent: an existing version is kept.
//!
//! `cargo run --release -p server --example bench_artifact -- DIR`

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use model::classifier::{Classifier, Logistic};

fn main() -> anyhow::Result<()> {
    let root = std::env::args()
        .nth(1)
        .context("usage: bench_artifact DIR")?;
    let root = std::path::Path::new(&root);
    let mut train = Vec::new();
    for i in 0..400i64 {
        train.push(model::Features {
            attr_a: i % 3,
            attr_b: ["a", "b", "c", "d"][(i % 4) as usize].into(),
            scd_a: (i as f64 * 0.37).fract(),
            scd_b: i % 7,
        });
    }
    let enc = model::FeatureEncoding::fit(&train)?;
    let w = enc.width();
    let m = model::Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: (0..w).map(|i| 0.4 - 0.13 * i as f64).collect(),
            intercept: -1.2,
        }),
        0.3,
    )?;
    let a = model::Artifact::new(model::ArtifactSpec {
        model: m,
        code_version: "bench".into(),
        training_data: "sha256:bench".into(),
        metrics: Default::default(),
        extra_files: Default::default(),
        created: UNIX_EPOCH + Duration::from_secs(1_795_539_600),
    })?;
    if !root.join(a.version()).exists() {
        a.save(root)?;
    }
    model::artifact::promote(root, a.version())?;
    println!("{}", root.join(a.version()).display());
    Ok(())
}
