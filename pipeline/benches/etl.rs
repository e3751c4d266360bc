//! ETL benchmark: the full generated dataset (150,000 customers, 36 months by default)
//! loaded by the pipeline (S3-free: a local directory source, same validation, COPY,
//! checks and ledger as production) beside `psql \copy` of the same files into the same
//! tables of another database in the same cluster, measured in the same run: the floor.
//!
//! Run: `cargo bench -p pipeline --bench etl` (or `bench/etl/run.sh`).
//! Environment: `ETL_BENCH_CUSTOMERS`, `ETL_BENCH_MONTHS`, `ETL_BENCH_ROUNDS`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pipeline::etl::load::Loader;
use pipeline::etl::{Month, Source};
use pipeline::generate::{GenOptions, generate};
use pipeline::runs::{self, RetryPolicy, Status};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `psql \\copy` of the customer files, then (a second psql) of the months' files.
fn psql_copy(db: &harness::TestDb, dir: &Path, months: &[Month]) -> (Duration, Duration) {
    let mut script = String::new();
    let copy = |table: &str, cols: &str, file: &Path| {
        format!(
            "\\copy {table} ({cols}) FROM '{}' WITH (FORMAT csv, HEADER true)\n",
            file.display()
        )
    };
    script.push_str(&copy(
        "customer_activity",
        "idx,valid_from,valid_to,scd_a,scd_b",
        &dir.join("customer_activity.csv"),
    ));
    script.push_str(&copy(
        "customer_profiles",
        "idx,attr_a,attr_b,attr_c",
        &dir.join("customer_profiles.csv"),
    ));
    script.push_str(&copy("labels", "idx,label", &dir.join("labels.csv")));
    let customers = run_psql(db, dir, &script);
    let mut script = String::new();
    for m in months {
        script.push_str(&copy(
            "sales",
            "idx,value,date,store_idx",
            &dir.join(m.sales_file()),
        ));
    }
    (customers, run_psql(db, dir, &script))
}

fn run_psql(db: &harness::TestDb, dir: &Path, script: &str) -> Duration {
    let file = dir.join("bench.psql");
    std::fs::write(&file, script).expect("write psql script");
    let psql = harness::pg_bin().expect("pg binaries").join("psql");
    let cluster = db.cluster();
    let started = Instant::now();
    let out = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &cluster.port().to_string(),
            "-U",
            "postgres",
            "-d",
            db.name(),
        ])
        .arg("-f")
        .arg(&file)
        .env("PGPASSWORD", cluster.password())
        .output()
        .expect("running psql");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

async fn fresh(db: &harness::TestDb) -> sqlx::PgPool {
    let pool = pipeline::db::connect(&db.url()).await.expect("connect");
    pipeline::db::migrate(&pool).await.expect("migrate");
    pool
}

#[tokio::main]
async fn main() {
    // Quiet unless RUST_LOG asks (e.g. RUST_LOG=pipeline=debug for per-file and
    // per-check timings).
    if std::env::var_os("RUST_LOG").is_some() {
        pipeline::logging::init();
    }
    let customers: u64 = env_or("ETL_BENCH_CUSTOMERS", 150_000);
    let months_n: u32 = env_or("ETL_BENCH_MONTHS", 36);
    let rounds: u32 = env_or("ETL_BENCH_ROUNDS", 3);
    let dir = std::env::temp_dir().join(harness::unique("etl-bench"));
    let source = Source::Dir(dir.clone());
    let t = Instant::now();
    let report = generate(
        &source,
        &GenOptions {
            customers,
            months: months_n,
            seed: 42,
            ..Default::default()
        },
    )
    .await
    .expect("generate");
    let bytes: u64 = walk_size(&dir);
    println!(
        "dataset: {} customers, {} activity rows, {} sales rows in {} files, {:.1} MB \
         (generated in {:.1}s)",
        report.customers,
        report.activity_rows,
        report.sales_rows,
        report.sales_files,
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let first = Month::new(2020, 1).expect("month");
    let months: Vec<Month> = (0..months_n)
        .scan(first, |m, _| {
            let cur = *m;
            *m = m.next();
            Some(cur)
        })
        .collect();
    let last = *months.last().expect("at least one month");

    let mut floors = Vec::new();
    let mut etls = Vec::new();
    for round in 1..=rounds {
        // The floor: psql \copy of the raw files, no validation, no checks.
        let db = harness::postgres().database();
        let _pool = fresh(&db).await;
        let (floor_customers, floor_months) = psql_copy(&db, &dir, &months);
        let floor = floor_customers + floor_months;
        drop(db);

        // The pipeline: validation, COPY, table checks, ledger, monthly aggregates.
        let db = harness::postgres().database();
        let pool = fresh(&db).await;
        let mut loader = Loader::new(pool.clone(), source.clone());
        loader.progress = false;
        let policy = RetryPolicy::default();
        let started = Instant::now();
        let s = runs::load_customers(&loader, &policy)
            .await
            .expect("ledger");
        assert_eq!(s.status, Status::Success, "{:?}", s.error);
        let customers_took = started.elapsed();
        let list = runs::catch_up(&loader, first, last, &policy)
            .await
            .expect("ledger");
        assert!(list.iter().all(|s| s.status == Status::Success));
        let etl = started.elapsed();
        drop(pool);
        drop(db);
        println!(
            "round {round}: psql \\copy {:.2}s (customers {:.2}s, months {:.2}s) | pipeline {:.2}s \
             (customers {:.2}s, {} months {:.2}s) | ratio {:.2}x",
            floor.as_secs_f64(),
            floor_customers.as_secs_f64(),
            floor_months.as_secs_f64(),
            etl.as_secs_f64(),
            customers_took.as_secs_f64(),
            months.len(),
            (etl - customers_took).as_secs_f64(),
            etl.as_secs_f64() / floor.as_secs_f64()
        );
        floors.push(floor);
        etls.push(etl);
    }
    floors.sort();
    etls.sort();
    let (f, e) = (floors[floors.len() / 2], etls[etls.len() / 2]);
    println!(
        "median of {rounds}: psql \\copy {:.2}s, pipeline {:.2}s: {:.2}x the floor (goal <= 1.5x)",
        f.as_secs_f64(),
        e.as_secs_f64(),
        e.as_secs_f64() / f.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn walk_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += walk_size(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}
