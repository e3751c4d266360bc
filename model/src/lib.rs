//! The model shared by training (`pipeline`) and serving (`server`).
//!
//! * [`features`]: the input record ([`Features`]) and its encoding into a row
//!   ([`FeatureEncoding::encode`]): the one function both sides call.
//! * [`classifier`]: scoring from parameters alone ([`Classifier`]: logistic regression
//!   or a tree ensemble).
//! * [`artifact`]: the versioned, checksummed files a model is saved as and loaded from.
//! * [`location`]: where artifacts (and the pipeline's input files) live, a folder or
//!   `s3://BUCKET/PREFIX`, parsed once for training and serving.
//!
//! ```
//! use model::{Features, FeatureEncoding, Model, classifier::{Classifier, Logistic}};
//! let train = vec![Features { attr_a: 1, attr_b: "c".into(), scd_a: 0.5, scd_b: 3 },
//!                  Features { attr_a: 2, attr_b: "a".into(), scd_a: 0.1, scd_b: 1 }];
//! let encoding = FeatureEncoding::fit(&train).unwrap();
//! let weights = vec![0.0; encoding.width()];
//! let model = Model::new(encoding,
//!     Classifier::LogisticRegression(Logistic { weights, intercept: 0.0 }), 0.5).unwrap();
//! let p = model.predict(&train[0]).unwrap();
//! assert_eq!((p.probability, p.label), (0.5, 1));
//! ```
//!
//! No I/O crates: files are written with `std::fs`; remote stores live in the callers.

pub mod artifact;
pub mod classifier;
pub mod features;
pub mod location;
mod time;

pub use artifact::{Artifact, ArtifactError, ArtifactFiles, ArtifactSpec, Fingerprint, Manifest};
pub use classifier::{Classifier, Family, ParamsError};
pub use features::{EncodeError, FeatureEncoding, Features};
pub use location::{Location, LocationError, S3Error};

/// A model that can score: encoding + classifier + decision threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub encoding: FeatureEncoding,
    pub classifier: Classifier,
    /// `label = 1` when `probability >= threshold`.
    pub threshold: f64,
}

/// Why a model cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Encoding(#[from] EncodeError),
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("threshold {0} is not a probability in [0, 1]")]
    Threshold(f64),
}

/// One prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// P(label = 1).
    pub probability: f64,
    /// 0 or 1.
    pub label: u8,
}

impl Model {
    /// Builds and validates a model.
    pub fn new(
        encoding: FeatureEncoding,
        classifier: Classifier,
        threshold: f64,
    ) -> Result<Model, ModelError> {
        let m = Model {
            encoding,
            classifier,
            threshold,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks encoding, parameters against the row width, and the threshold.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.encoding.validate()?;
        self.classifier.validate(self.encoding.width())?;
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(ModelError::Threshold(self.threshold));
        }
        Ok(())
    }

    /// P(label = 1) for an already encoded row (what training evaluates on).
    pub fn predict_row(&self, row: &[f64]) -> f64 {
        self.classifier.predict_proba(row)
    }

    /// The label for a probability.
    pub fn label(&self, probability: f64) -> u8 {
        u8::from(probability >= self.threshold)
    }

    /// P(label = 1) for a record.
    pub fn predict_proba(&self, f: &Features) -> Result<f64, EncodeError> {
        let p = self.predict_row(&self.encoding.encode(f)?);
        if p.is_nan() {
            return Err(EncodeError::NotScorable);
        }
        Ok(p)
    }

    /// Probability and label for a record.
    pub fn predict(&self, f: &Features) -> Result<Prediction, EncodeError> {
        let probability = self.predict_proba(f)?;
        Ok(Prediction {
            probability,
            label: self.label(probability),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
