//! `pipeline report --out DIR` through the binary, against the harness's PostgreSQL:
//! an empty database gives two "no data" pictures; after a catch-up over a small
//! generated dataset, one line per store and one coloured cell per job and period.

mod etl_common;

use etl_common::{Bucket, count, database, pipeline};
use pipeline::report::{MONTHLY_SALES_FILE, NO_DATA, RUNS_FILE, status_colour};
use pipeline::runs::Status;

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// The `fill` of the grid cell for `job` and `period`.
fn cell_fill(svg: &str, job: &str, period: &str) -> Option<String> {
    let needle = format!(r#"data-job="{job}" data-period="{period}""#);
    let at = svg.find(&needle)?;
    let rect = &svg[at..at + svg[at..].find("/>")?];
    let fill = rect.split("fill=\"").nth(1)?;
    Some(fill.split('"').next()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_database_gives_pictures_that_say_no_data() {
    let (db, _pool) = database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("pictures");
    let out = pipeline(
        &db.url(),
        &["report", "--out", &out_dir.display().to_string()],
    );
    assert!(out.status.success());
    for name in [MONTHLY_SALES_FILE, RUNS_FILE] {
        let svg = read(&out_dir, name);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(NO_DATA), "{name} does not say {NO_DATA:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_of_a_catch_up_over_generated_months() {
    let (db, pool) = database().await;
    let bucket = Bucket::new("report").await;
    bucket.generate(200, 4, 11).await;
    let url = db.url();
    let src = bucket.url();
    assert!(
        pipeline(&url, &["load-customers", "--source", &src])
            .status
            .success()
    );
    // 2020-05 has no file: a waiting cell next to four successes.
    let out = pipeline(
        &url,
        &[
            "catch-up", "--source", &src, "--start", "2020-01", "--until", "2020-05",
        ],
    );
    assert!(out.status.success());
    // A failed attempt, as the ledger records one.
    sqlx::query(
        "INSERT INTO pipeline_runs (job, period, status, attempt, finished_at, error) \
         VALUES ('load-sales', '2019-12', 'failed', 1, now(), 'bad <data>')",
    )
    .execute(&pool)
    .await
    .expect("insert a failed run");

    let dir = tempfile::tempdir().expect("temp dir");
    let out = pipeline(
        &url,
        &["report", "--out", &dir.path().display().to_string()],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 months"));

    let sales = read(dir.path(), MONTHLY_SALES_FILE);
    let stores: Vec<(i32,)> = sqlx::query_as("SELECT DISTINCT store_idx FROM monthly_sales")
        .fetch_all(&pool)
        .await
        .expect("stores");
    assert!(!stores.is_empty());
    assert_eq!(
        sales.matches(r#"<polyline class="series""#).count(),
        stores.len()
    );
    for (s,) in &stores {
        assert!(sales.contains(&format!(r#"data-store="{s}""#)), "store {s}");
    }
    for m in ["2020-01", "2020-02", "2020-03", "2020-04"] {
        assert!(sales.contains(&format!(">{m}</text>")), "month {m}");
    }
    assert!(!sales.contains(">2020-05</text>"));
    assert!(!sales.contains(NO_DATA));

    let grid = read(dir.path(), RUNS_FILE);
    let cells = count(
        &pool,
        "SELECT count(*) FROM (SELECT DISTINCT job, period FROM pipeline_runs) c",
    )
    .await;
    assert_eq!(grid.matches(r#"<rect class="cell "#).count() as i64, cells);
    let expect = [
        ("load-sales", "2020-01", Status::Success),
        ("load-sales", "2020-04", Status::Success),
        ("load-sales", "2020-05", Status::Waiting),
        ("load-sales", "2019-12", Status::Failed),
        ("load-customers", "all", Status::Success),
    ];
    for (job, period, status) in expect {
        assert_eq!(
            cell_fill(&grid, job, period).as_deref(),
            Some(status_colour(status)),
            "{job} {period}"
        );
    }
    assert!(grid.contains("bad &lt;data&gt;"));
}
