//! The evaluation picture, as hand-written SVG: ROC curve, precision-recall curve and the
//! score histogram by label, for the held-out test split. No plotting crate.

use std::fmt::Write as _;

use super::metrics::{self, Evaluation};
use crate::report::esc;

const PANEL: f64 = 300.0;
const MARGIN: f64 = 45.0;
const BINS: usize = 20;

/// At most this many points per curve (evenly thinned), to keep the file small.
const MAX_POINTS: usize = 400;

fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let step = points.len() as f64 / MAX_POINTS as f64;
    let mut out: Vec<(f64, f64)> = (0..MAX_POINTS)
        .map(|i| points[(i as f64 * step) as usize])
        .collect();
    if let Some(last) = points.last() {
        out.push(*last);
    }
    out
}

/// One panel's frame: axes box, ticks at 0, 0.5, 1 (x and y in `[0, 1]` unless `ymax`),
/// title and axis labels. Returns the mapping from data to pixel coordinates.
fn frame(
    out: &mut String,
    ox: f64,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    ymax: f64,
) -> impl Fn(f64, f64) -> (f64, f64) + use<> {
    let (x0, y0) = (ox + MARGIN, MARGIN);
    let _ = write!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL}" height="{PANEL}" fill="none" stroke="#444"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"##,
        x0 + PANEL / 2.0,
        y0 - 12.0,
        esc(title)
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"##,
        x0 + PANEL / 2.0,
        y0 + PANEL + 32.0,
        esc(xlabel)
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12" transform="rotate(-90 {} {})">{}</text>"##,
        x0 - 30.0,
        y0 + PANEL / 2.0,
        x0 - 30.0,
        y0 + PANEL / 2.0,
        esc(ylabel)
    );
    for t in [0.0, 0.5, 1.0] {
        let x = x0 + t * PANEL;
        let y = y0 + PANEL - t * PANEL;
        let _ = write!(
            out,
            r##"<text x="{x}" y="{}" text-anchor="middle" font-size="10">{t}</text><text x="{}" y="{}" text-anchor="end" font-size="10">{}</text>"##,
            y0 + PANEL + 14.0,
            x0 - 4.0,
            y + 3.0,
            fmt_tick(t * ymax)
        );
    }
    move |x: f64, y: f64| (x0 + x * PANEL, y0 + PANEL - (y / ymax) * PANEL)
}

fn fmt_tick(v: f64) -> String {
    if v == v.trunc() {
        format!("{v}")
    } else {
        format!("{v:.2}")
    }
}

fn polyline(
    out: &mut String,
    pts: &[(f64, f64)],
    map: &dyn Fn(f64, f64) -> (f64, f64),
    style: &str,
) {
    let mut d = String::new();
    for &(x, y) in pts {
        let (px, py) = map(x, y);
        let _ = write!(d, "{px:.1},{py:.1} ");
    }
    let _ = write!(
        out,
        r##"<polyline points="{}" fill="none" {style}/>"##,
        d.trim_end()
    );
}

/// A curve panel's chance line (grey, dashed) from one end to the other, and its curve
/// (thinned) in `color`.
fn curve(
    out: &mut String,
    map: &dyn Fn(f64, f64) -> (f64, f64),
    chance: [(f64, f64); 2],
    points: Vec<(f64, f64)>,
    color: &str,
) {
    polyline(
        out,
        &chance,
        map,
        r##"stroke="#999" stroke-dasharray="4 3""##,
    );
    polyline(
        out,
        &thin(points),
        map,
        &format!(r##"stroke="{color}" stroke-width="2""##),
    );
}

/// The picture for scores and labels of the test split, with the chosen model's name,
/// its evaluation and the baseline's.
pub fn evaluation_svg(
    title: &str,
    scores: &[f64],
    labels: &[u8],
    eval: &Evaluation,
    baseline: &Evaluation,
) -> String {
    let width = 3.0 * (PANEL + 2.0 * MARGIN);
    let height = PANEL + 2.0 * MARGIN + 40.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" font-size="12">{}</text>"##,
        width / 2.0,
        height - 8.0,
        esc(&format!(
            "{title}: test ROC AUC {:.4} (baseline {:.2}), PR AUC {:.4} (baseline {:.4}), F1 {:.3} at threshold {:.3}, {} rows",
            eval.roc_auc,
            baseline.roc_auc,
            eval.pr_auc,
            baseline.pr_auc,
            eval.f1,
            eval.threshold,
            eval.rows
        ))
    );

    // ROC.
    let map = frame(
        &mut out,
        0.0,
        "ROC curve",
        "false positive rate",
        "true positive rate",
        1.0,
    );
    curve(
        &mut out,
        &map,
        [(0.0, 0.0), (1.0, 1.0)],
        metrics::roc_curve(scores, labels),
        "#1f77b4",
    );

    // PR.
    let ox = PANEL + 2.0 * MARGIN;
    let map = frame(&mut out, ox, "Precision-recall", "recall", "precision", 1.0);
    let prevalence = baseline.pr_auc;
    curve(
        &mut out,
        &map,
        [(0.0, prevalence), (1.0, prevalence)],
        metrics::pr_curve(scores, labels),
        "#d62728",
    );

    // Histogram of scores by label, each label normalised to its own total.
    let ox = 2.0 * (PANEL + 2.0 * MARGIN);
    let mut counts = [[0u64; BINS]; 2];
    let mut totals = [0u64; 2];
    for (&s, &y) in scores.iter().zip(labels) {
        let b = ((s.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        let k = usize::from(y == 1);
        counts[k][b] += 1;
        totals[k] += 1;
    }
    let frac = |k: usize, b: usize| counts[k][b] as f64 / totals[k].max(1) as f64;
    let ymax = (0..BINS)
        .flat_map(|b| [frac(0, b), frac(1, b)])
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let map = frame(
        &mut out,
        ox,
        "Scores by label",
        "P(label = 1)",
        "share of label",
        ymax,
    );
    for (k, colour) in [(0, "#1f77b4"), (1, "#d62728")] {
        for b in 0..BINS {
            let (x, y) = map(b as f64 / BINS as f64, frac(k, b));
            let (x1, y_base) = map((b + 1) as f64 / BINS as f64, 0.0);
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.45"/>"##,
                x1 - x,
                y_base - y
            );
        }
    }
    let (lx, ly) = map(0.55, ymax * 0.95);
    let _ = write!(
        out,
        r##"<text x="{lx}" y="{ly}" font-size="11" fill="#1f77b4">label 0 (n={})</text><text x="{lx}" y="{}" font-size="11" fill="#d62728">label 1 (n={})</text>"##,
        totals[0],
        ly + 14.0,
        totals[1]
    );
    let (tx, _) = map(eval.threshold, 0.0);
    let _ = write!(
        out,
        r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#000" stroke-dasharray="3 3"/>"##,
        MARGIN,
        MARGIN + PANEL
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_well_formed_enough() {
        let s = [0.9, 0.5, 0.4, 0.1];
        let y = [1, 0, 1, 0];
        let e = Evaluation::new(&s, &y, 0.4);
        let b = Evaluation::new(&[0.5; 4], &y, 1.0);
        let svg = evaluation_svg("logistic <x>", &s, &y, &e, &b);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("logistic &lt;x&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 4);
    }
}
