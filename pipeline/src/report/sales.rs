//! `monthly_sales.svg`: monthly sales by store, one line per store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{SalesPoint, esc, no_data_svg, open_svg};

/// Ten distinguishable line colours (matplotlib's tab10), reused in turn.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The smallest round number (1, 1.2, 1.6, 2, 2.4, 3, 4, 6, 8 × 10^k: a quarter of
/// each is round too) not below `v`: the y axis' top.
pub(super) fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// An axis value, short: 950, 12.5k, 3.2M.
pub(super) fn short_number(v: f64) -> String {
    let a = v.abs();
    let (x, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    // Six decimals are plenty, and hide 0.1 + 0.2-style noise.
    let x = (x * 1e6).round() / 1e6;
    if x == x.trunc() {
        format!("{x}{unit}")
    } else {
        format!("{x:.1}{unit}")
    }
}

/// Monthly sales by store: one `<polyline class="series">` per store.
pub fn monthly_sales_svg(points: &[SalesPoint]) -> String {
    const TITLE: &str = "Monthly sales by store";
    if points.is_empty() {
        return no_data_svg(TITLE, "monthly_sales is empty");
    }
    let months: Vec<&str> = points
        .iter()
        .map(|p| p.month.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let col: BTreeMap<&str, usize> = months.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut series: BTreeMap<(i32, &str), Vec<(usize, f64)>> = BTreeMap::new();
    for p in points {
        series
            .entry((p.store_idx, p.location.as_str()))
            .or_default()
            .push((col[p.month.as_str()], p.value));
    }
    let (lo, hi) = points.iter().fold((0.0f64, 0.0f64), |(lo, hi), p| {
        (lo.min(p.value), hi.max(p.value))
    });
    let y_top = nice_ceiling(hi);
    let y_bottom = if lo < 0.0 { -nice_ceiling(-lo) } else { 0.0 };

    let (left, top, plot_w, plot_h): (f64, f64, f64, f64) = (80.0, 45.0, 760.0, 360.0);
    let legend_x = left + plot_w + 30.0;
    let legend_h = 20.0 * series.len() as f64 + 30.0;
    let width = legend_x + 200.0;
    let height = (top + plot_h + 70.0).max(top + legend_h);
    let x_of = |i: usize| {
        if months.len() == 1 {
            left + plot_w / 2.0
        } else {
            left + plot_w * i as f64 / (months.len() - 1) as f64
        }
    };
    let y_of = |v: f64| top + plot_h - (v - y_bottom) / (y_top - y_bottom) * plot_h;

    let mut out = String::new();
    open_svg(&mut out, width, height, TITLE);
    // Grid lines and y ticks.
    for k in 0..=4 {
        let v = y_bottom + (y_top - y_bottom) * k as f64 / 4.0;
        let y = y_of(v);
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            esc(&short_number(v))
        );
    }
    // Month ticks: at most 12 labels, always the first and the last.
    let step = months.len().div_ceil(12).max(1);
    for (i, m) in months.iter().enumerate() {
        let x = x_of(i);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#444"/>"##,
            top + plot_h,
            top + plot_h + 4.0
        );
        // The last month always; a regular one only if it leaves room before the last.
        let last = i + 1 == months.len();
        if last || (i % step == 0 && months.len() - 1 - i >= step) {
            let _ = write!(
                out,
                r##"<text class="month" x="{x:.1}" y="{}" text-anchor="middle" font-size="11">{}</text>"##,
                top + plot_h + 18.0,
                esc(m)
            );
        }
    }
    let _ = write!(
        out,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/><text x="{}" y="{}" text-anchor="middle" font-size="12">sale month</text><text x="22" y="{}" text-anchor="middle" font-size="12" transform="rotate(-90 22 {})">sales value</text>"##,
        left + plot_w / 2.0,
        top + plot_h + 42.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    // One line per store, and its legend entry.
    let _ = write!(
        out,
        r##"<text x="{legend_x}" y="{}" font-size="12" font-weight="bold">store (location)</text>"##,
        top + 4.0
    );
    for (k, ((store, location), pts)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let label = format!("store {store} ({location})");
        let mut d = String::new();
        for &(i, v) in pts {
            let _ = write!(d, "{:.1},{:.1} ", x_of(i), y_of(v));
        }
        let _ = write!(
            out,
            r##"<polyline class="series" data-store="{store}" points="{}" fill="none" stroke="{colour}" stroke-width="2"><title>{}</title></polyline>"##,
            d.trim_end(),
            esc(&label)
        );
        let y = top + 24.0 + 20.0 * k as f64;
        let _ = write!(
            out,
            r##"<line x1="{legend_x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"/><text class="legend" x="{}" y="{}" font-size="12">{}</text>"##,
            legend_x + 22.0,
            legend_x + 28.0,
            y + 4.0,
            esc(&label)
        );
    }
    out.push_str("</svg>\n");
    out
}
