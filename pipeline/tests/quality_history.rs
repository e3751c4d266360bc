//! The customer history and relationship checks run as one query by a load give the
//! same answers (pass/fail, failing counts, sample rows) as the five separate queries
//! `pipeline check` runs, on tables that break every one of them.

mod etl_common;

use etl_common::database;
use pipeline::quality::{self, CheckResult, CustomerTables};

fn key(r: &CheckResult) -> (String, String, bool, i64, Vec<String>) {
    let mut sample: Vec<String> = r
        .sample
        .as_array()
        .map(|a| a.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    sample.sort();
    (
        r.table.clone(),
        r.check.clone(),
        r.passed,
        r.failing_rows,
        sample,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_history_query_answers_as_the_separate_checks() {
    let (_db, pool) = database().await;
    // Customers 1..=3 fine; 4: overlapping periods; 5: two open rows; 6: no profile
    // (activity and label); 7: a profile, closed history only; 8: a profile, no
    // activity; 9: a label without anything else.
    sqlx::raw_sql(
        "INSERT INTO customer_profiles (idx, attr_a, attr_b, attr_c) VALUES \
           (1, 1, 'a', 'yes'), (2, 2, 'b', 'no'), (3, 3, 'c', 'yes'), (4, 1, 'a', 'no'), \
           (5, 2, 'd', 'no'), (7, 3, 'a', 'yes'), (8, 4, 'b', 'no'); \
         INSERT INTO labels (idx, label) VALUES (1, 0), (2, 1), (4, 0), (6, 1), (9, 0); \
         INSERT INTO customer_activity (idx, valid_from, valid_to, scd_a, scd_b) VALUES \
           (1, '2020-01-01', '2020-03-01', 1, 1), (1, '2020-03-01', NULL, 1, 1), \
           (2, '2020-01-01', NULL, 1, 1), (3, '2020-02-01', NULL, 1, 1), \
           (4, '2020-01-01', '2020-04-01', 1, 1), (4, '2020-02-01', '2020-05-01', 1, 1), \
           (4, '2020-03-01', NULL, 1, 1), \
           (5, '2020-01-01', NULL, 1, 1), (5, '2020-02-01', NULL, 1, 1), \
           (6, '2020-01-01', NULL, 1, 1), (6, '2020-02-01', '2020-03-01', 1, 1), \
           (7, '2020-01-01', '2020-02-01', 1, 1);",
    )
    .execute(&pool)
    .await
    .expect("insert");

    let all = quality::customer_checks();
    let mut conn = pool.begin().await.expect("begin");
    let mut rest = all.clone();
    let combined = quality::run_history_checks(&mut conn, &mut rest, CustomerTables::LIVE)
        .await
        .expect("combined");
    assert_eq!(combined.len(), 5, "{combined:?}");
    let separate: Vec<_> = all
        .iter()
        .filter(|c| !rest.iter().any(|r| r.table == c.table && r.name == c.name))
        .cloned()
        .collect();
    let separate = quality::run_checks(&mut conn, &separate)
        .await
        .expect("separate");
    let mut a: Vec<_> = combined.iter().map(key).collect();
    let mut b: Vec<_> = separate.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Every one of them fails here, so the comparison compares something.
    assert!(combined.iter().all(|r| !r.passed), "{combined:?}");
    println!("{}", quality::render(&combined));
}
