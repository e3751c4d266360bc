//! The feature schema and its encoding into a model row.
//!
//! One record is `{attr_a: int, attr_b: string, scd_a: float, scd_b: int}` (the columns of
//! `feature_store`). [`FeatureEncoding::encode`] turns it into the row the classifier
//! scores; training and serving call the very same function, so they cannot disagree.
//!
//! Row layout (see [`FeatureEncoding::feature_names`]):
//!
//! ```text
//! [ z(attr_a), z(scd_a), z(scd_b), attr_b=<cat 0>, attr_b=<cat 1>, ... ]
//! ```
//!
//! * Numerics are standardised, `z(x) = (x - mean) / std`, with `mean` and `std` fitted on
//!   the training data and stored in the artifact. A constant column (std 0) is stored
//!   with `std = 1` so it encodes to 0 instead of dividing by zero.
//! * `attr_b` is one-hot over the categories seen in training, in sorted order.
//!   **A category never seen in training** (for example `"e"`) encodes to all zeros in
//!   the one-hot block: the "unknown" bucket. The model then scores it as if `attr_b`
//!   contributed nothing (for logistic regression: the intercept's baseline). This is
//!   deliberate and documented; [`FeatureEncoding::is_known_category`] lets a caller
//!   count such inputs.

use serde::{Deserialize, Serialize};

/// The numeric features, in row order.
pub(crate) const NUMERIC_FEATURES: [&str; 3] = ["attr_a", "scd_a", "scd_b"];
/// The categorical feature that is one-hot encoded.
pub(crate) const CATEGORICAL_FEATURE: &str = "attr_b";

/// One input record: the four features of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Features {
    pub attr_a: i64,
    pub attr_b: String,
    pub scd_a: f64,
    pub scd_b: i64,
}

impl Features {
    /// The numeric features as floats, in [`NUMERIC_FEATURES`] order.
    pub(crate) fn numerics(&self) -> [f64; 3] {
        [self.attr_a as f64, self.scd_a, self.scd_b as f64]
    }
}

/// What is wrong with a record or with an encoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("feature {field}: value {value} is not a finite number")]
    NonFinite { field: &'static str, value: f64 },
    #[error("feature {field}: value {value} is too large to score")]
    OutOfRange { field: &'static str, value: f64 },
    #[error("the model's score is not a number for this input")]
    NotScorable,
    #[error("cannot fit an encoding on zero records")]
    Empty,
    #[error("encoding is invalid: {0}")]
    Invalid(String),
}

/// Mean and standard deviation of one numeric feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    pub name: String,
    pub mean: f64,
    pub std: f64,
}

/// How a category never seen in training is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCategory {
    /// All zeros in the one-hot block.
    AllZeros,
}

/// The fitted encoding: stored in the artifact's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureEncoding {
    /// One scaler per numeric feature, in [`NUMERIC_FEATURES`] order.
    pub numeric: Vec<Scaler>,
    /// The name of the one-hot feature (always [`CATEGORICAL_FEATURE`]).
    pub categorical: String,
    /// The categories seen in training, sorted; one column each.
    pub categories: Vec<String>,
    /// What an unseen category becomes.
    pub unknown_category: UnknownCategory,
}

impl FeatureEncoding {
    /// Fits means, standard deviations (population) and the category list on training
    /// records.
    pub fn fit<'a, I>(records: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = &'a Features>,
    {
        let mut n = 0u64;
        let mut cats = std::collections::BTreeSet::new();
        // Welford's algorithm: one pass, numerically stable.
        let mut mean = [0.0f64; 3];
        let mut m2 = [0.0f64; 3];
        for r in records {
            check_finite(r)?;
            n += 1;
            for (i, x) in r.numerics().into_iter().enumerate() {
                let delta = x - mean[i];
                mean[i] += delta / n as f64;
                m2[i] += delta * (x - mean[i]);
            }
            if !cats.contains(r.attr_b.as_str()) {
                cats.insert(r.attr_b.clone());
            }
        }
        if n == 0 {
            return Err(EncodeError::Empty);
        }
        let numeric = NUMERIC_FEATURES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let var = m2[i] / n as f64;
                let std = var.sqrt();
                Scaler {
                    name: (*name).to_string(),
                    mean: mean[i],
                    std: if std > 1e-12 && std.is_finite() {
                        std
                    } else {
                        1.0
                    },
                }
            })
            .collect();
        let enc = FeatureEncoding {
            numeric,
            categorical: CATEGORICAL_FEATURE.to_string(),
            categories: cats.into_iter().collect(),
            unknown_category: UnknownCategory::AllZeros,
        };
        enc.validate()?;
        Ok(enc)
    }

    /// Checks an encoding read from an artifact: the expected features, in order,
    /// finite positive scales, sorted distinct categories.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let names: Vec<&str> = self.numeric.iter().map(|s| s.name.as_str()).collect();
        if names != NUMERIC_FEATURES {
            return Err(EncodeError::Invalid(format!(
                "numeric features are {names:?}, expected {NUMERIC_FEATURES:?}"
            )));
        }
        for s in &self.numeric {
            if !s.mean.is_finite() || !s.std.is_finite() || s.std <= 0.0 {
                return Err(EncodeError::Invalid(format!(
                    "scaler for {} has mean {} and std {}: need finite values and std > 0",
                    s.name, s.mean, s.std
                )));
            }
        }
        if self.categorical != CATEGORICAL_FEATURE {
            return Err(EncodeError::Invalid(format!(
                "categorical feature is {:?}, expected {CATEGORICAL_FEATURE:?}",
                self.categorical
            )));
        }
        if self.categories.windows(2).any(|w| w[0] >= w[1]) {
            return Err(EncodeError::Invalid(
                "categories must be sorted and distinct".into(),
            ));
        }
        Ok(())
    }

    /// The number of columns in a row.
    pub fn width(&self) -> usize {
        self.numeric.len() + self.categories.len()
    }

    /// Column names, in row order: `attr_a`, `scd_a`, `scd_b`, `attr_b=a`, ...
    pub fn feature_names(&self) -> Vec<String> {
        self.numeric
            .iter()
            .map(|s| s.name.clone())
            .chain(
                self.categories
                    .iter()
                    .map(|c| format!("{}={c}", self.categorical)),
            )
            .collect()
    }

    /// Whether `category` was seen in training (otherwise it encodes to all zeros).
    pub fn is_known_category(&self, category: &str) -> bool {
        self.categories
            .binary_search_by(|c| c.as_str().cmp(category))
            .is_ok()
    }

    /// Encodes one record into a new row.
    pub fn encode(&self, f: &Features) -> Result<Vec<f64>, EncodeError> {
        let mut row = vec![0.0; self.width()];
        self.encode_into(f, &mut row)?;
        Ok(row)
    }

    /// Encodes one record into `row` (of length [`Self::width`]), for building a
    /// training matrix without an allocation per row.
    ///
    /// # Panics
    /// If `row.len() != self.width()` (a programming error, not a data error).
    pub fn encode_into(&self, f: &Features, row: &mut [f64]) -> Result<(), EncodeError> {
        assert_eq!(row.len(), self.width(), "row length must equal width()");
        check_finite(f)?;
        let n = self.numeric.len();
        for (i, (x, s)) in f.numerics().into_iter().zip(&self.numeric).enumerate() {
            let z = (x - s.mean) / s.std;
            if !z.is_finite() {
                // e.g. scd_a = 1e308 with a std below 1: too large to score.
                return Err(EncodeError::OutOfRange {
                    field: NUMERIC_FEATURES[i],
                    value: x,
                });
            }
            row[i] = z;
        }
        for v in &mut row[n..] {
            *v = 0.0;
        }
        if let Ok(k) = self
            .categories
            .binary_search_by(|c| c.as_str().cmp(f.attr_b.as_str()))
        {
            row[n + k] = 1.0;
        }
        Ok(())
    }
}

fn check_finite(f: &Features) -> Result<(), EncodeError> {
    if !f.scd_a.is_finite() {
        return Err(EncodeError::NonFinite {
            field: "scd_a",
            value: f.scd_a,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::tests::rec;

    #[test]
    fn fit_and_encode() {
        let data = [
            rec(1, "c", 0.0, 2),
            rec(3, "a", 2.0, 2),
            rec(1, "c", 4.0, 2),
            rec(3, "b", 6.0, 2),
        ];
        let enc = FeatureEncoding::fit(&data).unwrap();
        assert_eq!(enc.categories, ["a", "b", "c"]);
        assert_eq!(enc.numeric[0].mean, 2.0);
        assert_eq!(enc.numeric[0].std, 1.0);
        assert_eq!(enc.numeric[1].mean, 3.0);
        assert!((enc.numeric[1].std - 5.0f64.sqrt()).abs() < 1e-12);
        // constant column: std stored as 1
        assert_eq!(enc.numeric[2].std, 1.0);
        assert_eq!(
            enc.feature_names(),
            [
                "attr_a", "scd_a", "scd_b", "attr_b=a", "attr_b=b", "attr_b=c"
            ]
        );
        let row = enc.encode(&rec(3, "b", 3.0, 4)).unwrap();
        assert_eq!(row, vec![1.0, 0.0, 2.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn unseen_category_is_all_zeros() {
        let enc = FeatureEncoding::fit(&[rec(1, "a", 0.0, 1), rec(2, "b", 1.0, 2)]).unwrap();
        assert!(!enc.is_known_category("e"));
        assert!(enc.is_known_category("a"));
        let row = enc.encode(&rec(1, "e", 0.0, 1)).unwrap();
        assert_eq!(&row[3..], &[0.0, 0.0]);
        assert_eq!(row.len(), enc.width());
    }

    #[test]
    fn non_finite_is_refused_with_field_name() {
        let enc = FeatureEncoding::fit(&[rec(1, "a", 0.0, 1)]).unwrap();
        let err = enc.encode(&rec(1, "a", f64::NAN, 1)).unwrap_err();
        assert!(err.to_string().contains("scd_a"), "{err}");
        assert!(FeatureEncoding::fit(&[rec(1, "a", f64::INFINITY, 1)]).is_err());
        let tiny = FeatureEncoding::fit(&[rec(1, "a", 0.0, 1), rec(1, "a", 0.001, 1)]).unwrap();
        let err = tiny.encode(&rec(1, "a", f64::MAX, 1)).unwrap_err();
        assert!(
            matches!(err, EncodeError::OutOfRange { field: "scd_a", .. }),
            "{err}"
        );
        assert_eq!(
            FeatureEncoding::fit(std::iter::empty()),
            Err(EncodeError::Empty)
        );
    }

    #[test]
    fn validate_refuses_bad_encodings() {
        let mut enc = FeatureEncoding::fit(&[rec(1, "a", 0.0, 1), rec(2, "b", 1.0, 2)]).unwrap();
        enc.categories.reverse();
        assert!(enc.validate().is_err());
        enc.categories.reverse();
        enc.numeric[1].std = 0.0;
        assert!(enc.validate().is_err());
    }
}
