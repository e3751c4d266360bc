//! Artifact and end-to-end scoring tests.

use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::artifact::{self, CHECKSUMS_FILE, MANIFEST_FILE, MODEL_FILE};
use crate::classifier::{Aggregation, Logistic, Node, Tree, TreeEnsemble};
use crate::*;

/// A record, tersely (shared with the modules' own tests).
pub(crate) fn rec(a: i64, b: &str, sa: f64, sb: i64) -> Features {
    Features {
        attr_a: a,
        attr_b: b.into(),
        scd_a: sa,
        scd_b: sb,
    }
}

fn training() -> Vec<Features> {
    vec![
        rec(0, "a", 0.0, 1),
        rec(2, "b", 1.0, 3),
        rec(0, "c", 0.5, 1),
        rec(2, "d", 0.5, 3),
    ]
}

fn logistic_model() -> Model {
    let enc = FeatureEncoding::fit(&training()).unwrap();
    // attr_a: mean 1 std 1; scd_a: mean 0.5 std sqrt(0.125); scd_b: mean 2 std 1
    Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: vec![0.8, -0.4, 0.3, 0.1, 0.2, -0.5, 0.0],
            intercept: -1.5,
        }),
        0.3,
    )
    .unwrap()
}

fn spec(model: Model, secs: u64) -> ArtifactSpec {
    let mut metrics = serde_json::Map::new();
    metrics.insert("roc_auc".into(), serde_json::json!(0.81));
    let mut fp = Fingerprint::new();
    for (i, r) in training().iter().enumerate() {
        fp.add(i as i64, r, (i % 2) as u8);
    }
    ArtifactSpec {
        model,
        code_version: "model-test 0.1.0".into(),
        training_data: fp.finish(),
        metrics,
        extra_files: [("report.txt".to_string(), b"AUC 0.81\n".to_vec())].into(),
        created: UNIX_EPOCH + Duration::from_secs(1_795_539_600 + secs),
    }
}

#[test]
fn scoring_equals_hand_computation() {
    let m = logistic_model();
    let p = m.predict(&rec(1, "c", 0.55, 3)).unwrap();
    let sd = 0.125f64.sqrt();
    let z = -1.5 + 0.8 * 0.0 - 0.4 * ((0.55 - 0.5) / sd) + 0.3 * 1.0 - 0.5;
    let want = 1.0 / (1.0 + (-z).exp());
    assert!(
        (p.probability - want).abs() < 1e-12,
        "{} {want}",
        p.probability
    );
    assert_eq!(p.label, u8::from(want >= 0.3));
    // unseen category: only the one-hot block drops out
    let unseen = m.predict_proba(&rec(1, "zz", 0.55, 3)).unwrap();
    let z0 = z + 0.5;
    assert!((unseen - 1.0 / (1.0 + (-z0).exp())).abs() < 1e-12);
    assert!(m.predict(&rec(1, "c", f64::INFINITY, 3)).is_err());
}

#[test]
fn threshold_decides_label() {
    let mut m = logistic_model();
    let f = rec(1, "c", 0.55, 3);
    let p = m.predict_proba(&f).unwrap();
    m.threshold = p;
    assert_eq!(m.predict(&f).unwrap().label, 1, "at the threshold is 1");
    m.threshold = (p + 1e-9).min(1.0);
    assert_eq!(m.predict(&f).unwrap().label, 0);
    m.threshold = 1.5;
    assert_eq!(m.validate(), Err(ModelError::Threshold(1.5)));
}

#[test]
fn save_load_round_trip_and_latest() {
    let root = tempfile::tempdir().unwrap();
    let a = Artifact::new(spec(logistic_model(), 0)).unwrap();
    assert!(
        a.version().starts_with("20261124T170000Z-"),
        "{}",
        a.version()
    );
    artifact::validate_version_name(a.version()).unwrap();
    let dir = a.save(root.path()).unwrap();
    assert!(dir.join(CHECKSUMS_FILE).exists());
    // no latest yet
    assert!(matches!(
        artifact::load(root.path(), None),
        Err(ArtifactError::Missing { .. })
    ));
    artifact::promote(root.path(), a.version()).unwrap();
    let back = artifact::load(root.path(), None).unwrap();
    assert_eq!(back.manifest, a.manifest);
    assert_eq!(back.model, a.model);
    assert_eq!(back.extra_files, a.extra_files);
    assert_eq!(back.manifest.created_at, "2026-11-24T17:00:00Z");
    assert_eq!(back.manifest.metrics["roc_auc"], 0.81);
    assert!(back.manifest.training_data.starts_with("sha256:"));
    let f = rec(2, "b", 0.7, 1);
    assert_eq!(
        back.model.predict(&f).unwrap(),
        a.model.predict(&f).unwrap()
    );

    // a second version; latest moves only on promote; both stay loadable by name
    let tree = Model::new(
        a.model.encoding.clone(),
        Classifier::TreeEnsemble(TreeEnsemble {
            aggregation: Aggregation::MeanProbability,
            base_score: 0.0,
            trees: vec![Tree {
                nodes: vec![
                    Node::Split {
                        feature: 0,
                        threshold: 0.0,
                        left: 1,
                        right: 2,
                    },
                    Node::Leaf { value: 0.05 },
                    Node::Leaf { value: 0.6 },
                ],
            }],
        }),
        0.5,
    )
    .unwrap();
    let b = Artifact::new(spec(tree, 60)).unwrap();
    b.save(root.path()).unwrap();
    assert_eq!(artifact::latest(root.path()).unwrap(), a.version());
    artifact::promote(root.path(), b.version()).unwrap();
    let lb = artifact::load(root.path(), None).unwrap();
    assert_eq!(lb.manifest.model.family, Family::TreeEnsemble);
    assert_eq!(lb.model.predict_proba(&f).unwrap(), 0.6);
    assert_eq!(
        artifact::load(root.path(), Some(a.version()))
            .unwrap()
            .version(),
        a.version()
    );
    // versions are immutable
    assert!(matches!(
        b.save(root.path()),
        Err(ArtifactError::AlreadyExists { .. })
    ));
}

#[test]
fn in_memory_files_round_trip() {
    let a = Artifact::new(spec(logistic_model(), 5)).unwrap();
    let files = a.to_files();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [CHECKSUMS_FILE, MANIFEST_FILE, MODEL_FILE, "report.txt"]
    );
    let back = Artifact::from_files(&files, "mem://x/").unwrap();
    assert_eq!(back.manifest, a.manifest);
}

#[test]
fn tampered_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let a = Artifact::new(spec(logistic_model(), 0)).unwrap();
    let dir = a.save(root.path()).unwrap();
    let p = dir.join(MODEL_FILE);
    let text = std::fs::read_to_string(&p).unwrap().replace("0.8", "0.9");
    std::fs::write(&p, text).unwrap();
    let err = artifact::load(root.path(), Some(a.version())).unwrap_err();
    match &err {
        ArtifactError::ChecksumMismatch { file, .. } => {
            assert!(
                file.ends_with(&format!("{}/{MODEL_FILE}", a.version())),
                "{file}"
            )
        }
        e => panic!("expected a checksum mismatch, got {e}"),
    }
    assert!(err.to_string().contains("model.json"), "{err}");
}

#[test]
fn missing_or_unlisted_files_are_refused() {
    let a = Artifact::new(spec(logistic_model(), 0)).unwrap();
    let mut files = a.to_files();
    files.insert("sneaky.bin".into(), b"x".to_vec());
    assert!(matches!(
        Artifact::from_files(&files, ""),
        Err(ArtifactError::Unlisted { file }) if file == "sneaky.bin"
    ));
    let mut files = a.to_files();
    files.remove("report.txt");
    assert!(matches!(
        Artifact::from_files(&files, ""),
        Err(ArtifactError::Missing { file }) if file == "report.txt"
    ));
    let mut files = a.to_files();
    files.remove(CHECKSUMS_FILE);
    assert!(matches!(
        Artifact::from_files(&files, ""),
        Err(ArtifactError::Missing { file }) if file == CHECKSUMS_FILE
    ));
}

/// Rewrites the manifest and recomputes its checksum, as a well-meaning but newer
/// writer would.
fn rewrite_manifest(
    files: &mut ArtifactFiles,
    f: impl FnOnce(&mut serde_json::Value),
) -> &mut ArtifactFiles {
    let mut v: serde_json::Value = serde_json::from_slice(&files[MANIFEST_FILE]).unwrap();
    f(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap();
    let old = hex::encode(Sha256::digest(&files[MANIFEST_FILE]));
    let new = hex::encode(Sha256::digest(&bytes));
    let sums = String::from_utf8(files[CHECKSUMS_FILE].clone())
        .unwrap()
        .replace(&old, &new);
    files.insert(MANIFEST_FILE.into(), bytes);
    files.insert(CHECKSUMS_FILE.into(), sums.into_bytes());
    files
}

#[test]
fn wrong_schema_version_is_refused() {
    let a = Artifact::new(spec(logistic_model(), 0)).unwrap();
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| v["schema_version"] = 2.into());
    let err = Artifact::from_files(&files, "dir/").unwrap_err();
    assert!(
        matches!(&err, ArtifactError::SchemaVersion { file, found, supported: 1 }
            if file == "dir/manifest.json" && found == "2"),
        "{err}"
    );
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| {
        v.as_object_mut().unwrap().remove("schema_version");
    });
    assert!(matches!(
        Artifact::from_files(&files, ""),
        Err(ArtifactError::SchemaVersion { .. })
    ));

    // and on disk, through load
    let root = tempfile::tempdir().unwrap();
    let dir = a.save(root.path()).unwrap();
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| v["schema_version"] = 99.into());
    for (name, content) in &files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let err = artifact::load(root.path(), Some(a.version())).unwrap_err();
    assert!(err.to_string().contains("manifest.json"), "{err}");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn inconsistent_parameters_are_refused() {
    let a = Artifact::new(spec(logistic_model(), 0)).unwrap();
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| {
        v["features"]["categories"] = serde_json::json!(["a", "b"]);
    });
    let err = Artifact::from_files(&files, "").unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Invalid { file, .. } if file == MODEL_FILE),
        "{err}"
    );
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| {
        v["model"]["family"] = "tree_ensemble".into()
    });
    assert!(matches!(
        Artifact::from_files(&files, ""),
        Err(ArtifactError::Invalid { .. })
    ));
    let mut files = a.to_files();
    rewrite_manifest(&mut files, |v| {
        v["model"]["file"] = "../../etc/passwd".into()
    });
    assert!(Artifact::from_files(&files, "").is_err());
}

#[test]
fn version_names_are_checked() {
    for bad in [
        "",
        "latest",
        "../20261124T170000Z-abc",
        "20261124T170000Z-",
        "20261124T170000Z-ABC",
        "20261124T170000Z-a/b",
        "2026112xT170000Z-abc",
    ] {
        assert!(artifact::validate_version_name(bad).is_err(), "{bad:?}");
    }
    artifact::validate_version_name("20261124T170000Z-1a2b3c4d").unwrap();
    assert_eq!(
        artifact::parse_latest(b"20261124T170000Z-1a2b3c4d\n").unwrap(),
        "20261124T170000Z-1a2b3c4d"
    );
    assert!(artifact::parse_latest(b"../x").is_err());
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("latest"), "../../etc\n").unwrap();
    assert!(matches!(
        artifact::load(root.path(), None),
        Err(ArtifactError::Malformed { .. })
    ));
}

#[test]
fn fingerprint_is_deterministic_and_order_sensitive() {
    let rows = training();
    let fp = |order: &[usize]| {
        let mut f = Fingerprint::new();
        for &i in order {
            f.add(i as i64, &rows[i], 0);
        }
        f.finish()
    };
    assert_eq!(fp(&[0, 1, 2]), fp(&[0, 1, 2]));
    assert_ne!(fp(&[0, 1, 2]), fp(&[2, 1, 0]));
    assert_ne!(fp(&[0, 1]), fp(&[0, 1, 2]));
}

#[test]
fn parameters_round_trip_bit_exactly() {
    // Awkward floats: JSON text must give back the very same bits.
    let enc = FeatureEncoding::fit(&training()).unwrap();
    let w = enc.width();
    let mut x = 0.123_456_789_012_345_67_f64;
    let weights: Vec<f64> = (0..w)
        .map(|_| {
            x = (x * 7.3 + std::f64::consts::FRAC_1_PI).fract() - 0.5;
            x * 3.0
        })
        .collect();
    let m = Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights,
            intercept: -0.2,
        }),
        0.5,
    )
    .unwrap();
    let a = Artifact::new(spec(m, 0)).unwrap();
    let back = Artifact::from_files(&a.to_files(), "").unwrap();
    assert_eq!(back.model, a.model);
    for i in 0..200 {
        let f = rec(
            i % 5,
            ["a", "b", "c", "d", "e"][(i % 5) as usize],
            0.01 * i as f64 + 0.55,
            i % 7,
        );
        assert_eq!(
            back.model.predict_proba(&f).unwrap().to_bits(),
            a.model.predict_proba(&f).unwrap().to_bits()
        );
    }
}
