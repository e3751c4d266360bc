//! build-features and check: one row per customer from the current activity row, the
//! documented edge cases, and the data-quality table on screen and in dq_results.

mod etl_common;

use etl_common::{Bucket, count, database, load_customers, loader, pipeline};
use pipeline::runs::Status;

const PROFILES: &str =
    "idx,attr_a,attr_b,attr_c\n0,1,a,yes\n1,2,b,no\n2,3,c,yes\n3,4,d,no\n5,5,a,yes\n";
const LABELS: &str = "idx,label\n0,1\n1,0\n2,0\n4,1\n5,0\n";
// 0: a closed and a current row; 1: only closed rows; 2: two current rows;
// 3: current row, no label; 4: current row, no profile; 5: no activity at all.
const ACTIVITY: &str = "idx,valid_from,valid_to,scd_a,scd_b\n\
0,2019-01-01,2020-01-01,0.1,1\n\
0,2020-01-01,,0.55,3\n\
1,2019-01-01,2019-06-01,0.2,2\n\
1,2019-06-01,2020-06-01,0.3,4\n\
2,2020-01-01,,0.4,5\n\
2,2021-01-01,,0.9,7\n\
3,2019-05-05,,0.7,2\n\
4,2019-05-05,,0.8,9\n";

/// A bucket holding the three customer files above.
async fn customer_files(prefix: &str) -> Bucket {
    let bucket = Bucket::new(prefix).await;
    bucket.put("customer_profiles.csv", PROFILES).await;
    bucket.put("labels.csv", LABELS).await;
    bucket.put("customer_activity.csv", ACTIVITY).await;
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_take_the_current_row_and_handle_the_edge_cases() {
    let (db, pool) = database().await;
    let bucket = customer_files("etl-feat").await;
    let l = loader(&pool, bucket.source());
    let s = load_customers(&l).await;
    assert_eq!(
        s.status,
        Status::Success,
        "warnings do not block: {:?}",
        s.error
    );
    let warned: Vec<String> = sqlx::query_scalar(
        "SELECT check_name FROM dq_results WHERE NOT passed ORDER BY check_name",
    )
    .fetch_all(&pool)
    .await
    .expect("dq");
    assert!(
        warned.contains(&"at_most_one_current_row".to_string()),
        "{warned:?}"
    );
    assert!(
        warned.contains(&"has_current_activity".to_string()),
        "{warned:?}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM dq_results WHERE NOT passed AND severity = 'error'"
        )
        .await,
        0
    );

    let (outcome, report) = pipeline::features::build(&pool).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let r = report.expect("report");
    assert_eq!(r.rows, 3);
    assert_eq!(r.no_current_row, 2, "customers 1 and 5");
    assert_eq!(r.multiple_current_rows, 1, "customer 2");
    assert_eq!(r.current_row_without_profile, 1, "customer 4");
    assert_eq!(r.without_label, 1, "customer 3");

    let rows: Vec<(i64, i16, String, f64, i32, Option<i16>)> = sqlx::query_as(
        "SELECT idx, attr_a, attr_b, scd_a, scd_b, label FROM feature_store ORDER BY idx",
    )
    .fetch_all(&pool)
    .await
    .expect("features");
    assert_eq!(
        rows,
        vec![
            (0, 1, "a".into(), 0.55, 3, Some(1)),
            (2, 3, "c".into(), 0.9, 7, Some(0)),
            (3, 4, "d".into(), 0.7, 2, None),
        ]
    );

    // Through the binary: build-features is recorded; check prints the table and
    // passes (warnings only).
    let out = pipeline(&db.url(), &["build-features"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"multiple_current_rows\": 1"));
    let out = pipeline(
        &db.url(),
        &[
            "check",
            "--table",
            "customer_profiles",
            "--table",
            "labels",
            "--table",
            "customer_activity",
            "--table",
            "feature_store",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("result"), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains("at_most_one_current_row"))
        .expect("the check's line");
    assert!(
        line.starts_with("WARN") && line.contains("customer_activity"),
        "{line}"
    );
    assert!(
        table.contains("{\"current_rows\":2,\"idx\":2}"),
        "sample shown: {table}"
    );

    // A broken table: check fails with the failing rows, and says so in its exit code.
    sqlx::query("UPDATE labels SET label = 3 WHERE idx = 4")
        .execute(&pool)
        .await
        .expect("update");
    let out = pipeline(&db.url(), &["check", "--table", "labels"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert!(!out.status.success());
    let line = table
        .lines()
        .find(|l| l.contains("accepted_values(label)"))
        .expect("the check's line");
    assert!(line.starts_with("FAIL") && line.contains("error"), "{line}");
    assert!(table.contains("{\"idx\":4,\"label\":3}"), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("labels.accepted_values(label)"));
    let stored = count(
        &pool,
        "SELECT count(*) FROM dq_results d JOIN pipeline_runs r ON r.id = d.run_id \
         WHERE r.job = 'check' AND r.status = 'failed' AND NOT d.passed",
    )
    .await;
    assert!(stored >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_history_stops_the_customer_load() {
    let (_db, pool) = database().await;
    let bucket = customer_files("etl-overlap").await;
    let l = loader(&pool, bucket.source());
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success);

    // Customer 1's periods overlap: [2019-01-01, 2019-09-01) and [2019-06-01, ...).
    bucket
        .put(
            "customer_activity.csv",
            ACTIVITY.replace("2019-01-01,2019-06-01", "2019-01-01,2019-09-01"),
        )
        .await;
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(
        err.contains("customer_activity.no_overlapping_periods (1 rows)"),
        "{err}"
    );
    let to: String = sqlx::query_scalar(
        "SELECT valid_to::text FROM customer_activity WHERE idx = 1 AND valid_from = '2019-01-01'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(to, "2019-06-01", "the previous history stays");

    // valid_to before valid_from is a row check: rejected with its line.
    bucket
        .put(
            "customer_activity.csv",
            ACTIVITY.replace("3,2019-05-05,,", "3,2019-05-05,2019-01-01,"),
        )
        .await;
    let s = load_customers(&l).await;
    let err = s.error.expect("error");
    assert!(
        err.contains("customer_activity.csv, line 8, column 3 (valid_to)"),
        "{err}"
    );
}
