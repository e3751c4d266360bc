//! Bad input files: each is loaded correctly or rejected with an error naming the file,
//! line and column, with nothing of it loaded (the month keeps its previous rows).

mod etl_common;

use etl_common::{Bucket, count, database, fast_retry, loader, month_snapshot};
use pipeline::etl::Month;
use pipeline::etl::load::Loader;
use pipeline::runs::{self, RunSummary, Status};
use sqlx::PgPool;

const GOOD: &str = "idx,value,date,store_idx\n\
1,1.5,2020-03-02,1\n\
2,2.5,2020-03-03,2\n\
3,3.5,2020-03-04,3\n\
4,4.5,2020-03-05,4\n\
5,5.5,2020-03-06,5\n";

const STORES: &str = "idx,location\n1,New York\n2,Lisbon\n3,London\n4,Berlin\n5,Paris\n";

/// A database, a bucket holding [`STORES`] and a loader between them, and the month
/// every test loads: where each test starts.
struct March {
    _db: harness::TestDb,
    pool: PgPool,
    bucket: Bucket,
    l: Loader,
    march: Month,
}

impl March {
    async fn new(bucket_prefix: &str) -> March {
        let (_db, pool) = database().await;
        let bucket = Bucket::new(bucket_prefix).await;
        bucket.put("stores.csv", STORES).await;
        let l = loader(&pool, bucket.source());
        March {
            _db,
            pool,
            bucket,
            l,
            march: "2020-03".parse().expect("month"),
        }
    }
}

/// Loads `month` with the tests' fast retries; its ledger row.
async fn load(l: &Loader, month: Month) -> RunSummary {
    runs::load_month(l, month, &fast_retry())
        .await
        .expect("ledger")
}

/// (case, file content, expected error fragments; empty = loads like GOOD)
fn cases() -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    let good_lines: Vec<&str> = GOOD.lines().collect();
    let with_line = |n: usize, text: &str| {
        let mut l: Vec<String> = good_lines.iter().map(|s| s.to_string()).collect();
        l[n - 1] = text.to_string();
        (l.join("\n") + "\n").into_bytes()
    };
    vec![
        (
            "wrong header",
            GOOD.replace("idx,value,date,store_idx", "idx,value,day,store_idx").into_bytes(),
            vec!["line 1, column 3", "unexpected column `day`"],
        ),
        (
            "non-numeric value",
            with_line(4, "3,abc,2020-03-04,3"),
            vec!["line 4, column 2 (value)", "\"abc\" is not a number"],
        ),
        (
            "non-integer store",
            with_line(3, "2,2.5,2020-03-03,two"),
            vec!["line 3, column 4 (store_idx)", "not an integer"],
        ),
        (
            "bad date",
            with_line(5, "4,4.5,2020-02-30,4"),
            vec!["line 5, column 3 (date)", "not a date"],
        ),
        (
            "date outside the month",
            with_line(2, "1,1.5,2020-04-01,1"),
            vec!["line 2, column 3 (date)", "not in 2020-03"],
        ),
        (
            "missing column",
            with_line(3, "2,2.5,2020-03-03"),
            vec!["line 3, column 4", "missing field: 3 of 4 fields"],
        ),
        (
            "missing value",
            with_line(3, "2,,2020-03-03,2"),
            vec!["line 3, column 2 (value)", "missing value"],
        ),
        (
            "extra column",
            with_line(6, "5,5.5,2020-03-06,5,x"),
            vec!["line 6, column 5", "extra field"],
        ),
        (
            "header lacks a column",
            GOOD.replace("idx,value,date,store_idx", "idx,value,date").into_bytes(),
            vec!["line 1, column 4", "lacks column `store_idx`"],
        ),
        (
            "truncated last line",
            GOOD.trim_end().trim_end_matches("3-06,5").as_bytes().to_vec(),
            vec!["line 6, column 4 (store_idx)", "truncated last line: 3 of 4 fields"],
        ),
        (
            "blank line",
            with_line(3, ""),
            vec!["line 3, column 1", "empty line"],
        ),
        (
            "duplicate idx",
            with_line(5, "2,4.5,2020-03-05,4"),
            vec!["line 5, column 1 (idx)", "duplicate key"],
        ),
        ("empty file", Vec::new(), vec!["line 1, column 1", "empty file"]),
        (
            "invalid UTF-8",
            {
                let mut b = with_line(4, "3,3.5,2020-03-04,3");
                let at = GOOD.find("3,3.5").expect("line 4") + 2;
                b[at] = 0xFF;
                b
            },
            vec!["line 4, column 2", "not valid UTF-8"],
        ),
        ("CRLF line ends", GOOD.replace('\n', "\r\n").into_bytes(), vec![]),
        (
            "UTF-8 byte order mark",
            [b"\xEF\xBB\xBF".as_slice(), GOOD.as_bytes()].concat(),
            vec![],
        ),
        ("no line end on the last line", GOOD.trim_end().as_bytes().to_vec(), vec![]),
        (
            "columns in another order",
            "store_idx,idx,date,value\n1,1,2020-03-02,1.5\n2,2,2020-03-03,2.5\n3,3,2020-03-04,3.5\n\
             4,4,2020-03-05,4.5\n5,5,2020-03-06,5.5\n"
                .as_bytes()
                .to_vec(),
            vec![],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_file_is_loaded_correctly_or_rejected_with_nothing_loaded() {
    let March {
        _db,
        pool,
        bucket,
        l,
        march,
    } = March::new("etl-badfiles").await;
    let file = march.sales_file();

    // The month's previous version: the good file with other values.
    bucket.put(&file, GOOD.replace(".5,", ".25,")).await;
    let s = load(&l, march).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    let previous = month_snapshot(&pool, "2020-03").await;

    // The good file itself, as the reference for the cases that must load.
    bucket.put(&file, GOOD).await;
    let s = load(&l, march).await;
    assert_eq!(s.status, Status::Success, "{:?}", s.error);
    let good = month_snapshot(&pool, "2020-03").await;
    assert_ne!(good, previous);

    let mut failures = Vec::new();
    for (case, content, expected) in cases() {
        // Start each case from the previous version of the month.
        bucket.put(&file, GOOD.replace(".5,", ".25,")).await;
        let s = load(&l, march).await;
        assert_eq!(s.status, Status::Success);

        bucket.put(&file, content).await;
        let s = load(&l, march).await;
        let now = month_snapshot(&pool, "2020-03").await;
        if expected.is_empty() {
            if s.status != Status::Success || now != good {
                failures.push(format!(
                    "{case}: expected a correct load, got {:?} {:?}",
                    s.status, s.error
                ));
            }
            continue;
        }
        let err = s.error.clone().unwrap_or_default();
        println!("{case}: {err}");
        let names_file = err.contains("sales/2020-03-01/sales.csv");
        let all = expected.iter().all(|e| err.contains(e));
        if s.status != Status::Failed || !names_file || !all {
            failures.push(format!(
                "{case}: expected {expected:?}, got {:?}: {err}",
                s.status
            ));
        }
        if s.attempts != 1 {
            failures.push(format!("{case}: bad data was retried"));
        }
        if now != previous {
            failures.push(format!("{case}: the month's rows changed"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_only_file_fails_the_row_count_check() {
    let March {
        _db,
        pool,
        bucket,
        l,
        march,
    } = March::new("etl-hdronly").await;
    bucket
        .put(&march.sales_file(), "idx,value,date,store_idx\n")
        .await;
    let s = load(&l, march).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(err.contains("sales.row_count(>0)"), "{err}");
    assert_eq!(count(&pool, "SELECT count(*) FROM sales").await, 0);
    // The stores upsert was in the same transaction: rolled back too.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM store_locations").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_in_an_unknown_store_is_stopped_by_the_referential_check() {
    let March {
        _db,
        pool,
        bucket,
        l,
        march,
    } = March::new("etl-ref").await;
    bucket
        .put(
            &march.sales_file(),
            GOOD.replace("2020-03-04,3", "2020-03-04,9"),
        )
        .await;
    let s = load(&l, march).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(
        err.contains("relationships(store_idx -> store_locations)"),
        "{err}"
    );
    let sample: String = sqlx::query_scalar(
        "SELECT sample::text FROM dq_results WHERE NOT passed AND check_name LIKE 'relationships(store_idx%'",
    )
    .fetch_one(&pool)
    .await
    .expect("dq row");
    assert!(sample.contains("\"store_idx\": 9"), "{sample}");
    assert_eq!(count(&pool, "SELECT count(*) FROM sales").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_key_in_another_chunk_is_caught_by_copy_and_mapped_to_its_line() {
    // The loader reads 4 KiB chunks: this file spans several.
    let March {
        _db,
        pool,
        bucket,
        l,
        march,
    } = March::new("etl-dupcopy").await;
    let mut text = String::from("idx,value,date,store_idx\n");
    for i in 0..1000 {
        // Line 702 repeats the idx of line 3 (idx 1), chunks apart.
        let idx = if i == 700 { 1 } else { i };
        text.push_str(&format!(
            "{idx},{}.5,2020-03-{:02},{}\n",
            i % 10,
            1 + i % 28,
            1 + i % 5
        ));
    }
    assert!(text.len() > 3 * 4096);
    bucket.put(&march.sales_file(), text).await;
    let s = load(&l, march).await;
    assert_eq!(s.status, Status::Failed);
    let err = s.error.expect("error");
    assert!(err.contains("line 702, column 1 (idx)"), "{err}");
    assert!(err.contains("duplicate key"), "{err}");
    assert_eq!(count(&pool, "SELECT count(*) FROM sales").await, 0);
}
