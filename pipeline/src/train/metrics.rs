//! Evaluation figures for a binary classifier: ranking (ROC AUC, PR AUC), calibration
//! (log loss) and the figures at a decision threshold (confusion matrix, accuracy,
//! precision, recall, F1). Pure functions over `(score, label)` pairs.

use serde::Serialize;

/// Probabilities are clamped to `[EPS, 1 - EPS]` for the log loss.
const EPS: f64 = 1e-15;

/// The confusion matrix at a threshold (`label = 1` when `score >= threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    pub fn at(scores: &[f64], labels: &[u8], threshold: f64) -> Confusion {
        let mut c = Confusion {
            tp: 0,
            fp: 0,
            tn: 0,
            fn_: 0,
        };
        for (&s, &y) in scores.iter().zip(labels) {
            match (s >= threshold, y == 1) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    fn ratio(a: u64, b: u64) -> f64 {
        if b == 0 { 0.0 } else { a as f64 / b as f64 }
    }

    pub fn accuracy(&self) -> f64 {
        Self::ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }

    /// 0 when nothing is predicted positive (the convention for an undefined value).
    pub fn precision(&self) -> f64 {
        Self::ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        Self::ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// Every figure for one scorer on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub rows: u64,
    pub positives: u64,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub log_loss: f64,
    pub threshold: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub confusion: Confusion,
}

impl Evaluation {
    pub fn new(scores: &[f64], labels: &[u8], threshold: f64) -> Evaluation {
        let c = Confusion::at(scores, labels, threshold);
        Evaluation {
            rows: scores.len() as u64,
            positives: labels.iter().filter(|&&y| y == 1).count() as u64,
            roc_auc: roc_auc(scores, labels),
            pr_auc: average_precision(scores, labels),
            log_loss: log_loss(scores, labels),
            threshold,
            accuracy: c.accuracy(),
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            confusion: c,
        }
    }

    /// As a JSON object, for the artifact's metrics.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Indices sorted by descending score (NaN last).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// ROC AUC as the Mann-Whitney statistic, ties counted half. 0.5 when one class is
/// absent (undefined).
pub fn roc_auc(scores: &[f64], labels: &[u8]) -> f64 {
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' average ranks (1-based), ties sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let p = order[i..=j].iter().filter(|&&k| labels[k] == 1).count() as f64;
        rank_sum += avg_rank * p;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// One point of a curve per distinct threshold, from the highest score down:
/// `(threshold, tp, fp)` cumulative counts.
fn cumulative(scores: &[f64], labels: &[u8]) -> Vec<(f64, u64, u64)> {
    let order = order_desc(scores);
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < order.len() {
        let t = scores[order[i]];
        while i < order.len() && scores[order[i]] == t {
            if labels[order[i]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push((t, tp, fp));
    }
    out
}

/// PR AUC as average precision: `Σ (R_k - R_{k-1}) P_k` over distinct thresholds (the
/// step-wise area, as scikit-learn's `average_precision_score`).
pub fn average_precision(scores: &[f64], labels: &[u8]) -> f64 {
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    if pos == 0.0 {
        return 0.0;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (_, tp, fp) in cumulative(scores, labels) {
        let recall = tp as f64 / pos;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

/// Mean negative log-likelihood, probabilities clamped to `[1e-15, 1 - 1e-15]`.
pub fn log_loss(scores: &[f64], labels: &[u8]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let sum: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(EPS, 1.0 - EPS);
            if y == 1 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    sum / scores.len() as f64
}

/// ROC curve points `(fpr, tpr)` from `(0, 0)` to `(1, 1)`.
pub fn roc_curve(scores: &[f64], labels: &[u8]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&y| y == 1).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let mut pts = vec![(0.0, 0.0)];
    pts.extend(
        cumulative(scores, labels)
            .into_iter()
            .map(|(_, tp, fp)| (fp as f64 / neg, tp as f64 / pos)),
    );
    pts
}

/// PR curve points `(recall, precision)`, from the highest threshold down.
pub fn pr_curve(scores: &[f64], labels: &[u8]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&y| y == 1).count().max(1) as f64;
    cumulative(scores, labels)
        .into_iter()
        .map(|(_, tp, fp)| (tp as f64 / pos, tp as f64 / (tp + fp) as f64))
        .collect()
}

/// The threshold that maximises F1 on `(scores, labels)`: one of the scores (label 1
/// when `score >= threshold`). Returns `(threshold, f1)`; 0.5 when there is no positive.
pub fn best_f1_threshold(scores: &[f64], labels: &[u8]) -> (f64, f64) {
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    if pos == 0.0 {
        return (0.5, 0.0);
    }
    let mut best = (0.5, -1.0);
    for (t, tp, fp) in cumulative(scores, labels) {
        let tp = tp as f64;
        let f1 = 2.0 * tp / (tp + fp as f64 + pos);
        if f1 > best.1 {
            best = (t, f1);
        }
    }
    (best.0.clamp(0.0, 1.0), best.1.max(0.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_and_reversed_scores() {
        let s = [0.1, 0.2, 0.8, 0.9];
        let l = [0, 0, 1, 1];
        assert!((roc_auc(&s, &l) - 1.0).abs() < 1e-12);
        let r = [1, 1, 0, 0];
        assert!(roc_auc(&s, &r).abs() < 1e-12);
        assert!((roc_auc(&[0.5; 4], &l) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_by_hand() {
        // positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 3 of 4.
        let s = [0.9, 0.5, 0.4, 0.1];
        let y = [1, 0, 1, 0];
        assert!((roc_auc(&s, &y) - 0.75).abs() < 1e-12);
        // ties count half
        assert!((roc_auc(&[0.5, 0.5], &[1, 0]) - 0.5).abs() < 1e-12);
        assert_eq!(roc_auc(&[1.0, 0.0], &[1, 0]), 1.0);
        // AP: ranks 1 (P=1, R=.5), 3 (P=2/3, R=1) -> 0.5 + 0.5*2/3
        assert!((average_precision(&s, &y) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
    }

    #[test]
    fn threshold_and_confusion() {
        let s = [0.9, 0.5, 0.4, 0.1];
        let y = [1, 0, 1, 0];
        let (t, f1) = best_f1_threshold(&s, &y);
        // at 0.4: tp 2 fp 1 -> F1 0.8; at 0.9: tp 1 -> 2/3
        assert_eq!(t, 0.4);
        assert!((f1 - 0.8).abs() < 1e-12);
        let c = Confusion::at(&s, &y, t);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 0));
        assert!((c.f1() - 0.8).abs() < 1e-12);
        let e = Evaluation::new(&s, &y, t);
        assert_eq!(e.to_json()["confusion"]["fn"], 0);
        let ll = log_loss(&[0.5, 0.5], &[1, 0]);
        assert!((ll - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
