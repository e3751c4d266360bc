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

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sqlx::PgPool;

use crate::runs;

mod ledger;
mod sales;

pub use ledger::{runs_svg, status_colour};
pub use sales::monthly_sales_svg;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ledger::*;
    use super::sales::*;
    use super::*;
    use crate::runs::{Cell, Status};

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
