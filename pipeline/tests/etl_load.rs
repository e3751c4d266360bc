//! Loads on the real PostgreSQL and the S3 emulator: the real fixture files, monthly
//! idempotence, a bad line that fails a month and leaves its previous rows, atomic
//! customer loads, retries of transient failures.

mod etl_common;

use etl_common::{Bucket, count, database, fast_retry, load_customers, loader, month_snapshot};
use pipeline::etl::Month;
use pipeline::etl::load::Loader;
use pipeline::runs::{self, RetryPolicy, Status};

fn month(s: &str) -> Month {
    s.parse().expect("month")
}

/// `load-sales` of each of `months` in turn, through the ledger: each succeeds.
async fn load_months(l: &Loader, months: &[&str], policy: &RetryPolicy) {
    for m in months {
        let s = runs::load_month(l, month(m), policy).await.expect("ledger");
        assert_eq!(s.status, Status::Success, "{:?}", s.error);
    }
}

/// The file's data lines, sorted by their first field (idx), numbers written the way
/// PostgreSQL prints them (`7.0` reads back as `7`).
fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| match f.parse::<f64>() {
                    Ok(v) if f.contains('.') => v.to_string(),
                    _ => f.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    lines.sort_by_key(|l| l.split(',').next().and_then(|i| i.parse::<i64>().ok()));
    lines.join("\n")
}

/// Equal texts, or the first line that differs.
fn assert_same(db: &str, file: &str, what: &str) {
    if db != file {
        let diff = db
            .lines()
            .zip(file.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b);
        panic!(
            "{what} differ from the file ({} vs {} lines); first difference: {diff:?}",
            db.lines().count(),
            file.lines().count()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_fixture_files_load_unchanged() {
    let (_db, pool) = database().await;
    let bucket = Bucket::new("etl-fixtures").await;
    // customer_activity.csv is not among the fixtures: generate the dataset, then put
    // the real files over the generated ones.
    bucket.generate(150_000, 1, 7).await;
    let dir = harness::fixtures_dir();
    for f in [
        "customer_profiles.csv",
        "labels.csv",
        "stores.csv",
        "sales/2020-01-01/sales.csv",
    ] {
        bucket
            .put(f, std::fs::read(dir.join(f)).expect("fixture file"))
            .await;
    }
    let mut l = loader(&pool, bucket.source());
    l.chunk_bytes = 1 << 20;

    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customer_profiles").await,
        150_000
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM labels").await, 150_000);

    let s = runs::load_month(&l, month("2020-01"), &fast_retry())
        .await
        .expect("ledger");
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    assert_eq!(count(&pool, "SELECT count(*) FROM sales").await, 412);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM store_locations").await,
        5
    );

    // Unchanged: every row reads back as the file wrote it.
    let profiles: String = sqlx::query_scalar(
        "SELECT string_agg(format('%s,%s,%s,%s', idx, attr_a, attr_b, attr_c), E'\\n' ORDER BY idx) \
         FROM customer_profiles",
    )
    .fetch_one(&pool)
    .await
    .expect("profiles");
    let file = std::fs::read_to_string(dir.join("customer_profiles.csv")).expect("read");
    assert_same(&profiles, &sorted_lines(&file), "customer_profiles");

    let labels: String = sqlx::query_scalar(
        "SELECT string_agg(format('%s,%s', idx, label), E'\\n' ORDER BY idx) FROM labels",
    )
    .fetch_one(&pool)
    .await
    .expect("labels");
    let file = std::fs::read_to_string(dir.join("labels.csv")).expect("read");
    assert_same(&labels, &sorted_lines(&file), "labels");

    let (sales, monthly) = month_snapshot(&pool, "2020-01").await;
    let file = std::fs::read_to_string(dir.join("sales/2020-01-01/sales.csv")).expect("read");
    assert_same(&sales, &sorted_lines(&file), "sales");
    assert_eq!(
        monthly.lines().count(),
        5,
        "one aggregate per store: {monthly}"
    );
    let total: f64 = file
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
                .expect("value")
        })
        .sum();
    let db_total: f64 = sqlx::query_scalar("SELECT sum(value) FROM monthly_sales")
        .fetch_one(&pool)
        .await
        .expect("sum");
    assert!((total - db_total).abs() < 1e-6, "{total} vs {db_total}");

    // Every attempt is in the ledger, with its quality results.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pipeline_runs WHERE status = 'success'"
        )
        .await,
        2
    );
    assert!(count(&pool, "SELECT count(*) FROM dq_results WHERE passed").await > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_loaded_three_times_holds_the_same_rows_as_once() {
    let (_db, pool) = database().await;
    let bucket = Bucket::generated("etl-idem", 300, 3, 11).await;
    let l = loader(&pool, bucket.source());
    let policy = fast_retry();
    load_months(&l, &["2020-01", "2020-02", "2020-03"], &policy).await;
    let once = month_snapshot(&pool, "2020-02").await;
    let total_once = count(&pool, "SELECT count(*) FROM sales").await;
    let file = String::from_utf8(bucket.get("sales/2020-02-01/sales.csv").await).expect("utf8");
    assert_same(&once.0, &sorted_lines(&file), "sales");
    // The same month twice more.
    load_months(&l, &["2020-02", "2020-02"], &policy).await;
    assert!(
        month_snapshot(&pool, "2020-02").await == once,
        "the month changed"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM sales").await, total_once);
    assert_eq!(count(&pool, "SELECT count(*) FROM monthly_sales").await, 15);
    // Three attempts recorded for the month, numbered 1..3.
    let attempts: Vec<i32> = sqlx::query_scalar(
        "SELECT attempt FROM pipeline_runs WHERE job = 'load-sales' AND period = '2020-02' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("attempts");
    assert_eq!(attempts, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_row_at_line_300_fails_the_month_and_keeps_its_previous_rows() {
    let (_db, pool) = database().await;
    let bucket = Bucket::generated("etl-bad300", 300, 2, 5).await;
    let l = loader(&pool, bucket.source());
    let policy = fast_retry();
    load_months(&l, &["2020-01", "2020-02"], &policy).await;
    let before = month_snapshot(&pool, "2020-02").await;
    let other = month_snapshot(&pool, "2020-01").await;

    // Line 300 (the header is line 1) gets a non-numeric value; with 4 KiB chunks,
    // the rows before it have already been streamed into COPY when it is found.
    let file = String::from_utf8(bucket.get("sales/2020-02-01/sales.csv").await).expect("utf8");
    let mut lines: Vec<String> = file.lines().map(str::to_string).collect();
    let mut f: Vec<String> = lines[299].split(',').map(str::to_string).collect();
    f[1] = "12,5x".replace(',', ".");
    lines[299] = f.join(",");
    bucket
        .put("sales/2020-02-01/sales.csv", lines.join("\n") + "\n")
        .await;

    let s = runs::load_month(&l, month("2020-02"), &policy)
        .await
        .expect("ledger");
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.attempts, 1, "bad data is not retried");
    let err = s.error.expect("error");
    assert!(err.contains("sales/2020-02-01/sales.csv"), "{err}");
    assert!(err.contains("line 300, column 2 (value)"), "{err}");
    assert!(err.contains("12.5x"), "{err}");

    assert_eq!(month_snapshot(&pool, "2020-02").await, before);
    assert_eq!(month_snapshot(&pool, "2020-01").await, other);
    let failed_checks = count(
        &pool,
        "SELECT count(*) FROM dq_results d JOIN pipeline_runs r ON r.id = d.run_id \
         WHERE r.status = 'failed' AND NOT d.passed AND d.check_name LIKE '%type(value)'",
    )
    .await;
    assert_eq!(failed_checks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_customer_file_leaves_the_previous_tables() {
    let (_db, pool) = database().await;
    let bucket = Bucket::generated("etl-cust", 2_000, 1, 3).await;
    let l = loader(&pool, bucket.source());
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    let profiles = count(&pool, "SELECT count(*) FROM customer_profiles").await;
    let activity = count(&pool, "SELECT count(*) FROM customer_activity").await;
    assert_eq!(profiles, 2_000);
    assert!(activity > 2_000);

    // A new version of the files: profiles shrink to 1,000 customers (loaded first in
    // the transaction), and labels.csv has a label 2 at line 10.
    let p = String::from_utf8(bucket.get("customer_profiles.csv").await).expect("utf8");
    bucket
        .put(
            "customer_profiles.csv",
            p.lines().take(1001).collect::<Vec<_>>().join("\n") + "\n",
        )
        .await;
    let lab = String::from_utf8(bucket.get("labels.csv").await).expect("utf8");
    let mut lines: Vec<String> = lab.lines().map(str::to_string).collect();
    lines[9] = "8,2".into();
    bucket.put("labels.csv", lines.join("\n") + "\n").await;

    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(
        err.contains("labels.csv, line 10, column 2 (label)"),
        "{err}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customer_profiles").await,
        profiles
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customer_activity").await,
        activity
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM labels").await, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_every_attempt_recorded() {
    let (_db, pool) = database().await;
    // An S3 endpoint on loopback where nothing listens: connection refused, a
    // transient failure. The SDK's own retries are off so the ledger sees each one.
    let port = harness::free_port();
    let creds = aws_credential_types_free();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(creds)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let source = pipeline::etl::Source::new("s3://nowhere/data", Some(&sdk)).expect("source");
    let l = loader(&pool, source);
    let s = runs::load_month(&l, month("2020-01"), &fast_retry())
        .await
        .expect("ledger");
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.attempts, 3);
    let rows: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT attempt, status, error FROM pipeline_runs WHERE job = 'load-sales' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("runs");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(rows.iter().all(|r| r.1 == "failed"));
    assert!(
        rows[0]
            .2
            .as_deref()
            .unwrap_or("")
            .contains("transient, will retry"),
        "{rows:?}"
    );
}

/// Static throwaway credentials for the unreachable endpoint (no request reaches
/// anything).
fn aws_credential_types_free() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new("AKIATEST", harness::unique("k"), None, None, "test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_old_customer_tables_or_the_new_never_half() {
    let (_db, pool) = database().await;
    let old = Bucket::generated("etl-atomic-old", 20_000, 1, 1).await;
    let new = Bucket::generated("etl-atomic-new", 30_000, 1, 2).await;
    let s = load_customers(&loader(&pool, old.source())).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);

    // Poll from other connections while the new files load.
    let reader = pool.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let poller = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let (p, l): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM customer_profiles), (SELECT count(*) FROM labels)",
            )
            .fetch_one(&reader)
            .await
            .expect("poll");
            seen.insert((p, l));
        }
        seen
    });
    let l = loader(&pool, new.source());
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.await.expect("poller");
    println!("states seen by readers: {seen:?}");
    assert!(
        seen.iter()
            .all(|s| *s == (20_000, 20_000) || *s == (30_000, 30_000)),
        "{seen:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customer_profiles").await,
        30_000
    );
}
