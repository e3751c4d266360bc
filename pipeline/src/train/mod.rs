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

mod data;
pub mod fit;
pub mod metrics;
pub mod plot;
mod publish;
pub mod store;

use std::time::Instant;

use model::{ArtifactError, EncodeError, FeatureEncoding, Model, S3Error};
use ndarray::Array2;
use rand::{SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use sqlx::postgres::PgPool;

pub use data::{Data, connect, load_feature_store};
pub use metrics::Evaluation;
pub use model::Location;
pub use publish::{
    Promotion, Report, check_margin, code_version, make_artifact, publish, publish_fitted,
    stored_test_auc,
};
pub use store::Store;

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
    #[error(transparent)]
    S3(#[from] S3Error),
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

/// The evaluation table: the candidates on the validation split, then the chosen model
/// against the majority-class baseline on the test split.
impl std::fmt::Display for Trained {
    fn fmt(&self, s: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self;
        writeln!(s, "candidates (validation split):")?;
        for c in &t.candidates {
            writeln!(
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
            )?;
        }
        writeln!(
            s,
            "test split: {} rows, {} positive ({:.1}%), threshold {:.4} (max F1 on validation)",
            t.test.rows,
            t.test.positives,
            100.0 * t.test.positives as f64 / t.test.rows.max(1) as f64,
            t.test.threshold
        )?;
        writeln!(
            s,
            "  {:<10} {:>10} {:>16}",
            "metric", "model", "majority class"
        )?;
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
            writeln!(s, "  {name:<10} {m:>10.4} {b:>16.4}")?;
        }
        let (c, b) = (t.test.confusion, t.baseline.confusion);
        writeln!(
            s,
            "  confusion  TP {} FP {} TN {} FN {}   (baseline TP {} FP {} TN {} FN {})",
            c.tp, c.fp, c.tn, c.fn_, b.tp, b.fp, b.tn, b.fn_
        )
    }
}

fn family_of(m: &Model) -> &'static str {
    match m.classifier {
        model::Classifier::LogisticRegression(_) => "logistic_regression",
        model::Classifier::TreeEnsemble(_) => "bagged_trees",
    }
}

/// What [`fit_from`] read and trained: steps 1 to 4.
#[derive(Debug)]
pub struct Fitted {
    pub data: Data,
    pub trained: Trained,
    pub seed: u64,
}

/// Steps 1 to 4: reads `feature_store`, splits, fits both families and evaluates the
/// chosen one (its table is `trained`'s `Display`).
pub async fn fit_from(pool: &PgPool, seed: u64) -> Result<Fitted, TrainError> {
    let data = load_feature_store(pool).await?;
    tracing::info!(rows = data.labels.len(), fingerprint = %data.fingerprint, "read feature_store");
    let (data, trained) =
        tokio::task::spawn_blocking(move || train(&data, seed).map(|t| (data, t)))
            .await
            .map_err(|e| TrainError::Join(e.to_string()))??;
    Ok(Fitted {
        data,
        trained,
        seed,
    })
}

/// The whole command: read, train, evaluate, publish ([`fit_from`], then
/// [`publish_fitted`]).
pub async fn run(
    pool: &PgPool,
    store: &Store,
    margin: f64,
    force: bool,
    seed: u64,
) -> Result<Report, TrainError> {
    let t0 = Instant::now();
    let fitted = fit_from(pool, seed).await?;
    let report = publish_fitted(store, fitted, margin, force).await?;
    tracing::info!(
        seconds = t0.elapsed().as_secs_f64(),
        "trained and published"
    );
    Ok(report)
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
}
