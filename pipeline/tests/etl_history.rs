//! A customer load answers the history and relationship checks from the rows it
//! streams (no scan of the tables afterwards), or as one combined query when the
//! activity file is not sorted, with the same answers (pass/fail, failing counts,
//! sample rows) as the five separate queries `pipeline check` runs; and it builds the
//! staged tables' indexes after the rows, so a duplicate key shows only then and is
//! traced back to its lines.

mod etl_common;

use etl_common::{count, database, load_customers, loader};
use pipeline::etl::Source;
use pipeline::etl::spec;
use pipeline::etl::validate::Validator;
use pipeline::quality::{self, CheckResult, CustomerTables, FileFacts, HISTORY_CHECKS};
use pipeline::runs::Status;
use sqlx::PgPool;

// Customers 1..=3 fine; 4: overlapping periods; 5: two open rows; 6: no profile
// (activity and label); 7: a profile, closed history only; 8: a profile, no activity;
// 9: a label without anything else. Every one of the five checks fails.
const PROFILES: &str = "idx,attr_a,attr_b,attr_c\n1,1,a,yes\n2,2,b,no\n3,3,c,yes\n\
                        4,1,a,no\n5,2,d,no\n7,3,a,yes\n8,4,b,no\n";
const LABELS: &str = "idx,label\n1,0\n2,1\n4,0\n6,1\n9,0\n";
const ACTIVITY: &str = "idx,valid_from,valid_to,scd_a,scd_b\n\
                        1,2020-01-01,2020-03-01,1,1\n1,2020-03-01,,1,1\n\
                        2,2020-01-01,,1,1\n3,2020-02-01,,1,1\n\
                        4,2020-01-01,2020-04-01,1,1\n4,2020-02-01,2020-05-01,1,1\n\
                        4,2020-03-01,,1,1\n\
                        5,2020-01-01,,1,1\n5,2020-02-01,,1,1\n\
                        6,2020-01-01,,1,1\n6,2020-02-01,2020-03-01,1,1\n\
                        7,2020-01-01,2020-02-01,1,1\n";

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

fn keys<'a>(
    results: impl IntoIterator<Item = &'a CheckResult>,
) -> Vec<(String, String, bool, i64, Vec<String>)> {
    let mut k: Vec<_> = results
        .into_iter()
        .filter(|r| HISTORY_CHECKS.contains(&(r.table.as_str(), r.check.as_str())))
        .map(key)
        .collect();
    k.sort();
    k
}

/// Fills the live tables with the test's rows.
async fn fill(conn: &mut sqlx::PgConnection) {
    for (table, text) in [
        ("customer_profiles", PROFILES),
        ("labels", LABELS),
        ("customer_activity", ACTIVITY),
    ] {
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)"
            ))
            .await
            .expect("copy");
        copy.send(text.as_bytes()).await.expect("send");
        copy.finish().await.expect("finish");
    }
}

/// The five checks as `pipeline check` runs them: one query each over the live tables,
/// filled with the test's rows (emptied again after).
async fn by_queries(pool: &PgPool) -> Vec<(String, String, bool, i64, Vec<String>)> {
    let mut conn = pool.acquire().await.expect("connection");
    fill(&mut conn).await;
    let checks: Vec<_> = quality::customer_checks()
        .into_iter()
        .filter(|c| HISTORY_CHECKS.contains(&(c.table, c.name.as_str())))
        .collect();
    assert_eq!(checks.len(), 5);
    let results = quality::run_checks(&mut conn, &checks)
        .await
        .expect("checks");
    sqlx::raw_sql("TRUNCATE customer_profiles, labels, customer_activity")
        .execute(&mut *conn)
        .await
        .expect("truncate");
    keys(&results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_history_query_answers_as_the_separate_checks() {
    let (_db, pool) = database().await;
    let expected = by_queries(&pool).await;
    let mut conn = pool.begin().await.expect("begin");
    fill(&mut conn).await;
    let mut rest = quality::customer_checks();
    let combined = quality::run_history_checks(&mut conn, &mut rest, CustomerTables::LIVE)
        .await
        .expect("combined");
    assert_eq!(combined.len(), 5, "{combined:?}");
    assert_eq!(keys(&combined), expected);
    // Every one of them fails here, so the comparison compares something.
    assert!(combined.iter().all(|r| !r.passed), "{combined:?}");
    println!("{}", quality::render(&combined));
}

/// The facts of one file's text, fed as one chunk.
fn facts_of(spec: spec::FileSpec, text: &str, facts: FileFacts) -> FileFacts {
    let mut v = Validator::new(spec, "test.csv");
    v.gather(facts);
    v.push(text.as_bytes());
    v.take_frame(true).expect("valid").expect("rows");
    v.take_facts().expect("facts")
}

/// The activity rows in another order: customer 4's periods last, newest first.
fn unsorted_activity() -> String {
    let mut lines: Vec<&str> = ACTIVITY.lines().collect();
    let header = lines.remove(0);
    let (four, mut rest): (Vec<&str>, Vec<&str>) =
        lines.into_iter().partition(|l| l.starts_with("4,"));
    rest.extend(four.into_iter().rev());
    format!("{header}\n{}\n", rest.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_facts_answer_as_the_separate_queries() {
    let (_db, pool) = database().await;
    let expected = by_queries(&pool).await;
    assert_eq!(expected.len(), 5);
    assert!(
        expected.iter().all(|k| !k.2),
        "every check fails here: {expected:?}"
    );

    let activity = facts_of(spec::customer_activity(), ACTIVITY, FileFacts::history());
    let profiles = facts_of(spec::customer_profiles(), PROFILES, FileFacts::ids());
    let labels = facts_of(spec::labels(), LABELS, FileFacts::ids());
    let mut checks = quality::customer_checks();
    let before = checks.len();
    let answered = quality::history_from_facts(&mut checks, activity, &profiles, &labels)
        .expect("sorted activity: answered from the facts");
    assert_eq!(
        checks.len(),
        before - 5,
        "the five are taken out of the list"
    );
    assert_eq!(keys(&answered), expected);

    // Not sorted by (idx, valid_from): the facts cannot walk the periods, and say so
    // (the load then runs the query), leaving the checks in the list.
    let activity = facts_of(
        spec::customer_activity(),
        &unsorted_activity(),
        FileFacts::history(),
    );
    let mut checks = quality::customer_checks();
    assert!(quality::history_from_facts(&mut checks, activity, &profiles, &labels).is_none());
    assert_eq!(checks.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_records_the_same_answers_sorted_or_not() {
    let (_db, pool) = database().await;
    let expected = by_queries(&pool).await;
    for activity in [ACTIVITY.to_string(), unsorted_activity()] {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("customer_profiles.csv"), PROFILES).expect("write");
        std::fs::write(dir.path().join("labels.csv"), LABELS).expect("write");
        std::fs::write(dir.path().join("customer_activity.csv"), &activity).expect("write");
        let source = Source::new(dir.path().to_str().expect("utf-8 path"), None).expect("source");
        let out = loader(&pool, source).load_customers().await;
        // Overlapping periods are an error-level failure: nothing is published.
        let err = out.result.expect_err("overlaps block the load").to_string();
        assert!(err.contains("no_overlapping_periods"), "{err}");
        assert_eq!(keys(&out.checks), expected, "activity:\n{activity}");
        assert_eq!(
            count(&pool, "SELECT count(*) FROM customer_activity").await,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_customer_chunks_apart_is_traced_to_its_lines() {
    let (_db, pool) = database().await;
    let bucket = etl_common::Bucket::generated("etl-dupcust", 1_500, 1, 5).await;
    let l = loader(&pool, bucket.source());
    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    let before = count(&pool, "SELECT count(*) FROM customer_profiles").await;

    // Line 1,202 repeats the customer of line 3 (the loader reads 4 KiB chunks: many
    // chunks apart, so only the primary key built after the rows can see it).
    let text = String::from_utf8(bucket.get("customer_profiles.csv").await).expect("utf8");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let third = lines[2].clone();
    let idx = third.split(',').next().expect("idx").to_string();
    lines[1201] = third;
    bucket
        .put("customer_profiles.csv", lines.join("\n") + "\n")
        .await;

    let s = load_customers(&l).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(
        err.contains("customer_profiles.csv, line 1202, column 1 (idx)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "duplicate key (idx) = ({idx}), first seen at line 3"
        )),
        "{err}"
    );
    // The published tables are the previous ones, and no staging table is left.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM customer_profiles").await,
        before
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_loading'"
        )
        .await,
        0
    );
}
