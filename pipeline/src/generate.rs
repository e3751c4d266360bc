//! A synthetic dataset in exactly the real files' formats, deterministic for a seed.
//!
//! - `customer_profiles.csv`, `labels.csv`: one row per customer, `idx` 0..N;
//! - `customer_activity.csv`: 1 to 4 type-2 versions per customer, contiguous
//!   half-open periods `[valid_from, valid_to)`, the last one current (`valid_to` empty);
//! - `stores.csv`: the 5 stores; `sales/YYYY-MM-01/sales.csv` for `months` months from
//!   2020-01, about 400 sales each.
//!
//! The label is drawn from `p = sigmoid(b0 + 4·(scd_a − 0.5) + 0.35·(scd_b − 5) +
//! 0.05·(attr_a − 3))` over the customer's *current* activity row, with `b0` solved so
//! that the mean of `p` is 9 %. Scoring customers with the true `p` is the best any
//! model can do; its AUC on the drawn labels is printed as the optimum AUC.
//!
//! The random generator is a SplitMix64 written here, so a seed gives the same files
//! whatever version of `rand` the workspace resolves.

use std::fmt::Write as _;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use model::classifier::sigmoid;

use crate::etl::{EtlError, Month, Source};
use crate::train::metrics::roc_auc;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub customers: u64,
    pub months: u32,
    pub seed: u64,
    pub first_month: Month,
    /// Target share of positive labels.
    pub positive_rate: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            customers: 150_000,
            months: 36,
            seed: 42,
            first_month: Month::new(2020, 1).expect("valid month"),
            positive_rate: 0.09,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Serialize)]
pub struct GenReport {
    pub customers: u64,
    pub activity_rows: u64,
    pub positives: u64,
    pub positive_rate: f64,
    /// AUC of the true probabilities against the drawn labels: the ceiling for a model.
    pub optimum_auc: f64,
    /// Expected AUC of the true probabilities (over label draws).
    pub expected_auc: f64,
    pub sales_files: u32,
    pub sales_rows: u64,
    pub intercept: f64,
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

pub const STORES: [&str; 5] = ["New York", "Lisbon", "London", "Berlin", "Paris"];

/// The label's log-odds without intercept, from the current activity row and profile.
pub fn signal(scd_a: f64, scd_b: i64, attr_a: i64) -> f64 {
    4.0 * (scd_a - 0.5) + 0.35 * (scd_b as f64 - 5.0) + 0.05 * (attr_a as f64 - 3.0)
}

/// Expected AUC of scoring by `p` when labels are drawn as Bernoulli(`p`):
/// P(p_pos > p_neg) over independent positive/negative draws, in O(n log n).
fn expected_auc(p: &[f64]) -> f64 {
    let mut v: Vec<f64> = p.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    // Sum over pairs i<j (sorted ascending) of p_j (1 - p_i), ties half.
    let mut neg_mass_below = 0.0;
    let mut num = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[i] {
            j += 1;
        }
        let group_pos: f64 = v[i..=j].iter().sum();
        let group_neg: f64 = v[i..=j].iter().map(|x| 1.0 - x).sum();
        num += group_pos * neg_mass_below + 0.5 * group_pos * group_neg;
        neg_mass_below += group_neg;
        i = j + 1;
    }
    let pos: f64 = v.iter().sum();
    let neg: f64 = v.len() as f64 - pos;
    // Remove self-pairs' half contribution approximately ignored: negligible for large n.
    num / (pos * neg)
}

/// Generates the dataset into `out` (a directory or an S3 prefix).
pub async fn generate(out: &Source, opts: &GenOptions) -> Result<GenReport, EtlError> {
    let mut rng = Rng::new(opts.seed);
    let n = opts.customers;
    let mut profiles = String::with_capacity(n as usize * 14 + 32);
    let mut activity = String::with_capacity(n as usize * 100 + 40);
    profiles.push_str("idx,attr_a,attr_b,attr_c\n");
    activity.push_str("idx,valid_from,valid_to,scd_a,scd_b\n");
    let base = NaiveDate::from_ymd_opt(2018, 1, 1).expect("valid date");
    let mut signals = Vec::with_capacity(n as usize);
    let mut activity_rows = 0u64;
    for idx in 0..n {
        let attr_a = 1 + rng.below(5) as i64;
        let attr_b = ["a", "b", "c", "d"][rng.below(4) as usize];
        let attr_c = if rng.below(2) == 0 { "yes" } else { "no" };
        let _ = writeln!(profiles, "{idx},{attr_a},{attr_b},{attr_c}");
        let versions = 1 + rng.below(4);
        let mut from = base + Duration::days(rng.below(730) as i64);
        let mut current = (0.0, 0);
        for v in 0..versions {
            let scd_a = ((0.5 + 0.2 * rng.normal()).clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0;
            let scd_b = rng.below(11) as i64;
            activity_rows += 1;
            if v + 1 == versions {
                let _ = writeln!(activity, "{idx},{from},,{scd_a},{scd_b}");
                current = (scd_a, scd_b);
            } else {
                let to = from + Duration::days(30 + rng.below(370) as i64);
                let _ = writeln!(activity, "{idx},{from},{to},{scd_a},{scd_b}");
                from = to;
            }
        }
        signals.push(signal(current.0, current.1, attr_a));
    }

    // Intercept such that the mean probability is the target rate (bisection).
    let (mut lo, mut hi) = (-20.0f64, 20.0f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        let mean = signals.iter().map(|s| sigmoid(mid + s)).sum::<f64>() / n.max(1) as f64;
        if mean < opts.positive_rate {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let b0 = (lo + hi) / 2.0;
    let p: Vec<f64> = signals.iter().map(|s| sigmoid(b0 + s)).collect();
    let mut labels_csv = String::with_capacity(n as usize * 9 + 16);
    labels_csv.push_str("idx,label\n");
    let mut labels = Vec::with_capacity(n as usize);
    for (idx, pi) in p.iter().enumerate() {
        let l = u8::from(rng.f64() < *pi);
        labels.push(l);
        let _ = writeln!(labels_csv, "{idx},{l}");
    }
    let positives = labels.iter().filter(|&&l| l == 1).count() as u64;

    out.put("customer_profiles.csv", profiles.into_bytes())
        .await?;
    out.put("customer_activity.csv", activity.into_bytes())
        .await?;
    out.put("labels.csv", labels_csv.into_bytes()).await?;
    let mut stores = String::from("idx,location\n");
    for (i, s) in STORES.iter().enumerate() {
        let _ = writeln!(stores, "{},{s}", i + 1);
    }
    out.put("stores.csv", stores.into_bytes()).await?;

    let mut sales_rows = 0u64;
    let mut month = opts.first_month;
    for _ in 0..opts.months {
        let rows = 380 + rng.below(60);
        let days = month.days() as u64;
        let mut csv = String::from("idx,value,date,store_idx\n");
        let mut idx = rng.below(30);
        for _ in 0..rows {
            let value = rng.below(101) as f64 / 10.0;
            let date = month.first_day() + Duration::days(rng.below(days) as i64);
            let store = 1 + rng.below(STORES.len() as u64);
            let _ = writeln!(csv, "{idx},{value:.1},{date},{store}");
            idx += 1 + rng.below(2);
        }
        sales_rows += rows;
        out.put(&month.sales_file(), csv.into_bytes()).await?;
        month = month.next();
    }

    Ok(GenReport {
        customers: n,
        activity_rows,
        positives,
        positive_rate: positives as f64 / n.max(1) as f64,
        optimum_auc: roc_auc(&p, &labels),
        expected_auc: expected_auc(&p),
        sales_files: opts.months,
        sales_rows,
        intercept: b0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mean = (0..10_000).map(|_| a.normal()).sum::<f64>() / 10_000.0;
        assert!(mean.abs() < 0.05);
    }
}
