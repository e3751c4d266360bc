//! Classifier scoring from parameters alone (no training crates).
//!
//! Two families, chosen by training and stored in the artifact's `model.json`:
//!
//! * [`Classifier::LogisticRegression`]: `p = sigmoid(intercept + w · row)`.
//! * [`Classifier::TreeEnsemble`]: binary trees stored as node arrays. A split sends a row
//!   left when `row[feature] <= threshold` (as linfa-trees fits them), right otherwise.
//!   With [`Aggregation::MeanProbability`] (a random forest / bagged trees) each leaf
//!   holds P(label = 1) and the ensemble averages them; with [`Aggregation::SumLogit`]
//!   (gradient boosting) leaves hold log-odds contributions, and
//!   `p = sigmoid(base_score + Σ leaf)`.
//!
//! [`Classifier::validate`] checks parameters against the row width before any scoring:
//! lengths match, values are finite, child indices point *forward* in the node array
//! (so walking a tree always terminates) and in range.

use serde::{Deserialize, Serialize};

/// The model family, as named in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    LogisticRegression,
    TreeEnsemble,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::LogisticRegression => "logistic_regression",
            Family::TreeEnsemble => "tree_ensemble",
        })
    }
}

/// Logistic regression parameters: one weight per row column, plus the intercept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub intercept: f64,
}

/// One node of a tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Go to `left` when `row[feature] <= threshold`, else to `right` (indices into the
    /// tree's node array, both greater than this node's own index).
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    /// A leaf: a probability (mean aggregation) or a log-odds contribution (sum).
    Leaf { value: f64 },
}

/// One tree; node 0 is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// How an ensemble combines its trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Leaves hold probabilities; the ensemble's probability is their mean.
    MeanProbability,
    /// Leaves hold log-odds; `p = sigmoid(base_score + sum)`.
    SumLogit,
}

/// A tree ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeEnsemble {
    pub aggregation: Aggregation,
    /// Only used by [`Aggregation::SumLogit`]; 0 otherwise.
    #[serde(default)]
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

/// The classifier's parameters (the content of `model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Classifier {
    LogisticRegression(Logistic),
    TreeEnsemble(TreeEnsemble),
}

/// Parameters that cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    #[error("logistic regression has {got} weights but rows have {want} columns")]
    WeightCount { got: usize, want: usize },
    #[error("{what} is not finite")]
    NonFinite { what: String },
    #[error("tree ensemble has no trees")]
    NoTrees,
    #[error("tree {tree}: {problem}")]
    BadTree { tree: usize, problem: String },
}

/// The sigmoid, written to stay finite-precision safe for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Classifier {
    pub fn family(&self) -> Family {
        match self {
            Classifier::LogisticRegression(_) => Family::LogisticRegression,
            Classifier::TreeEnsemble(_) => Family::TreeEnsemble,
        }
    }

    /// Checks the parameters against the row width (see the module docs).
    pub fn validate(&self, width: usize) -> Result<(), ParamsError> {
        match self {
            Classifier::LogisticRegression(m) => {
                if m.weights.len() != width {
                    return Err(ParamsError::WeightCount {
                        got: m.weights.len(),
                        want: width,
                    });
                }
                if !m.intercept.is_finite() {
                    return Err(ParamsError::NonFinite {
                        what: "intercept".into(),
                    });
                }
                if let Some(i) = m.weights.iter().position(|w| !w.is_finite()) {
                    return Err(ParamsError::NonFinite {
                        what: format!("weight {i}"),
                    });
                }
                Ok(())
            }
            Classifier::TreeEnsemble(e) => {
                if e.trees.is_empty() {
                    return Err(ParamsError::NoTrees);
                }
                if !e.base_score.is_finite() {
                    return Err(ParamsError::NonFinite {
                        what: "base_score".into(),
                    });
                }
                for (t, tree) in e.trees.iter().enumerate() {
                    validate_tree(tree, width, e.aggregation)
                        .map_err(|problem| ParamsError::BadTree { tree: t, problem })?;
                }
                Ok(())
            }
        }
    }

    /// P(label = 1) for an encoded row. Call [`Self::validate`] first (the artifact
    /// loader does); on unvalidated parameters a short row panics on indexing.
    pub fn predict_proba(&self, row: &[f64]) -> f64 {
        match self {
            Classifier::LogisticRegression(m) => {
                let z = m.intercept + m.weights.iter().zip(row).map(|(w, x)| w * x).sum::<f64>();
                sigmoid(z)
            }
            Classifier::TreeEnsemble(e) => {
                let sum: f64 = e.trees.iter().map(|t| t.leaf_value(row)).sum();
                match e.aggregation {
                    Aggregation::MeanProbability => (sum / e.trees.len() as f64).clamp(0.0, 1.0),
                    Aggregation::SumLogit => sigmoid(e.base_score + sum),
                }
            }
        }
    }
}

impl Tree {
    /// The value of the leaf that `row` reaches.
    pub(crate) fn leaf_value(&self, row: &[f64]) -> f64 {
        let mut i = 0;
        loop {
            i = match &self.nodes[i] {
                Node::Leaf { value } => return *value,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    ..
                } if row[*feature] <= *threshold => *left,
                Node::Split { right, .. } => *right,
            };
        }
    }
}

fn validate_tree(tree: &Tree, width: usize, agg: Aggregation) -> Result<(), String> {
    if tree.nodes.is_empty() {
        return Err("has no nodes".into());
    }
    let n = tree.nodes.len();
    for (i, node) in tree.nodes.iter().enumerate() {
        match node {
            Node::Leaf { value } => {
                if !value.is_finite() {
                    return Err(format!("node {i}: leaf value is not finite"));
                }
                if agg == Aggregation::MeanProbability && !(0.0..=1.0).contains(value) {
                    return Err(format!(
                        "node {i}: leaf value {value} is not a probability in [0, 1]"
                    ));
                }
            }
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                if *feature >= width {
                    return Err(format!(
                        "node {i}: feature {feature} is out of range (rows have {width} columns)"
                    ));
                }
                if threshold.is_nan() {
                    return Err(format!("node {i}: threshold is NaN"));
                }
                for c in [left, right] {
                    if *c <= i || *c >= n {
                        return Err(format!(
                            "node {i}: child {c} must be after the node and below {n}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logistic_matches_hand_computation() {
        let c = Classifier::LogisticRegression(Logistic {
            weights: vec![0.5, -1.0, 2.0],
            intercept: -0.25,
        });
        c.validate(3).unwrap();
        // z = -0.25 + 0.5*1 - 1*2 + 2*0.5 = -0.75
        let p = c.predict_proba(&[1.0, 2.0, 0.5]);
        let want = 1.0 / (1.0 + 0.75f64.exp());
        assert!((p - want).abs() < 1e-15, "{p} vs {want}");
        assert!(c.validate(4).is_err());
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-300);
        assert_eq!(sigmoid(1000.0), 1.0);
    }

    fn stump(feature: usize, threshold: f64, l: f64, r: f64) -> Tree {
        Tree {
            nodes: vec![
                Node::Split {
                    feature,
                    threshold,
                    left: 1,
                    right: 2,
                },
                Node::Leaf { value: l },
                Node::Leaf { value: r },
            ],
        }
    }

    #[test]
    fn tree_ensemble_scores() {
        let mean = Classifier::TreeEnsemble(TreeEnsemble {
            aggregation: Aggregation::MeanProbability,
            base_score: 0.0,
            trees: vec![stump(0, 0.5, 0.1, 0.9), stump(1, 0.0, 0.2, 0.6)],
        });
        mean.validate(2).unwrap();
        // row [0.5, 1.0]: tree0 left (0.5 <= 0.5) -> 0.1, tree1 right -> 0.6
        assert!((mean.predict_proba(&[0.5, 1.0]) - 0.35).abs() < 1e-15);

        let boost = Classifier::TreeEnsemble(TreeEnsemble {
            aggregation: Aggregation::SumLogit,
            base_score: -1.0,
            trees: vec![stump(0, 0.0, -0.5, 0.5), stump(1, 0.0, -0.25, 0.25)],
        });
        boost.validate(2).unwrap();
        let p = boost.predict_proba(&[1.0, -1.0]); // -1 + 0.5 - 0.25
        assert!((p - sigmoid(-0.75)).abs() < 1e-15);
    }

    #[test]
    fn bad_trees_are_refused() {
        let cyclic = Tree {
            nodes: vec![
                Node::Split {
                    feature: 0,
                    threshold: 0.0,
                    left: 0,
                    right: 1,
                },
                Node::Leaf { value: 0.5 },
            ],
        };
        let e = |t: Tree| {
            Classifier::TreeEnsemble(TreeEnsemble {
                aggregation: Aggregation::MeanProbability,
                base_score: 0.0,
                trees: vec![t],
            })
        };
        assert!(matches!(
            e(cyclic).validate(1),
            Err(ParamsError::BadTree { tree: 0, .. })
        ));
        assert!(e(stump(5, 0.0, 0.1, 0.2)).validate(2).is_err());
        assert!(e(stump(0, 0.0, 0.1, 1.5)).validate(2).is_err());
        assert!(e(Tree { nodes: vec![] }).validate(2).is_err());
    }

    #[test]
    fn serde_shape_is_tagged_by_family() {
        let c = Classifier::LogisticRegression(Logistic {
            weights: vec![1.0],
            intercept: 0.0,
        });
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["family"], "logistic_regression");
        let t = Classifier::TreeEnsemble(TreeEnsemble {
            aggregation: Aggregation::SumLogit,
            base_score: 0.0,
            trees: vec![stump(0, 0.0, 0.0, 1.0)],
        });
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["family"], "tree_ensemble");
        assert_eq!(v["trees"][0]["nodes"][1]["leaf"]["value"], 0.0);
        let back: Classifier = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}
