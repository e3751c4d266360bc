//! `pipeline_runs.svg`: the run ledger's grid, one coloured cell per job and period.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::{esc, no_data_svg, open_svg};
use crate::runs::{Cell, Status};

/// The fill of a grid cell with this status.
pub fn status_colour(s: Status) -> &'static str {
    match s {
        Status::Success => "#2ca02c",
        Status::Failed => "#d62728",
        Status::Waiting => "#ffbf00",
        Status::Running => "#1f77b4",
        Status::Skipped => "#b0b0b0",
    }
}

pub(super) const ALL_STATUSES: [Status; 5] = [
    Status::Success,
    Status::Failed,
    Status::Waiting,
    Status::Running,
    Status::Skipped,
];

pub(super) fn duration_text(secs: Option<f64>) -> String {
    match secs {
        None => "–".into(),
        Some(s) if s < 10.0 => format!("{s:.1}s"),
        Some(s) if s < 600.0 => format!("{s:.0}s"),
        Some(s) => format!("{:.0}m", s / 60.0),
    }
}

/// The run grid: periods down (months in order, then `all`), jobs across, one
/// `<rect class="cell STATUS">` per recorded job and period.
pub fn runs_svg(cells: &[Cell]) -> String {
    const TITLE: &str = "Pipeline runs (latest attempt per job and period)";
    if cells.is_empty() {
        return no_data_svg(TITLE, "no runs recorded in pipeline_runs");
    }
    let is_month = |p: &str| p.parse::<crate::etl::Month>().is_ok();
    // Monthly jobs first (left), then the others, each group by name.
    let monthly_jobs: BTreeSet<&str> = cells
        .iter()
        .filter(|c| is_month(&c.period))
        .map(|c| c.job.as_str())
        .collect();
    let other_jobs: BTreeSet<&str> = cells
        .iter()
        .map(|c| c.job.as_str())
        .filter(|j| !monthly_jobs.contains(j))
        .collect();
    let jobs: Vec<&str> = monthly_jobs.iter().copied().chain(other_jobs).collect();
    let months: BTreeSet<&str> = cells
        .iter()
        .filter(|c| is_month(&c.period))
        .map(|c| c.period.as_str())
        .collect();
    let others: BTreeSet<&str> = cells
        .iter()
        .filter(|c| !is_month(&c.period))
        .map(|c| c.period.as_str())
        .collect();
    let periods: Vec<&str> = months.into_iter().chain(others).collect();
    let by_key: BTreeMap<(&str, &str), &Cell> = cells
        .iter()
        .map(|c| ((c.period.as_str(), c.job.as_str()), c))
        .collect();

    let (left, top, cw, ch): (f64, f64, f64, f64) = (90.0, 70.0, 120.0, 20.0);
    let grid_w = cw * jobs.len() as f64;
    let legend_x = left + grid_w + 30.0;
    let width = (legend_x + 150.0).max(520.0);
    let height = (top + ch * periods.len() as f64 + 50.0).max(top + 20.0 * 6.0 + 20.0);

    let mut out = String::new();
    open_svg(&mut out, width, height, TITLE);
    for (j, job) in jobs.iter().enumerate() {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="12" font-weight="bold">{}</text>"##,
            left + cw * (j as f64 + 0.5),
            top - 10.0,
            esc(job)
        );
    }
    for (r, period) in periods.iter().enumerate() {
        let y = top + ch * r as f64;
        let _ = write!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            left - 8.0,
            y + ch * 0.7,
            esc(period)
        );
        for (j, job) in jobs.iter().enumerate() {
            let x = left + cw * j as f64;
            let Some(c) = by_key.get(&(*period, *job)) else {
                // A gap only where the job runs for such periods (a month without a
                // load-sales run); a monthly job has no `all` cell and vice versa.
                if monthly_jobs.contains(job) != is_month(period) {
                    continue;
                }
                let _ = write!(
                    out,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{cw}" height="{ch}" fill="#f4f4f4" stroke="white"/>"##
                );
                continue;
            };
            let mut tip = format!(
                "{} {}: {}, {}, {} attempt{}",
                c.job,
                c.period,
                c.status.as_str(),
                duration_text(c.duration_secs),
                c.attempts,
                if c.attempts == 1 { "" } else { "s" }
            );
            if let Some(rows) = c.rows_loaded {
                let _ = write!(tip, ", {rows} rows");
            }
            if let Some(e) = &c.error {
                let _ = write!(tip, ": {e}");
            }
            let text_colour = match c.status {
                Status::Waiting | Status::Skipped => "black",
                _ => "white",
            };
            let attempts = if c.attempts > 1 {
                format!(" ×{}", c.attempts)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                r##"<g><title>{}</title><rect class="cell {}" data-job="{}" data-period="{}" x="{x:.1}" y="{y:.1}" width="{cw}" height="{ch}" fill="{}" stroke="white"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{text_colour}">{}</text></g>"##,
                esc(&tip),
                c.status.as_str(),
                esc(&c.job),
                esc(&c.period),
                status_colour(c.status),
                x + cw / 2.0,
                y + ch * 0.7,
                esc(&format!("{}{attempts}", duration_text(c.duration_secs)))
            );
        }
    }
    // Legend, with the count of cells in each status.
    let _ = write!(
        out,
        r##"<text x="{legend_x}" y="{}" font-size="12" font-weight="bold">status</text>"##,
        top - 10.0
    );
    for (k, s) in ALL_STATUSES.into_iter().enumerate() {
        let n = cells.iter().filter(|c| c.status == s).count();
        let y = top + 20.0 * k as f64;
        let _ = write!(
            out,
            r##"<rect class="legend" x="{legend_x}" y="{y}" width="14" height="14" fill="{}"/><text x="{}" y="{}" font-size="12">{} ({n})</text>"##,
            status_colour(s),
            legend_x + 20.0,
            y + 11.5,
            s.as_str()
        );
    }
    let _ = write!(
        out,
        r##"<text x="{left}" y="{}" font-size="11" fill="#666">cell text: duration of the latest attempt, ×N when N attempts are recorded; hover for rows and errors</text>"##,
        height - 14.0
    );
    out.push_str("</svg>\n");
    out
}
