//! The two model families, fitted with linfa and exported into the `model` crate's
//! parameter format (so serving never links linfa).
//!
//! * Logistic regression: `linfa-logistic` (L-BFGS, L2 penalty), weights copied over.
//! * Bagged decision trees: `linfa-trees` CART trees fitted on bootstrap samples of the
//!   training split. linfa's leaves hold a class, not a probability, so each exported
//!   leaf's value is the smoothed share of positives among the training rows that reach
//!   it; the ensemble averages the trees' probabilities
//!   ([`Aggregation::MeanProbability`]).

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use model::classifier::{Aggregation, Classifier, Logistic, Node, Tree, TreeEnsemble};
use ndarray::{Array1, Array2, ArrayView2, Axis, ShapeBuilder as _};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use super::TrainError;

/// Hyper-parameters, fixed: the data is small and the validation split picks the family.
pub const LOGISTIC_ALPHA: f64 = 1.0;
pub const LOGISTIC_MAX_ITERATIONS: u64 = 200;
/// L-BFGS stops when the L2 norm of the gradient of the *summed* objective
/// (`sum of log losses + alpha/2 |w|^2`) falls below this (linfa's default).
pub const LOGISTIC_GRADIENT_TOLERANCE: f64 = 1e-4;
pub const TREES: usize = 16;
/// Rows per bootstrap sample, at most (linfa-trees' fit cost grows with rows).
pub const BOOTSTRAP_MAX: usize = 10_000;
/// Threads fitting trees (the machines are small).
pub const FIT_THREADS: usize = 2;
pub const TREE_MAX_DEPTH: usize = 6;
pub const TREE_MIN_LEAF: f32 = 40.0;

fn fit_err(family: &'static str) -> impl FnOnce(String) -> TrainError {
    move |reason| TrainError::Fit { family, reason }
}

/// Logistic regression on `x` (encoded rows) and `y` (0/1).
pub fn logistic(x: ArrayView2<'_, f64>, y: &[u8]) -> Result<Classifier, TrainError> {
    // Three things that change the path to the optimum, not the optimum (the intercept
    // is not penalised): a column-major copy, so the gradient's `x.t().dot(..)` walks
    // contiguous memory; centred columns, which make the problem better conditioned
    // for L-BFGS (the one-hot columns are far from mean zero); and a start at the
    // intercept-only solution, the log-odds of linfa's "positive" class (the majority
    // label). Measured by bench/train: the fit takes ~0.6x the iterations and time.
    let n = x.nrows();
    let mu = x
        .mean_axis(Axis(0))
        .unwrap_or_else(|| Array1::zeros(x.ncols()));
    let mut xf = Array2::<f64>::zeros((x.nrows(), x.ncols()).f());
    xf.assign(&x);
    xf -= &mu;
    let ones = y.iter().filter(|&&v| v == 1).count();
    let majority = ones.max(n - ones) as f64 / n.max(1) as f64;
    let majority = majority.clamp(1e-6, 1.0 - 1e-6);
    let mut init = Array1::<f64>::zeros(x.ncols() + 1);
    init[x.ncols()] = (majority / (1.0 - majority)).ln();
    let ds = Dataset::new(xf, Array1::from(y.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(LOGISTIC_ALPHA)
        .max_iterations(LOGISTIC_MAX_ITERATIONS)
        .gradient_tolerance(LOGISTIC_GRADIENT_TOLERANCE)
        .initial_params(init)
        .fit(&ds)
        .map_err(|e| fit_err("logistic_regression")(e.to_string()))?;
    // Back to uncentred inputs: w.(x - mu) + b = w.x + (b - w.mu).
    let shift: f64 = fitted
        .params()
        .iter()
        .zip(mu.iter())
        .map(|(w, m)| w * m)
        .sum();
    // linfa's "positive" class is the *more frequent* label (0 with ~9% positives),
    // and its parameters are the log-odds of that class: flip them to P(label = 1).
    let sign = if fitted.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    let c = Classifier::LogisticRegression(Logistic {
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * (fitted.intercept() - shift),
    });
    c.validate(x.ncols())
        .map_err(|e| fit_err("logistic_regression")(e.to_string()))?;
    Ok(c)
}

/// Bagged decision trees. Tree `t`'s bootstrap sample comes from its own generator,
/// seeded from `seed` and `t`, so the result does not depend on how many threads fit
/// them ([`FIT_THREADS`]).
pub fn bagged_trees(x: ArrayView2<'_, f64>, y: &[u8], seed: u64) -> Result<Classifier, TrainError> {
    let n = x.nrows();
    if n == 0 {
        return Err(fit_err("tree_ensemble")("no training rows".into()));
    }
    let prior = y.iter().filter(|&&v| v == 1).count() as f64 / n as f64;
    let fit_one = |t: usize| -> Result<Tree, TrainError> {
        let mut rng = StdRng::seed_from_u64(
            seed ^ 0x7265_6573 ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let m = n.min(BOOTSTRAP_MAX);
        let sample: Vec<usize> = (0..m).map(|_| rng.random_range(0..n)).collect();
        let xs: Array2<f64> = x.select(Axis(0), &sample);
        let ys: Array1<usize> = sample.iter().map(|&i| usize::from(y[i])).collect();
        let fitted = DecisionTree::<f64, usize>::params()
            .split_quality(SplitQuality::Gini)
            .max_depth(Some(TREE_MAX_DEPTH))
            .min_weight_leaf(TREE_MIN_LEAF)
            .min_weight_split(2.0 * TREE_MIN_LEAF)
            .fit(&Dataset::new(xs, ys))
            .map_err(|e| fit_err("tree_ensemble")(e.to_string()))?;
        let mut nodes = Vec::new();
        export(fitted.root_node(), &mut nodes);
        leaf_probabilities(&mut nodes, x, y, &sample, prior);
        Ok(Tree { nodes })
    };
    let results: Vec<Result<Tree, TrainError>> = std::thread::scope(|s| {
        let fit_one = &fit_one;
        let handles: Vec<_> = (0..FIT_THREADS)
            .map(|w| {
                s.spawn(move || {
                    (w..TREES)
                        .step_by(FIT_THREADS)
                        .map(|t| (t, fit_one(t)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, Result<Tree, TrainError>)> = Vec::new();
        for h in handles {
            match h.join() {
                Ok(v) => all.extend(v),
                Err(_) => all.push((
                    usize::MAX,
                    Err(fit_err("tree_ensemble")("a fitting thread panicked".into())),
                )),
            }
        }
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, r)| r).collect()
    });
    let trees = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let c = Classifier::TreeEnsemble(TreeEnsemble {
        aggregation: Aggregation::MeanProbability,
        base_score: 0.0,
        trees,
    });
    c.validate(x.ncols())
        .map_err(|e| fit_err("tree_ensemble")(e.to_string()))?;
    Ok(c)
}

/// Pre-order export: a node's children always come after it, as `model` requires.
/// Leaf values are placeholders until [`leaf_probabilities`].
fn export(node: &TreeNode<f64, usize>, out: &mut Vec<Node>) -> usize {
    let me = out.len();
    let children = node.children();
    match (node.is_leaf(), children[0], children[1]) {
        (false, Some(l), Some(r)) => {
            let (feature, threshold, _) = node.split();
            out.push(Node::Leaf { value: 0.0 });
            let left = export(l, out);
            let right = export(r, out);
            out[me] = Node::Split {
                feature,
                threshold,
                left,
                right,
            };
        }
        _ => out.push(Node::Leaf { value: 0.0 }),
    }
    me
}

/// Sets every leaf to the share of positives among the in-bag rows reaching it,
/// smoothed towards the prior with a pseudo-count of 1 (a leaf no row reaches gets the
/// prior).
fn leaf_probabilities(
    nodes: &mut [Node],
    x: ArrayView2<'_, f64>,
    y: &[u8],
    sample: &[usize],
    prior: f64,
) {
    let tree = Tree {
        nodes: nodes.to_vec(),
    };
    let mut pos = vec![0.0f64; nodes.len()];
    let mut cnt = vec![0.0f64; nodes.len()];
    let mut row = vec![0.0; x.ncols()];
    for &i in sample {
        for (r, v) in row.iter_mut().zip(x.row(i)) {
            *r = *v;
        }
        let leaf = leaf_index(&tree, &row);
        cnt[leaf] += 1.0;
        pos[leaf] += f64::from(y[i]);
    }
    for (k, node) in nodes.iter_mut().enumerate() {
        if let Node::Leaf { value } = node {
            *value = ((pos[k] + prior) / (cnt[k] + 1.0)).clamp(0.0, 1.0);
        }
    }
}

fn leaf_index(tree: &Tree, row: &[f64]) -> usize {
    let mut i = 0;
    while let Node::Split {
        feature,
        threshold,
        left,
        right,
    } = &tree.nodes[i]
    {
        i = if row[*feature] <= *threshold {
            *left
        } else {
            *right
        };
    }
    i
}
