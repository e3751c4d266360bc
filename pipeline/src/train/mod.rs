//! `pipeline train`: read `feature_store` (as the read-only `ds_user`), fit two model
//! families, pick one on validation data, evaluate it on a held-out test split, and
//! publish a versioned artifact behind a promotion gate.
//!
//! Steps ([`run`]):
//!
//! 1. [`load_feature_store`]: every labelled row, in `idx` order, inside a READ ONLY
//!    transaction; a fingerprint of the rows goes into the manifest.
//! 2. [`split`]: stratified and seeded, 60% train / 20% validation / 20% test, so each
//!    split keeps the ~9% positive rate.
//! 3. [`train`]: the encoding ([`model::FeatureEncoding::fit`], the one the server uses)
//!    is fitted on the training split only; logistic regression and bagged decision
//!    trees are fitted (see [`fit`]); the family with the higher validation ROC AUC wins
//!    (logistic on a tie). The decision threshold is the one maximising F1 on the
//!    validation split: with 9% positives, 0.5 would label almost nothing positive.
//! 4. Evaluation on the test split, and of the majority-class baseline (constant
//!    probability = training positive rate, label always 0), as a table, in the
//!    manifest's `metrics`, and drawn in `evaluation.svg` beside the model.
//! 5. [`publish`]: the version is saved; `latest` moves only if the new test ROC AUC is
//!    not worse than `latest`'s by more than `--margin`, or with `--force`.

pub mod fit;
pub mod metrics;
pub mod plot;
pub mod store;

use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

use model::{
    Artifact, ArtifactError, ArtifactSpec, EncodeError, FeatureEncoding, Features, Fingerprint,
    Model,
};
use ndarray::Array2;
use rand::{SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use sqlx::Row as _;
use sqlx::postgres::PgPool;

pub use metrics::Evaluation;
pub use store::{ModelStore, Store};

/// The picture stored beside the model.
pub const PICTURE_FILE: &str = "evaluation.svg";
/// Share of each class going to training and validation (the rest is the test split).
pub const TRAIN_SHARE: f64 = 0.6;
pub const VALID_SHARE: f64 = 0.2;
/// Fewer labelled rows of either class than this and training refuses to start.
pub const MIN_PER_CLASS: usize = 20;

/// Why training or publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("reading feature_store: {0}")]
    Query(#[source] sqlx::Error),
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("feature_store row idx={idx}: {reason}")]
    BadRow { idx: i64, reason: String },
    #[error(
        "feature_store has {positives} positive and {negatives} negative labelled rows; \
         training needs at least {MIN_PER_CLASS} of each"
    )]
    TooFew { positives: usize, negatives: usize },
    #[error("fitting {family}: {reason}")]
    Fit {
        family: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("s3://{bucket}/{key}: {message}")]
    S3 {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("invalid --models {value:?}: {reason}")]
    Store { value: String, reason: String },
    #[error(
        "the current latest model {version} cannot be compared against: {reason} (use --force to promote anyway)"
    )]
    Incumbent { version: String, reason: String },
    #[error(
        "not promoted: new model {new_version} has test ROC AUC {new_auc:.4}, worse than latest \
         {latest_version} ({latest_auc:.4}) by more than the margin {margin}{note}; it is saved \
         at {saved}, latest still names {latest_version} (use --force to promote it anyway)"
    )]
    NotPromoted {
        /// Empty, or how latest scores on this run's test split (tells a data change
        /// from a worse model).
        note: String,
        new_version: String,
        new_auc: f64,
        latest_version: String,
        latest_auc: f64,
        margin: f64,
        saved: String,
    },
    #[error("invalid --margin {0}: need a finite number >= 0")]
    Margin(f64),
    #[error("background task failed: {0}")]
    Join(String),
}

/// The labelled rows of `feature_store`, in `idx` order.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub idx: Vec<i64>,
    pub features: Vec<Features>,
    pub labels: Vec<u8>,
    /// `sha256:<hex>` over the rows ([`Fingerprint`]).
    pub fingerprint: String,
}

/// Reads every labelled row (rows with a NULL label are skipped) in a READ ONLY
/// transaction, so even a misconfigured role could not write through this path.
pub async fn load_feature_store(pool: &PgPool) -> Result<Data, TrainError> {
    let mut tx = pool.begin().await.map_err(TrainError::Query)?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(TrainError::Query)?;
    let rows = sqlx::query(
        "SELECT idx, attr_a, attr_b, scd_a, scd_b, label FROM feature_store \
         WHERE label IS NOT NULL ORDER BY idx",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(TrainError::Query)?;
    tx.commit().await.map_err(TrainError::Query)?;

    let mut data = Data::default();
    let mut fp = Fingerprint::new();
    for r in rows {
        let idx: i64 = r.try_get("idx").map_err(TrainError::Query)?;
        let label: i16 = r.try_get("label").map_err(TrainError::Query)?;
        let label = match label {
            0 => 0u8,
            1 => 1u8,
            other => {
                return Err(TrainError::BadRow {
                    idx,
                    reason: format!("label {other} is not 0 or 1"),
                });
            }
        };
        let f = Features {
            attr_a: i64::from(r.try_get::<i16, _>("attr_a").map_err(TrainError::Query)?),
            attr_b: r.try_get("attr_b").map_err(TrainError::Query)?,
            scd_a: r.try_get("scd_a").map_err(TrainError::Query)?,
            scd_b: i64::from(r.try_get::<i32, _>("scd_b").map_err(TrainError::Query)?),
        };
        if !f.scd_a.is_finite() {
            return Err(TrainError::BadRow {
                idx,
                reason: format!("scd_a {} is not a finite number", f.scd_a),
            });
        }
        fp.add(idx, &f, label);
        data.idx.push(idx);
        data.features.push(f);
        data.labels.push(label);
    }
    data.fingerprint = fp.finish();
    Ok(data)
}

/// Row positions of the three splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    pub test: Vec<usize>,
}

/// Stratified, seeded split: each class is shuffled with `seed` and cut 60/20/20.
/// The same labels and seed always give the same split.
pub fn split(labels: &[u8], seed: u64) -> Split {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = Split {
        train: Vec::new(),
        valid: Vec::new(),
        test: Vec::new(),
    };
    for class in [0u8, 1u8] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rows.shuffle(&mut rng);
        let n = rows.len();
        let n_train = (n as f64 * TRAIN_SHARE).round() as usize;
        let n_valid = (n as f64 * VALID_SHARE).round() as usize;
        s.train.extend_from_slice(&rows[..n_train]);
        s.valid.extend_from_slice(&rows[n_train..n_train + n_valid]);
        s.test.extend_from_slice(&rows[n_train + n_valid..]);
    }
    s.train.sort_unstable();
    s.valid.sort_unstable();
    s.test.sort_unstable();
    s
}

/// One fitted candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub family: String,
    pub valid_auc: f64,
    pub fit_seconds: f64,
}

/// What [`train`] produces: the chosen model and its evaluation.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: Model,
    pub candidates: Vec<Candidate>,
    pub split: Split,
    /// The chosen model's validation figures (at the chosen threshold).
    pub valid: Evaluation,
    /// On the test split.
    pub test: Evaluation,
    pub baseline: Evaluation,
    /// The chosen model's probability for each test row (same order as `split.test`),
    /// computed from the encoded matrix: what the serving side must reproduce.
    pub test_scores: Vec<f64>,
    pub test_labels: Vec<u8>,
}

/// The encoded splits [`train`] fits and evaluates on: the encoding fitted on the
/// training split, one matrix and label vector per split (rows in `split` order).
/// Public so that the training benchmark (`bench/train`) exports exactly these.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub split: Split,
    pub encoding: FeatureEncoding,
    pub x_train: Array2<f64>,
    pub y_train: Vec<u8>,
    pub x_valid: Array2<f64>,
    pub y_valid: Vec<u8>,
    pub x_test: Array2<f64>,
    pub y_test: Vec<u8>,
}

/// Checks there are enough rows of each class, splits ([`split`]), fits the encoding
/// on the training split and encodes all three splits.
pub fn prepare(data: &Data, seed: u64) -> Result<Prepared, TrainError> {
    let positives = data.labels.iter().filter(|&&y| y == 1).count();
    let negatives = data.labels.len() - positives;
    if positives < MIN_PER_CLASS || negatives < MIN_PER_CLASS {
        return Err(TrainError::TooFew {
            positives,
            negatives,
        });
    }
    let split = split(&data.labels, seed);
    let encoding = FeatureEncoding::fit(split.train.iter().map(|&i| &data.features[i]))?;
    Ok(Prepared {
        x_train: matrix(&encoding, data, &split.train)?,
        x_valid: matrix(&encoding, data, &split.valid)?,
        x_test: matrix(&encoding, data, &split.test)?,
        y_train: pick(&data.labels, &split.train),
        y_valid: pick(&data.labels, &split.valid),
        y_test: pick(&data.labels, &split.test),
        encoding,
        split,
    })
}

fn matrix(enc: &FeatureEncoding, data: &Data, rows: &[usize]) -> Result<Array2<f64>, TrainError> {
    let mut x = Array2::<f64>::zeros((rows.len(), enc.width()));
    for (k, &i) in rows.iter().enumerate() {
        let mut row = x.row_mut(k);
        let slice = row
            .as_slice_mut()
            .ok_or_else(|| TrainError::Join("matrix row is not contiguous".into()))?;
        enc.encode_into(&data.features[i], slice)
            .map_err(|e| TrainError::BadRow {
                idx: data.idx[i],
                reason: e.to_string(),
            })?;
    }
    Ok(x)
}

/// P(label = 1) of every row of an encoded matrix.
pub fn score(model: &Model, x: &Array2<f64>) -> Vec<f64> {
    x.rows()
        .into_iter()
        .map(|r| match r.as_slice() {
            Some(s) => model.predict_row(s),
            None => model.predict_row(&r.to_vec()),
        })
        .collect()
}

fn pick<T: Copy>(v: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&i| v[i]).collect()
}

/// Fits both families, picks by validation ROC AUC, chooses the threshold on
/// validation data and evaluates on the test split. Pure CPU: call it from a blocking
/// task in async code.
pub fn train(data: &Data, seed: u64) -> Result<Trained, TrainError> {
    let Prepared {
        split,
        encoding,
        x_train,
        y_train,
        x_valid,
        y_valid,
        x_test,
        y_test,
    } = prepare(data, seed)?;

    let mut candidates = Vec::new();
    let mut best: Option<(f64, Model, Vec<f64>)> = None;
    type Fitter<'a> = Box<dyn Fn() -> Result<model::Classifier, TrainError> + 'a>;
    let fitters: [(&str, Fitter<'_>); 2] = [
        (
            "logistic_regression",
            Box::new(|| fit::logistic(x_train.view(), &y_train)),
        ),
        (
            "bagged_trees",
            Box::new(|| fit::bagged_trees(x_train.view(), &y_train, seed)),
        ),
    ];
    for (name, fitter) in fitters {
        let t0 = Instant::now();
        let classifier = fitter()?;
        let fit_seconds = t0.elapsed().as_secs_f64();
        let m = Model::new(encoding.clone(), classifier, 0.5).map_err(|e| TrainError::Fit {
            family: "model",
            reason: e.to_string(),
        })?;
        let s_valid = score(&m, &x_valid);
        let valid_auc = metrics::roc_auc(&s_valid, &y_valid);
        tracing::info!(family = name, valid_auc, fit_seconds, "fitted");
        candidates.push(Candidate {
            family: name.to_string(),
            valid_auc,
            fit_seconds,
        });
        if best.as_ref().is_none_or(|(auc, _, _)| valid_auc > *auc) {
            best = Some((valid_auc, m, s_valid));
        }
    }
    let (_, mut model, s_valid) = best.ok_or_else(|| TrainError::Fit {
        family: "model",
        reason: "no candidate".into(),
    })?;
    let (threshold, _) = metrics::best_f1_threshold(&s_valid, &y_valid);
    model.threshold = threshold;
    let valid = Evaluation::new(&s_valid, &y_valid, threshold);

    let test_scores = score(&model, &x_test);
    let test = Evaluation::new(&test_scores, &y_test, threshold);
    let prior = y_train.iter().filter(|&&y| y == 1).count() as f64 / y_train.len() as f64;
    // The majority class is 0: predict the prior for everyone, label nobody positive.
    let baseline = Evaluation::new(&vec![prior; y_test.len()], &y_test, 1.0);
    Ok(Trained {
        model,
        candidates,
        split,
        valid,
        test,
        baseline,
        test_scores,
        test_labels: y_test,
    })
}

/// The evaluation table, as printed.
pub fn table(t: &Trained) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "candidates (validation split):");
    for c in &t.candidates {
        let _ = writeln!(
            s,
            "  {:<20} ROC AUC {:.4}   fit {:.2}s{}",
            c.family,
            c.valid_auc,
            c.fit_seconds,
            if family_of(&t.model) == c.family {
                "   <- chosen"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "test split: {} rows, {} positive ({:.1}%), threshold {:.4} (max F1 on validation)",
        t.test.rows,
        t.test.positives,
        100.0 * t.test.positives as f64 / t.test.rows.max(1) as f64,
        t.test.threshold
    );
    let _ = writeln!(
        s,
        "  {:<10} {:>10} {:>16}",
        "metric", "model", "majority class"
    );
    let rows: [(&str, f64, f64); 7] = [
        ("ROC AUC", t.test.roc_auc, t.baseline.roc_auc),
        ("PR AUC", t.test.pr_auc, t.baseline.pr_auc),
        ("log loss", t.test.log_loss, t.baseline.log_loss),
        ("accuracy", t.test.accuracy, t.baseline.accuracy),
        ("precision", t.test.precision, t.baseline.precision),
        ("recall", t.test.recall, t.baseline.recall),
        ("F1", t.test.f1, t.baseline.f1),
    ];
    for (name, m, b) in rows {
        let _ = writeln!(s, "  {name:<10} {m:>10.4} {b:>16.4}");
    }
    let (c, b) = (t.test.confusion, t.baseline.confusion);
    let _ = writeln!(
        s,
        "  confusion  TP {} FP {} TN {} FN {}   (baseline TP {} FP {} TN {} FN {})",
        c.tp, c.fp, c.tn, c.fn_, b.tp, b.fp, b.tn, b.fn_
    );
    s
}

fn family_of(m: &Model) -> &'static str {
    match m.classifier {
        model::Classifier::LogisticRegression(_) => "logistic_regression",
        model::Classifier::TreeEnsemble(_) => "bagged_trees",
    }
}

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

/// `pipeline train` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Where artifacts go: a directory or s3://BUCKET/PREFIX (the root the server's
    /// --model reads: <root>/latest, <root>/<version>/...).
    #[arg(long, env = "MODELS")]
    pub models: String,
    /// Connection URL for the read-only ds_user.
    #[arg(long, env = "DS_DATABASE_URL", hide_env_values = true)]
    pub ds_database_url: String,
    /// Promote even if the new model's test ROC AUC is worse than latest's by more
    /// than --margin.
    #[arg(long)]
    pub force: bool,
    /// How much worse (test ROC AUC) than latest a new model may be and still be
    /// promoted.
    #[arg(long, default_value_t = 0.01)]
    pub margin: f64,
    /// Seed of the split and the tree bootstrap samples.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What [`run`] did.
#[derive(Debug)]
pub struct Report {
    pub version: String,
    pub saved: String,
    pub promotion: Promotion,
    pub trained: Trained,
    pub table: String,
}

/// The whole command: read, train, evaluate, publish. A refused promotion is the error
/// [`TrainError::NotPromoted`] (the version is saved).
pub async fn run(
    pool: &PgPool,
    store: &Store,
    margin: f64,
    force: bool,
    seed: u64,
) -> Result<Report, TrainError> {
    let t0 = Instant::now();
    let data = load_feature_store(pool).await?;
    tracing::info!(rows = data.labels.len(), fingerprint = %data.fingerprint, "read feature_store");
    let (data, trained) =
        tokio::task::spawn_blocking(move || train(&data, seed).map(|t| (data, t)))
            .await
            .map_err(|e| TrainError::Join(e.to_string()))??;
    let table = table(&trained);
    println!("{table}");
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
    tracing::info!(
        version,
        ?promotion,
        seconds = t0.elapsed().as_secs_f64(),
        "published"
    );
    Ok(Report {
        version,
        saved,
        promotion,
        trained,
        table,
    })
}

/// The binary's entry point for `pipeline train`.
pub async fn cli(args: &TrainArgs) -> Result<(), TrainError> {
    let location: ModelStore = args.models.parse()?;
    if !(args.margin.is_finite() && args.margin >= 0.0) {
        return Err(TrainError::Margin(args.margin));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect(&args.ds_database_url)
        .await
        .map_err(TrainError::Connect)?;
    let store = Store::open(location).await;
    let r = run(&pool, &store, args.margin, args.force, args.seed).await?;
    match &r.promotion {
        Promotion::First => println!(
            "model {} saved at {}; latest -> {} (first model)",
            r.version, r.saved, r.version
        ),
        Promotion::Promoted {
            previous,
            previous_auc,
        } => println!(
            "model {} saved at {}; latest -> {} (test ROC AUC {:.4}, was {previous} with {previous_auc:.4})",
            r.version, r.saved, r.version, r.trained.test.roc_auc
        ),
        Promotion::Forced {
            previous,
            previous_auc,
        } => println!(
            "model {} saved at {}; latest -> {} FORCED (test ROC AUC {:.4}, was {previous} with {})",
            r.version,
            r.saved,
            r.version,
            r.trained.test.roc_auc,
            previous_auc.map_or("unreadable metrics".to_string(), |a| format!("{a:.4}"))
        ),
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let labels: Vec<u8> = (0..1000).map(|i| u8::from(i % 11 == 0)).collect();
        let s = split(&labels, 3);
        assert_eq!(s, split(&labels, 3));
        assert_ne!(s.test, split(&labels, 4).test);
        let mut all: Vec<usize> = [&s.train[..], &s.valid[..], &s.test[..]].concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let pos = labels.iter().filter(|&&y| y == 1).count();
        for (part, share) in [(&s.train, 0.6), (&s.valid, 0.2), (&s.test, 0.2)] {
            let p = part.iter().filter(|&&i| labels[i] == 1).count();
            assert!((p as f64 - share * pos as f64).abs() <= 1.0, "{p} of {pos}");
        }
    }

    #[test]
    fn store_locations_parse() {
        assert_eq!(
            "s3://b/models/".parse::<ModelStore>().unwrap(),
            ModelStore::S3 {
                bucket: "b".into(),
                prefix: "models".into()
            }
        );
        assert_eq!(
            "out/models".parse::<ModelStore>().unwrap(),
            ModelStore::Dir("out/models".into())
        );
        assert!("s3:///x".parse::<ModelStore>().is_err());
        assert!("gs://b/x".parse::<ModelStore>().is_err());
    }
}
