//! `pipeline train` on a real PostgreSQL cluster and the S3 emulator, with a synthetic
//! `feature_store` whose labels are drawn from a planted logistic model, so the best
//! achievable ROC AUC (that of the true probabilities) is known.

use std::collections::BTreeSet;
use std::process::Command;

use model::Features;
use pipeline::db;
use pipeline::train::{self, Location, Store, metrics};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use sqlx::postgres::PgPool;

/// Labelled rows per generated data set (plus `UNLABELLED` rows with a NULL label).
const ROWS: usize = 25_000;
const UNLABELLED: usize = 300;

mod db_common;

use db_common::{passwords, prepared};

/// `ds_user`'s password.
fn ds_password() -> &'static str {
    &passwords().0
}

fn ds_url(tdb: &harness::TestDb) -> String {
    tdb.url_as(db::DS_USER, ds_password())
}

/// A generated data set: labelled rows have idx 1..=ROWS (so row position = idx - 1 in
/// `feature_store` order), unlabelled rows come after.
struct Synthetic {
    features: Vec<Features>,
    labels: Vec<u8>,
    /// The planted P(label = 1) of each labelled row.
    truth: Vec<f64>,
}

/// `strength` scales the planted signal on scd_a, scd_b (and a little on attr_b).
fn generate(seed: u64, strength: f64) -> Synthetic {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = Synthetic {
        features: Vec::new(),
        labels: Vec::new(),
        truth: Vec::new(),
    };
    for _ in 0..ROWS + UNLABELLED {
        let f = Features {
            attr_a: rng.random_range(1..=3),
            attr_b: ["a", "b", "c", "d"][rng.random_range(0..4)].to_string(),
            scd_a: rng.random::<f64>(),
            scd_b: rng.random_range(1..=10),
        };
        let logit = -3.0
            + strength
                * (3.0 * (f.scd_a - 0.5)
                    + 0.35 * (f.scd_b as f64 - 5.5)
                    + if f.attr_b == "c" { 0.4 } else { 0.0 });
        let p = 1.0 / (1.0 + (-logit).exp());
        s.labels.push(u8::from(rng.random::<f64>() < p));
        s.truth.push(p);
        s.features.push(f);
    }
    s
}

async fn insert(pool: &PgPool, s: &Synthetic) {
    sqlx::query("TRUNCATE feature_store")
        .execute(pool)
        .await
        .expect("truncate");
    let n = s.features.len();
    let idx: Vec<i64> = (1..=n as i64).collect();
    let a: Vec<i16> = s.features.iter().map(|f| f.attr_a as i16).collect();
    let b: Vec<String> = s.features.iter().map(|f| f.attr_b.clone()).collect();
    let sa: Vec<f64> = s.features.iter().map(|f| f.scd_a).collect();
    let sb: Vec<i32> = s.features.iter().map(|f| f.scd_b as i32).collect();
    let label: Vec<Option<i16>> = (0..n)
        .map(|i| (i < ROWS).then(|| i16::from(s.labels[i])))
        .collect();
    sqlx::query(
        "INSERT INTO feature_store (idx, attr_a, attr_b, scd_a, scd_b, label) \
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::text[], $4::float8[], \
         $5::int[], $6::smallint[])",
    )
    .bind(idx)
    .bind(a)
    .bind(b)
    .bind(sa)
    .bind(sb)
    .bind(label)
    .execute(pool)
    .await
    .expect("insert feature_store");
}

fn temp_root(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(harness::unique(name))
}

#[tokio::test]
async fn trains_as_ds_user_near_the_optimum_and_serving_scores_the_same() {
    let (tdb, owner) = prepared().await;
    let data = generate(11, 1.0);
    insert(&owner, &data).await;
    let prevalence = data.labels[..ROWS].iter().filter(|&&y| y == 1).count() as f64 / ROWS as f64;
    assert!(
        (0.05..0.15).contains(&prevalence),
        "prevalence {prevalence}"
    );

    let ds = db::connect(&ds_url(&tdb))
        .await
        .expect("connect as ds_user");
    // TRAIN_MODELS_OUT=DIR keeps the artifact (e.g. to point `server --model` at it).
    let keep = std::env::var_os("TRAIN_MODELS_OUT").map(std::path::PathBuf::from);
    let root = keep.clone().unwrap_or_else(|| temp_root("models"));
    let store = Store::open(Location::Dir(root.clone())).await;
    let t0 = std::time::Instant::now();
    let report = train::run(&ds, &store, 0.01, false, 7)
        .await
        .expect("train as ds_user");
    let secs = t0.elapsed().as_secs_f64();
    let t = &report.trained;
    assert_eq!(
        t.split.train.len() + t.split.valid.len() + t.split.test.len(),
        ROWS,
        "rows with a NULL label are skipped"
    );

    // The optimum on the very same test rows: the planted probabilities' AUC.
    let truth: Vec<f64> = t.split.test.iter().map(|&i| data.truth[i]).collect();
    let labels: Vec<u8> = t.split.test.iter().map(|&i| data.labels[i]).collect();
    assert_eq!(labels, t.test_labels);
    let optimum = metrics::roc_auc(&truth, &labels);
    eprintln!(
        "test ROC AUC {:.4} vs optimum {optimum:.4}; candidates {:?}; whole run {secs:.1}s",
        t.test.roc_auc, t.candidates
    );
    assert!(
        optimum - t.test.roc_auc <= 0.02,
        "test AUC {} is more than 0.02 below the optimum {optimum}",
        t.test.roc_auc
    );
    assert!(t.baseline.roc_auc == 0.5 && t.baseline.recall == 0.0);
    assert!(t.test.f1 > t.baseline.f1);
    assert_eq!(t.candidates.len(), 2);
    assert!(report.table.contains("majority class"), "{}", report.table);

    // The same connection cannot write.
    let denied = sqlx::query(
        "INSERT INTO feature_store (idx, attr_a, attr_b, scd_a, scd_b, label) \
         VALUES (999999, 1, 'a', 0.5, 1, 0)",
    )
    .execute(&ds)
    .await;
    match denied {
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.code().as_deref(), Some("42501"), "{e}");
            assert!(e.message().contains("permission denied"), "{e}");
        }
        other => panic!("INSERT as ds_user: expected permission denied, got {other:?}"),
    }

    // The artifact as the server loads it (latest, verified) scores every test row
    // exactly as training did.
    if keep.is_none() {
        assert_eq!(report.promotion, train::Promotion::First);
    }
    let loaded = model::artifact::load(&root, None).expect("load latest");
    assert_eq!(loaded.version(), report.version);
    for (k, &i) in t.split.test.iter().enumerate() {
        let p = loaded
            .model
            .predict_proba(&data.features[i])
            .expect("score");
        assert_eq!(
            p.to_bits(),
            t.test_scores[k].to_bits(),
            "row idx {}: served {p} vs trained {}",
            i + 1,
            t.test_scores[k]
        );
    }
    let m = &loaded.manifest;
    assert!(m.training_data.starts_with("sha256:"));
    assert!(m.code_version.starts_with("pipeline "));
    for key in [
        "test",
        "validation",
        "baseline_majority_class",
        "candidates",
    ] {
        assert!(m.metrics.contains_key(key), "metrics lack {key}");
    }
    let svg = loaded
        .extra_files
        .get(train::PICTURE_FILE)
        .expect("picture");
    let svg = String::from_utf8_lossy(svg);
    assert!(svg.starts_with("<svg") && svg.contains("ROC curve"));
    // To look at it: TRAIN_SVG_OUT=/tmp/eval.svg cargo test -p pipeline --test train
    if let Some(out) = std::env::var_os("TRAIN_SVG_OUT") {
        std::fs::write(out, svg.as_bytes()).expect("write the picture");
    }
    assert!(
        root.join(&report.version)
            .join(train::PICTURE_FILE)
            .is_file()
    );

    // Same data, same seed: same fingerprint, same split.
    let again = train::load_feature_store(&ds).await.expect("reload");
    assert_eq!(again.fingerprint, m.training_data);
    assert_eq!(train::split(&again.labels, 7), t.split);
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}

fn pipeline_train(tdb: &harness::TestDb, models: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["train", "--models", models, "--seed", "5"])
        .args(extra)
        .envs(harness::moto().env())
        .env("DS_DATABASE_URL", ds_url(tdb))
        .env_remove("DATABASE_URL")
        .env_remove("MODELS")
        .output()
        .expect("run pipeline train")
}

async fn versions_in(client: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<String> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("models/")
        .send()
        .await
        .expect("list");
    out.contents()
        .iter()
        .filter_map(|o| o.key())
        .filter_map(|k| k.strip_suffix("/checksums"))
        .map(|k| k.trim_start_matches("models/").to_string())
        .collect()
}

#[tokio::test]
async fn promotion_gate_on_s3_refuses_a_worse_model_unless_forced() {
    let (tdb, owner) = prepared().await;
    let client = harness::moto().s3_client().await;
    let bucket = harness::unique("models");
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let models = format!("s3://{bucket}/models");
    let store = Store::with_client(
        Location::S3 {
            bucket: bucket.clone(),
            prefix: "models".into(),
        },
        client.clone(),
    );

    // 1. A good model: the first one, promoted.
    let strong = generate(21, 1.0);
    insert(&owner, &strong).await;
    let out = pipeline_train(&tdb, &models, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "first train failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ROC AUC") && stdout.contains("first model"),
        "{stdout}"
    );
    let v1 = store.latest().await.expect("latest").expect("a latest");
    // Round trip from S3: checksums verified, the same files as written.
    let a1 = store.load(&v1).await.expect("load v1 from S3");
    let auc1 = train::stored_test_auc(&a1).expect("stored AUC");
    assert!(a1.extra_files.contains_key(train::PICTURE_FILE));
    let p = a1.model.predict(&strong.features[0]).expect("score");
    assert!((0.0..=1.0).contains(&p.probability));

    // 2. The data loses most of its signal: the new model is worse by far more than
    // the margin. Saved, not promoted, non-zero exit, latest unchanged.
    let weak = generate(22, 0.15);
    insert(&owner, &weak).await;
    let out = pipeline_train(&tdb, &models, &["--margin", "0.01"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a worse model was accepted: {stderr}"
    );
    assert!(stderr.contains("not promoted"), "{stderr}");
    assert!(
        stderr.contains(&v1),
        "the message names the current latest: {stderr}"
    );
    assert!(
        stderr.contains("on this run's test split latest scores"),
        "{stderr}"
    );
    assert_eq!(
        store.latest().await.expect("latest").as_deref(),
        Some(v1.as_str())
    );
    let versions = versions_in(&client, &bucket).await;
    assert_eq!(
        versions.len(),
        2,
        "the refused version is still saved: {versions:?}"
    );
    let v2 = versions.iter().find(|v| **v != v1).expect("v2").clone();
    let a2 = store.load(&v2).await.expect("load v2");
    let auc2 = train::stored_test_auc(&a2).expect("AUC v2");
    assert!(auc2 < auc1 - 0.01, "{auc2} vs {auc1}");

    // 3. --force promotes it.
    let out = pipeline_train(&tdb, &models, &["--force"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "forced train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FORCED"), "{stdout}");
    let v3 = store.latest().await.expect("latest").expect("a latest");
    assert!(v3 != v1 && v3 != v2, "{v3}");
    assert_eq!(versions_in(&client, &bucket).await.len(), 3);

    // 4. Exactly the layout the server reads: <prefix>/latest names <prefix>/<v>/.
    let latest = client
        .get_object()
        .bucket(&bucket)
        .key("models/latest")
        .send()
        .await
        .expect("get latest");
    let body = latest.body.collect().await.expect("body").into_bytes();
    assert_eq!(
        model::artifact::parse_latest(&body).expect("parse latest"),
        v3
    );
}

#[tokio::test]
async fn bad_arguments_fail_with_one_clear_line() {
    let (tdb, _owner) = prepared().await;
    let out = pipeline_train(&tdb, "gs://bucket/models", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid --models"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    let out = pipeline_train(&tdb, "/nonexistent/models", &["--margin=-0.5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid --margin -0.5"), "{stderr}");
}

/// Both families, exported into the model crate's format, saved and loaded back:
/// the loaded model scores every row bit-identically to the freshly exported one, the
/// tree ensemble has real skill, and the exported logistic weights reproduce linfa's
/// own probabilities.
#[test]
fn both_families_survive_the_artifact_round_trip() {
    use linfa::prelude::*;

    let data = generate(31, 1.0);
    let (feats, labels) = (&data.features[..8_000], &data.labels[..8_000]);
    let enc = model::FeatureEncoding::fit(feats).expect("encoding");
    let mut x = ndarray::Array2::<f64>::zeros((feats.len(), enc.width()));
    for (k, f) in feats.iter().enumerate() {
        let row = enc.encode(f).expect("encode");
        x.row_mut(k).assign(&ndarray::Array1::from(row));
    }
    let root = temp_root("families");
    for classifier in [
        train::fit::logistic(x.view(), labels).expect("logistic"),
        train::fit::bagged_trees(x.view(), labels, 3).expect("trees"),
    ] {
        let family = classifier.family();
        let m = model::Model::new(enc.clone(), classifier, 0.3).expect("model");
        let scores: Vec<f64> = feats
            .iter()
            .map(|f| m.predict_proba(f).expect("score"))
            .collect();
        let auc = metrics::roc_auc(&scores, labels);
        assert!(auc > 0.7, "{family}: in-sample AUC {auc}");
        let a = model::Artifact::new(model::ArtifactSpec {
            model: m,
            code_version: train::code_version(),
            training_data: "sha256:test".into(),
            metrics: serde_json::Map::new(),
            extra_files: model::ArtifactFiles::new(),
            created: std::time::SystemTime::now(),
        })
        .expect("artifact");
        a.save(&root).expect("save");
        let back = model::artifact::load(&root, Some(a.version())).expect("load");
        for (f, s) in feats.iter().zip(&scores) {
            let p = back.model.predict_proba(f).expect("score");
            assert_eq!(p.to_bits(), s.to_bits(), "{family}: {f:?}");
        }
    }

    // linfa's own probabilities for the logistic fit equal the exported model's (our fit
    // centres the columns and starts at the intercept-only solution: same optimum,
    // reached by another path, so equal to the solver's tolerance, not to the bit; a
    // wrong sign or intercept would be off by far more).
    let fitted = linfa_logistic::LogisticRegression::default()
        .alpha(train::fit::LOGISTIC_ALPHA)
        .max_iterations(train::fit::LOGISTIC_MAX_ITERATIONS)
        .fit(&Dataset::new(
            x.clone(),
            ndarray::Array1::from(labels.to_vec()),
        ))
        .expect("linfa fit");
    // linfa's probabilities are for its "positive" class, the more frequent label.
    assert_eq!(fitted.labels().pos.class, 0, "label 0 is the majority");
    let theirs = fitted.predict_probabilities(&x).mapv(|p| 1.0 - p);
    let ours = train::fit::logistic(x.view(), labels).expect("logistic");
    for (k, row) in x.rows().into_iter().enumerate() {
        let p = ours.predict_proba(row.as_slice().expect("contiguous"));
        assert!(
            (p - theirs[k]).abs() < 1e-6,
            "row {k}: {p} vs {}",
            theirs[k]
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
