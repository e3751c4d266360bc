//! `pipeline report --out DIR`: two pictures of what the database holds, as
//! hand-written SVG (no plotting crate, in the style of `train::plot`):
//!
//! - `monthly_sales.svg`: `monthly_sales.value` over `sale_month`, one line per store
//!   (`store_idx`, `location`), with axes, month tick labels and a legend;
//! - `pipeline_runs.svg`: the grid of `pipeline status` (the latest attempt of every
//!   job and period): periods down, jobs across, each cell coloured by its status, with
//!   its duration as text and the details (attempts, rows, error) as a tooltip.
//!
//! An empty database is not an error: each picture then says "no data" in so many words
//! (and the command says so on stdout), so a report can run before the first load.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

use crate::runs::{self, Cell, Status};

pub const MONTHLY_SALES_FILE: &str = "monthly_sales.svg";
pub const RUNS_FILE: &str = "pipeline_runs.svg";

/// The text a picture carries when there is nothing to draw.
pub const NO_DATA: &str = "no data";

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("reading the database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One row of `monthly_sales`.
#[derive(Clone, Debug, PartialEq)]
pub struct SalesPoint {
    pub store_idx: i32,
    pub location: String,
    /// `YYYY-MM`
    pub month: String,
    pub value: f64,
}

/// What a report wrote.
#[derive(Clone, Debug)]
pub struct Written {
    pub monthly_sales: PathBuf,
    pub runs: PathBuf,
    pub stores: usize,
    pub months: usize,
    pub cells: usize,
}

/// Every row of `monthly_sales`, by store then month.
pub async fn monthly_sales(pool: &PgPool) -> Result<Vec<SalesPoint>, sqlx::Error> {
    let rows: Vec<(i32, String, String, f64)> = sqlx::query_as(
        "SELECT store_idx, location, to_char(sale_month, 'YYYY-MM'), value \
         FROM monthly_sales ORDER BY store_idx, sale_month",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(store_idx, location, month, value)| SalesPoint {
            store_idx,
            location,
            month,
            value,
        })
        .collect())
}

/// Reads the database and writes both pictures into `dir` (created if missing).
pub async fn write(pool: &PgPool, dir: &Path) -> Result<Written, ReportError> {
    let sales = monthly_sales(pool).await?;
    let cells = runs::status(pool).await?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let save = |name: &str, svg: String| -> Result<PathBuf, ReportError> {
        let path = dir.join(name);
        std::fs::write(&path, svg).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let stores = sales
        .iter()
        .map(|p| p.store_idx)
        .collect::<BTreeSet<_>>()
        .len();
    let months = sales
        .iter()
        .map(|p| p.month.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    Ok(Written {
        monthly_sales: save(MONTHLY_SALES_FILE, monthly_sales_svg(&sales))?,
        runs: save(RUNS_FILE, runs_svg(&cells))?,
        stores,
        months,
        cells: cells.len(),
    })
}

/// Text and attribute values, escaped for SVG (shared with the evaluation picture).
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/><text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"##,
        width / 2.0,
        esc(title)
    );
}

fn no_data_svg(title: &str, what: &str) -> String {
    let mut out = String::new();
    open_svg(&mut out, 600.0, 200.0, title);
    let _ = write!(
        out,
        r##"<text x="300" y="110" text-anchor="middle" font-size="14" fill="#666">{NO_DATA}: {}</text></svg>"##,
        esc(what)
    );
    out.push('\n');
    out
}

/// Ten distinguishable line colours (matplotlib's tab10), reused in turn.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The smallest round number (1, 1.2, 1.6, 2, 2.4, 3, 4, 6, 8 × 10^k: a quarter of
/// each is round too) not below `v`: the y axis' top.
fn nice_ceiling(v: f64) -> f64 {
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
fn short_number(v: f64) -> String {
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

const ALL_STATUSES: [Status; 5] = [
    Status::Success,
    Status::Failed,
    Status::Waiting,
    Status::Running,
    Status::Skipped,
];

fn duration_text(secs: Option<f64>) -> String {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Tags balance, attributes are quoted, and no stray `<` or `&` is left in text.
    pub(crate) fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"), "does not start with <svg");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            check_text(text);
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().expect("closing tag without an opening one");
                assert_eq!(open, name.trim(), "mismatched tags");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
            }
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
            rest = &rest[end + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let semi = entity.find(';').expect("bare &");
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&&entity[..=semi]),
                "bad entity {}",
                &entity[..=semi]
            );
        }
    }

    fn point(store: i32, location: &str, month: &str, value: f64) -> SalesPoint {
        SalesPoint {
            store_idx: store,
            location: location.into(),
            month: month.into(),
            value,
        }
    }

    fn cell(job: &str, period: &str, status: Status, secs: Option<f64>) -> Cell {
        Cell {
            job: job.into(),
            period: period.into(),
            status,
            attempts: 1,
            started_at: chrono::Utc::now(),
            duration_secs: secs,
            rows_loaded: Some(10),
            error: (status == Status::Failed).then(|| "bad <row> & \"quote\"".into()),
        }
    }

    #[test]
    fn one_line_per_store_with_months_and_legend() {
        let mut pts = Vec::new();
        for (s, loc) in [(1, "Berlin"), (2, "Köln & <Bonn>"), (3, "Wien")] {
            for (m, month) in ["2020-01", "2020-02", "2020-03"].iter().enumerate() {
                pts.push(point(s, loc, month, 1000.0 * s as f64 + m as f64));
            }
        }
        let svg = monthly_sales_svg(&pts);
        assert_well_formed(&svg);
        assert_eq!(svg.matches(r#"<polyline class="series""#).count(), 3);
        assert_eq!(svg.matches("<polyline").count(), 3);
        for s in 1..=3 {
            assert!(svg.contains(&format!(r#"data-store="{s}""#)));
        }
        assert!(svg.contains("Köln &amp; &lt;Bonn&gt;"));
        assert!(svg.contains(">2020-01</text>") && svg.contains(">2020-03</text>"));
        assert_eq!(svg.matches(r#"class="legend""#).count(), 3);
        // Three points per line.
        let line = svg.split(r#"data-store="1" points=""#).nth(1).unwrap();
        let pts = line.split('"').next().unwrap();
        assert_eq!(pts.split_whitespace().count(), 3);
    }

    #[test]
    fn many_months_get_at_most_a_dozen_labels_first_and_last_included() {
        let pts: Vec<SalesPoint> = (0..36)
            .map(|i| point(7, "x", &format!("{}-{:02}", 2020 + i / 12, i % 12 + 1), 5.0))
            .collect();
        let svg = monthly_sales_svg(&pts);
        assert_well_formed(&svg);
        let labels = svg.matches(r#"<text class="month""#).count();
        assert!((2..=13).contains(&labels), "{labels} month labels");
        assert!(svg.contains(">2020-01</text>") && svg.contains(">2022-12</text>"));
    }

    #[test]
    fn empty_inputs_say_no_data() {
        for svg in [monthly_sales_svg(&[]), runs_svg(&[])] {
            assert_well_formed(&svg);
            assert!(svg.contains(NO_DATA));
            assert!(!svg.contains("<polyline") && !svg.contains("class=\"cell"));
        }
    }

    #[test]
    fn cells_are_coloured_by_status_with_durations() {
        let cells = vec![
            cell("load-sales", "2020-01", Status::Success, Some(1.25)),
            cell("load-sales", "2020-02", Status::Failed, Some(0.5)),
            cell("load-sales", "2020-03", Status::Waiting, Some(0.1)),
            cell("load-sales", "2020-04", Status::Running, None),
            cell("load-sales", "2020-05", Status::Skipped, None),
            cell("load-customers", "all", Status::Success, Some(42.0)),
        ];
        let svg = runs_svg(&cells);
        assert_well_formed(&svg);
        assert_eq!(svg.matches(r#"<rect class="cell "#).count(), 6);
        for c in &cells {
            let needle = format!(
                r#"<rect class="cell {}" data-job="{}" data-period="{}""#,
                c.status.as_str(),
                c.job,
                c.period
            );
            let at = svg.find(&needle).unwrap_or_else(|| panic!("{needle}"));
            let fill = format!(r#"fill="{}""#, status_colour(c.status));
            let rect_end = svg[at..].find("/>").unwrap() + at;
            assert!(svg[at..rect_end].contains(&fill), "{needle} not {fill}");
        }
        assert!(svg.contains(">1.2s</text>") || svg.contains(">1.3s</text>"));
        assert!(svg.contains(">42s</text>"));
        assert!(svg.contains("bad &lt;row&gt; &amp; &quot;quote&quot;"));
        // Legend: every status, with its count.
        for s in ALL_STATUSES {
            assert!(svg.contains(&format!(">{} (", s.as_str())), "{s:?}");
        }
        // Months before `all`.
        assert!(svg.find(">2020-05</text>").unwrap() < svg.find(">all</text>").unwrap());
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(550.0), 600.0);
        assert_eq!(nice_ceiling(120.0), 120.0);
        assert_eq!(nice_ceiling(900.0), 1000.0);
        assert_eq!(short_number(12_500.0), "12.5k");
        assert_eq!(short_number(3_000_000.0), "3M");
    }
}
