//! `pipeline status`: the run ledger's grid as text (months down, monthly jobs across),
//! coloured on a terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use pipeline::etl::Month;
use pipeline::runs::{Cell, Status};

fn paint(text: &str, status: Status, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match status {
        Status::Success => "32",
        Status::Failed => "31",
        Status::Waiting => "33",
        Status::Running => "36",
        Status::Skipped => "90",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn cell_text(c: &Cell) -> String {
    let mut s = format!("{} {}", symbol(c.status), c.status.as_str());
    if let Some(d) = c.duration_secs {
        let _ = write!(s, " {d:.1}s");
    }
    if c.attempts > 1 {
        let _ = write!(s, " ×{}", c.attempts);
    }
    s
}

/// The grid: months down, monthly jobs across (status, duration, attempts), then the
/// other jobs, then a summary line.
pub fn render_grid(cells: &[Cell], color: bool) -> String {
    let is_month = |p: &str| p.parse::<Month>().is_ok();
    let jobs: BTreeSet<&str> = cells
        .iter()
        .filter(|c| is_month(&c.period))
        .map(|c| c.job.as_str())
        .collect();
    let months: BTreeSet<&str> = cells
        .iter()
        .filter(|c| is_month(&c.period))
        .map(|c| c.period.as_str())
        .collect();
    let by_key: BTreeMap<(&str, &str), &Cell> = cells
        .iter()
        .map(|c| ((c.period.as_str(), c.job.as_str()), c))
        .collect();
    let mut out = String::new();
    if !months.is_empty() {
        let mut widths: Vec<usize> = jobs.iter().map(|j| j.chars().count()).collect();
        for m in &months {
            for (i, j) in jobs.iter().enumerate() {
                if let Some(c) = by_key.get(&(*m, *j)) {
                    widths[i] = widths[i].max(cell_text(c).chars().count());
                }
            }
        }
        let _ = write!(out, "{:<8}", "month");
        for (i, j) in jobs.iter().enumerate() {
            let _ = write!(out, "  {:<w$}", j, w = widths[i]);
        }
        out = out.trim_end().to_string();
        out.push('\n');
        for m in &months {
            let mut line = format!("{m:<8}");
            for (i, j) in jobs.iter().enumerate() {
                match by_key.get(&(*m, *j)) {
                    Some(c) => {
                        let t = cell_text(c);
                        let pad = widths[i] - t.chars().count();
                        let _ = write!(line, "  {}{}", paint(&t, c.status, color), " ".repeat(pad));
                    }
                    None => {
                        let _ = write!(line, "  {:<w$}", "·", w = widths[i]);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    let others: Vec<&Cell> = cells.iter().filter(|c| !is_month(&c.period)).collect();
    if !others.is_empty() {
        out.push('\n');
        for c in others {
            let _ = writeln!(
                out,
                "{:<16} {:<10} {}  (last {})",
                c.job,
                c.period,
                paint(&cell_text(c), c.status, color),
                c.started_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in cells {
        *counts.entry(c.status.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(
        out,
        "{}",
        if summary.is_empty() {
            "no runs recorded".to_string()
        } else {
            summary.join(", ")
        }
    );
    // Failed cells with their reason, so the grid says why.
    for c in cells.iter().filter(|c| c.status == Status::Failed) {
        if let Some(e) = &c.error {
            let _ = writeln!(out, "  {} {}: {}", c.job, c.period, e);
        }
    }
    out
}

fn symbol(status: Status) -> &'static str {
    match status {
        Status::Running => "▶",
        Status::Success => "✓",
        Status::Failed => "✗",
        Status::Waiting => "…",
        Status::Skipped => "-",
    }
}
