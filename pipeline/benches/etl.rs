//! ETL benchmark: the full generated dataset loaded by `pipeline` (the release binary,
//! as users run it: `load-customers`, then `catch-up` of the months; a local directory
//! source, same validation, COPY, checks and ledger as production) beside `psql \copy`
//! of the same files into the same tables of another database in the same cluster,
//! measured in the same run: the floor. Each scale (1x = 150,000 customers) is
//! generated once; each round loads it into fresh databases. The pipeline's peak RSS
//! is read with `/usr/bin/time` (GNU time, Debian package `time`).
//!
//! Run: `cargo bench -p pipeline --bench etl` (or `bench/etl/run.sh`).
//! Environment: `ETL_BENCH_SCALES` (default `1,10`; `100` is 15 M customers, 1.6 GB of
//! files in the temp dir), `ETL_BENCH_ROUNDS` (rounds at 1x, default 5; larger scales
//! run `ETL_BENCH_ROUNDS_LARGE`, default 1), `ETL_BENCH_MONTHS` (36).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pipeline::etl::{Month, Source};
use pipeline::generate::{GenOptions, generate};

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

/// What one run of the pipeline binary took.
struct Run {
    took: Duration,
    /// Peak resident set, in KiB, when `/usr/bin/time` is there.
    max_rss_kb: Option<u64>,
}

/// Runs the release `pipeline` with `args` against `db`, under `/usr/bin/time` for
/// its peak RSS when available.
fn pipeline_cli(db: &harness::TestDb, args: &[&str]) -> Run {
    let bin = env!("CARGO_BIN_EXE_pipeline");
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.args(["-f", "maxrss_kb=%M"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("RUST_LOG");
    let started = Instant::now();
    let out = cmd.output().expect("running pipeline");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pipeline {args:?}: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let max_rss_kb = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("maxrss_kb="))
        .filter_map(|v| v.trim().parse().ok())
        .next_back();
    Run { took, max_rss_kb }
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".into(), |k| format!("{:.0} MB", k as f64 / 1024.0))
}

/// One scale's result, for the summary.
struct ScaleResult {
    scale: u64,
    rounds: u32,
    floor: Duration,
    etl: Duration,
    customers: Duration,
    rss_kb: Option<u64>,
}

async fn bench_scale(scale: u64, rounds: u32, months_n: u32) -> ScaleResult {
    let customers = 150_000 * scale;
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
        "{scale}x dataset: {} customers, {} activity rows, {} sales rows in {} files, {:.1} MB \
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
    let dir_arg = dir.display().to_string();
    let (first_arg, last_arg) = (first.to_string(), last.to_string());

    let (mut floors, mut etls, mut custs, mut rss) = (vec![], vec![], vec![], vec![]);
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
        let c = pipeline_cli(&db, &["load-customers", "--source", &dir_arg]);
        let m = pipeline_cli(
            &db,
            &[
                "catch-up", "--source", &dir_arg, "--start", &first_arg, "--until", &last_arg,
            ],
        );
        let loaded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pipeline_runs WHERE status = 'success'")
                .fetch_one(&pool)
                .await
                .expect("ledger");
        assert_eq!(loaded, i64::from(months_n) + 1, "every load succeeded");
        drop(pool);
        drop(db);
        let etl = c.took + m.took;
        println!(
            "{scale}x round {round}: psql \\copy {:.2}s (customers {:.2}s, months {:.2}s) | \
             pipeline {:.2}s (load-customers {:.2}s, peak RSS {}; {} months {:.2}s) | ratio {:.2}x",
            floor.as_secs_f64(),
            floor_customers.as_secs_f64(),
            floor_months.as_secs_f64(),
            etl.as_secs_f64(),
            c.took.as_secs_f64(),
            mb(c.max_rss_kb),
            months.len(),
            m.took.as_secs_f64(),
            etl.as_secs_f64() / floor.as_secs_f64()
        );
        floors.push(floor);
        etls.push(etl);
        custs.push(c.took);
        rss.push(c.max_rss_kb.max(m.max_rss_kb));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rss_kb = if rss.iter().all(Option::is_some) {
        Some(median(rss.into_iter().flatten().collect()))
    } else {
        None
    };
    ScaleResult {
        scale,
        rounds,
        floor: median(floors),
        etl: median(etls),
        customers: median(custs),
        rss_kb,
    }
}

#[tokio::main]
async fn main() {
    let scales: Vec<u64> = std::env::var("ETL_BENCH_SCALES")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let months_n: u32 = env_or("ETL_BENCH_MONTHS", 36);
    let rounds: u32 = env_or("ETL_BENCH_ROUNDS", 5);
    let rounds_large: u32 = env_or("ETL_BENCH_ROUNDS_LARGE", 1);
    let mut results = Vec::new();
    for &scale in &scales {
        let r = if scale <= 1 { rounds } else { rounds_large };
        results.push(bench_scale(scale, r.max(1), months_n).await);
    }
    let base_rss = results.first().and_then(|r| r.rss_kb);
    for r in &results {
        let rss_ratio = match (r.rss_kb, base_rss) {
            (Some(a), Some(b)) if r.scale != results[0].scale => {
                format!(
                    ", {:.2}x the {}x peak RSS",
                    a as f64 / b as f64,
                    results[0].scale
                )
            }
            _ => String::new(),
        };
        println!(
            "median of {} ({}x): psql \\copy {:.2}s, pipeline {:.2}s (load-customers {:.2}s, \
             peak RSS {}{rss_ratio}): {:.2}x the floor (goal < 1.0x)",
            r.rounds,
            r.scale,
            r.floor.as_secs_f64(),
            r.etl.as_secs_f64(),
            r.customers.as_secs_f64(),
            mb(r.rss_kb),
            r.etl.as_secs_f64() / r.floor.as_secs_f64()
        );
    }
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
