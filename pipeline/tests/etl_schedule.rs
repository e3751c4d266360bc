//! The monthly schedule through the `pipeline` binary: catch-up over 36 generated
//! months, then the status grid; backfill with --rerun and --dry-run; a failed month
//! does not stop the later ones; a missing month is waiting.

mod etl_common;

use std::process::{Command, Output};

use etl_common::{Bucket, count, database, pipeline};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_over_36_generated_months_then_status_grid() {
    let (db, pool) = database().await;
    let bucket = Bucket::new("etl-catchup").await;
    let report = bucket.generate(200, 36, 9).await;
    assert_eq!(report.sales_files, 36);
    let url = db.url();
    let src = bucket.url();

    // 2023-01 and 2023-02 have no file yet: waiting, not a crash.
    let out = pipeline(
        &url,
        &[
            "catch-up",
            "--source",
            &src,
            "--start",
            "2020-01",
            "--until",
            "2023-02",
            "--retry-base-ms",
            "10",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pipeline_runs WHERE job = 'load-sales' AND status = 'success'"
        )
        .await,
        36
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pipeline_runs WHERE status = 'waiting'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(DISTINCT sale_month) FROM sales").await,
        36
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM monthly_sales").await,
        36 * 5
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM sales").await,
        report.sales_rows as i64
    );

    let out = pipeline(&url, &["status"]);
    assert!(out.status.success());
    let grid = stdout(&out);
    assert!(grid.starts_with("month"), "{grid}");
    assert!(grid.contains("load-sales"), "{grid}");
    let row = grid
        .lines()
        .find(|l| l.starts_with("2020-01"))
        .expect("row 2020-01");
    assert!(row.contains("✓ success"), "{row}");
    let row = grid
        .lines()
        .find(|l| l.starts_with("2023-02"))
        .expect("row 2023-02");
    assert!(row.contains("… waiting"), "{row}");
    assert!(grid.contains("36 success, 2 waiting"), "{grid}");

    // A second catch-up has only the waiting months to do.
    let out = pipeline(
        &url,
        &[
            "catch-up", "--source", &src, "--start", "2020-01", "--until", "2023-02",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM pipeline_runs").await,
        36 + 2 + 2
    );

    // `backfill` over 2021, with `extra` arguments.
    let backfill_2021 = |extra: &[&str]| {
        let mut args = vec![
            "backfill", "--source", &src, "--from", "2021-01", "--to", "2021-12",
        ];
        args.extend_from_slice(extra);
        pipeline(&url, &args)
    };

    // Break 2021-06 at line 300, then rerun all of 2021: June fails, the rest runs.
    let f = "sales/2021-06-01/sales.csv";
    let text = String::from_utf8(bucket.get(f).await).expect("utf8");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[299] = "999999,1.0,2021-06-31,1".into();
    bucket.put(f, lines.join("\n") + "\n").await;
    let june_before = etl_common::month_snapshot(&pool, "2021-06").await;

    let out = backfill_2021(&["--dry-run"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("dry run: 0 of 12 months would run"),
        "{}",
        stdout(&out)
    );
    let out = backfill_2021(&["--rerun", "all"]);
    assert!(!out.status.success(), "a failed month fails the command");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 run(s) failed: 2021-06"), "{err}");
    assert!(
        stdout(&out).contains("line 300, column 3 (date)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        etl_common::month_snapshot(&pool, "2021-06").await,
        june_before
    );
    let later: i64 = count(
        &pool,
        "SELECT count(*) FROM pipeline_runs WHERE period BETWEEN '2021-07' AND '2021-12' AND status = 'success'",
    )
    .await;
    assert_eq!(later, 12, "the months after the failure ran too");

    // Without --rerun, a backfill leaves the failed month alone; --rerun failed takes it.
    let out = backfill_2021(&["--dry-run"]);
    assert!(
        stdout(&out).contains("2021-06  skip  last: failed"),
        "{}",
        stdout(&out)
    );
    let out = backfill_2021(&["--dry-run", "--rerun", "failed"]);
    assert!(
        stdout(&out).contains("2021-06  run   last: failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("dry run: 1 of 12 months would run"),
        "{}",
        stdout(&out)
    );

    let out = pipeline(&url, &["status", "--json"]);
    let cells: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let cells = cells.as_array().expect("array");
    assert_eq!(cells.len(), 38);
    let june = cells
        .iter()
        .find(|c| c["period"] == "2021-06")
        .expect("june");
    assert_eq!(june["status"], "failed");
    assert_eq!(june["attempts"], 2);

    let out = pipeline(&url, &["status"]);
    print!("{}", stdout(&out));
    assert!(
        stdout(&out).contains("load-sales 2021-06:"),
        "the grid says why June failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_is_deterministic_and_prints_the_optimum_auc() {
    let bucket = Bucket::new("etl-gen").await;
    let a = bucket.generate(20_000, 2, 123).await;
    let profiles = bucket.get("customer_profiles.csv").await;
    let activity = bucket.get("customer_activity.csv").await;
    let labels = bucket.get("labels.csv").await;
    let b = bucket.generate(20_000, 2, 123).await;
    assert_eq!(bucket.get("customer_profiles.csv").await, profiles);
    assert_eq!(bucket.get("customer_activity.csv").await, activity);
    assert_eq!(bucket.get("labels.csv").await, labels);
    assert_eq!(a.optimum_auc, b.optimum_auc);
    let c = bucket.generate(20_000, 2, 124).await;
    assert_ne!(
        bucket.get("labels.csv").await,
        labels,
        "another seed, other data"
    );
    println!("{a:?}\n{c:?}");
    assert!((0.08..0.10).contains(&a.positive_rate), "{a:?}");
    assert!((0.7..0.9).contains(&a.optimum_auc), "{a:?}");
    assert!((a.optimum_auc - a.expected_auc).abs() < 0.03, "{a:?}");
    assert!(
        a.activity_rows > 2 * a.customers,
        "several versions per customer"
    );

    // Through the binary, to a directory: same formats as the real files.
    let dir = std::env::temp_dir().join(harness::unique("gen"));
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["generate", "--out"])
        .arg(&dir)
        .args(["--customers", "1000", "--months", "3", "--seed", "1"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("optimum AUC"), "{text}");
    let first = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .expect("file")
            .lines()
            .next()
            .map(str::to_string)
    };
    let fixtures = harness::fixtures_dir();
    for f in [
        "customer_profiles.csv",
        "labels.csv",
        "stores.csv",
        "sales/2020-01-01/sales.csv",
    ] {
        let real = std::fs::read_to_string(fixtures.join(f)).expect("fixture");
        assert_eq!(first(f).as_deref(), real.lines().next(), "header of {f}");
    }
    assert_eq!(
        first("customer_activity.csv").as_deref(),
        Some("idx,valid_from,valid_to,scd_a,scd_b")
    );
    assert!(dir.join("sales/2020-03-01/sales.csv").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
