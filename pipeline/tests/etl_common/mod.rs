//! Shared set-up of the ETL tests: a migrated database, a bucket in the emulator, and a
//! loader over them.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use pipeline::etl::Source;
use pipeline::etl::load::Loader;
use pipeline::runs::{self, RetryPolicy, RunSummary};
use sqlx::PgPool;

/// A fresh database with the schema.
pub async fn database() -> (harness::TestDb, PgPool) {
    let db = harness::postgres().database();
    let pool = pipeline::db::connect(&db.url()).await.expect("connect");
    pipeline::db::migrate(&pool).await.expect("migrate");
    (db, pool)
}

/// A new bucket in the shared emulator, and a client for it.
pub struct Bucket {
    pub client: aws_sdk_s3::Client,
    pub sdk: aws_config::SdkConfig,
    pub name: String,
}

impl Bucket {
    pub async fn new(prefix: &str) -> Bucket {
        let moto = harness::moto();
        let sdk = moto.sdk_config().await;
        let client = pipeline::etl::source::s3_client(&sdk);
        let name = harness::unique(prefix);
        client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        Bucket { client, sdk, name }
    }

    pub fn url(&self) -> String {
        format!("s3://{}/data", self.name)
    }

    pub fn source(&self) -> Source {
        Source::new(&self.url(), Some(&self.sdk)).expect("source")
    }

    pub async fn put(&self, rel: &str, body: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(format!("data/{rel}"))
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .expect("put object");
    }

    pub async fn delete(&self, rel: &str) {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(format!("data/{rel}"))
            .send()
            .await
            .expect("delete object");
    }

    pub async fn get(&self, rel: &str) -> Vec<u8> {
        self.client
            .get_object()
            .bucket(&self.name)
            .key(format!("data/{rel}"))
            .send()
            .await
            .expect("get object")
            .body
            .collect()
            .await
            .expect("read body")
            .into_bytes()
            .to_vec()
    }

    /// A new bucket ([`Bucket::new`]) holding a generated dataset ([`Bucket::generate`]).
    pub async fn generated(prefix: &str, customers: u64, months: u32, seed: u64) -> Bucket {
        let bucket = Bucket::new(prefix).await;
        bucket.generate(customers, months, seed).await;
        bucket
    }

    /// Generates a dataset into this bucket.
    pub async fn generate(
        &self,
        customers: u64,
        months: u32,
        seed: u64,
    ) -> pipeline::generate::GenReport {
        let opts = pipeline::generate::GenOptions {
            customers,
            months,
            seed,
            ..Default::default()
        };
        pipeline::generate::generate(&self.source(), &opts)
            .await
            .expect("generate")
    }
}

/// A loader without progress bars, with small chunks so that files span many chunks.
pub fn loader(pool: &PgPool, source: Source) -> Loader {
    let mut l = Loader::new(pool.clone(), source);
    l.progress = false;
    l.chunk_bytes = 4096;
    l
}

/// Retries quickly, for tests.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .expect("count query")
}

/// Every row of one month of sales, as text, in key order.
pub async fn month_snapshot(pool: &PgPool, month: &str) -> (String, String) {
    let first = format!("{month}-01");
    let sales: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(format('%s,%s,%s,%s', idx, value, date, store_idx), E'\\n' ORDER BY idx) \
         FROM sales WHERE sale_month = $1::date",
    )
    .bind(&first)
    .fetch_one(pool)
    .await
    .expect("sales snapshot");
    let monthly: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(format('%s,%s,%s', store_idx, location, value), E'\\n' ORDER BY store_idx) \
         FROM monthly_sales WHERE sale_month = $1::date",
    )
    .bind(&first)
    .fetch_one(pool)
    .await
    .expect("monthly snapshot");
    (sales.unwrap_or_default(), monthly.unwrap_or_default())
}

/// `load-customers` through the ledger, with [`fast_retry`].
pub async fn load_customers(l: &Loader) -> RunSummary {
    runs::load_customers(l, &fast_retry())
        .await
        .expect("ledger")
}

/// Runs the `pipeline` binary against `db_url` and the emulator, echoing its output.
pub fn pipeline(db_url: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .envs(harness::moto().env())
        .output()
        .expect("running pipeline");
    println!(
        "$ pipeline {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
