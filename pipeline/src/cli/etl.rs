//! The ETL subcommands: argument parsing and printing over the library
//! (`pipeline::etl`, `runs`, `quality`, `features`, `report`, `generate`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use pipeline::etl::load::Loader;
use pipeline::etl::{Month, Source};
use pipeline::runs::{self, Rerun, RetryPolicy, RunSummary, Status};
use pipeline::{features, generate, quality};

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where the input files are: s3://BUCKET/PREFIX (or a local directory).
    #[arg(long, env = "PIPELINE_SOURCE")]
    source: String,
    /// Bytes parsed and sent to the database per chunk (bounds memory).
    #[arg(long, default_value_t = pipeline::etl::load::DEFAULT_CHUNK_BYTES)]
    chunk_bytes: usize,
    /// Months loaded at once by catch-up and backfill (at most 4).
    #[arg(long, env = "PIPELINE_JOBS", default_value_t = pipeline::etl::load::DEFAULT_JOBS as u8,
          value_parser = clap::value_parser!(u8).range(1..=runs::MAX_JOBS as i64))]
    jobs: u8,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Attempts per month in all, for transient failures (network, throttling, the
    /// database going away).
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// First backoff delay in milliseconds (doubles each retry, with jitter).
    #[arg(long, default_value_t = 2000)]
    retry_base_ms: u64,
}

impl RetryArgs {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_delay: Duration::from_millis(self.retry_base_ms),
            ..RetryPolicy::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EtlCommand {
    /// Load customer_activity.csv, customer_profiles.csv and labels.csv, atomically.
    LoadCustomers {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Load one month of sales (and stores.csv), replacing that month.
    LoadSales {
        #[command(flatten)]
        source: SourceArgs,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: Month,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Load every month from --start to the last complete month not yet succeeded.
    CatchUp {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long, default_value = "2020-01")]
        start: Month,
        /// Last month to consider (default: the last complete month).
        #[arg(long)]
        until: Option<Month>,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Load a range of months: by default those never run or waiting.
    Backfill {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        from: Month,
        #[arg(long)]
        to: Month,
        /// Also rerun months that failed (`failed`) or every month (`all`).
        #[arg(long)]
        rerun: Option<Rerun>,
        /// Print what would run, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// The run history: months by jobs, status, duration, attempts.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild feature_store from the current activity rows.
    BuildFeatures,
    /// Run every data-quality check on the tables, store and print the results.
    Check {
        /// Only the checks of these tables (repeat the flag for several).
        #[arg(long)]
        table: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write the pictures of the database into DIR: monthly_sales.svg (sales by store
    /// over the months) and pipeline_runs.svg (the status grid). An empty database
    /// gives pictures that say "no data".
    Report {
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Write a synthetic dataset in the real formats.
    Generate {
        /// A directory or s3://BUCKET/PREFIX.
        #[arg(long)]
        out: String,
        #[arg(long, default_value_t = 150_000)]
        customers: u64,
        #[arg(long, default_value_t = 36)]
        months: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

async fn loader(database_url: Option<&str>, s: &SourceArgs) -> anyhow::Result<Loader> {
    let source = Source::from_env_location(&s.source)
        .await
        .context("opening the source")?;
    let pool = pool(database_url).await?;
    let mut l = Loader::new(pool, source);
    l.chunk_bytes = s.chunk_bytes.max(4096);
    l.jobs = usize::from(s.jobs);
    Ok(l)
}

async fn pool(database_url: Option<&str>) -> anyhow::Result<sqlx::PgPool> {
    Ok(pipeline::db::connect(super::database_url(database_url)?).await?)
}

fn print_summaries(list: &[RunSummary]) {
    for s in list {
        let rows = s.rows.map(|r| format!(" {r} rows")).unwrap_or_default();
        let err = s
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!(
            "{} {} {}{rows} ({} attempt{}, {:.1}s){err}",
            s.job,
            s.period,
            s.status.as_str(),
            s.attempts,
            if s.attempts == 1 { "" } else { "s" },
            s.secs
        );
    }
}

fn summaries_result(list: &[RunSummary]) -> anyhow::Result<()> {
    let failed: Vec<&str> = list
        .iter()
        .filter(|s| s.status == Status::Failed)
        .map(|s| s.period.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{} run(s) failed: {}", failed.len(), failed.join(", "))
    }
}

fn single(s: RunSummary) -> anyhow::Result<()> {
    print_summaries(std::slice::from_ref(&s));
    match s.status {
        Status::Success => Ok(()),
        Status::Waiting => bail!(
            "{}",
            s.error.unwrap_or_else(|| "input not there yet".into())
        ),
        _ => bail!("{}", s.error.unwrap_or_else(|| "failed".into())),
    }
}

/// Runs one ETL subcommand.
pub async fn run(cmd: &EtlCommand, database_url: Option<&str>) -> anyhow::Result<()> {
    match cmd {
        EtlCommand::LoadCustomers { source, retry } => {
            let l = loader(database_url, source).await?;
            single(runs::load_customers(&l, &retry.policy()).await?)
        }
        EtlCommand::LoadSales {
            source,
            month,
            retry,
        } => {
            let l = loader(database_url, source).await?;
            single(runs::load_month(&l, *month, &retry.policy()).await?)
        }
        EtlCommand::CatchUp {
            source,
            start,
            until,
            retry,
        } => {
            let l = loader(database_url, source).await?;
            let until = until.unwrap_or_else(Month::last_complete);
            let list = runs::catch_up(&l, *start, until, &retry.policy()).await?;
            if list.is_empty() {
                println!("catch-up: nothing to do, {start}..{until} all succeeded");
            }
            print_summaries(&list);
            summaries_result(&list)
        }
        EtlCommand::Backfill {
            source,
            from,
            to,
            rerun,
            dry_run,
            retry,
        } => {
            if from > to {
                bail!("--from {from} is after --to {to}");
            }
            let rerun = rerun.unwrap_or_default();
            if *dry_run {
                let pool = pool(database_url).await?;
                let items = runs::plan(&pool, *from, *to, rerun).await?;
                for i in &items {
                    let last = i.last_status.map(|s| s.as_str()).unwrap_or("-");
                    let action = if i.run { "run " } else { "skip" };
                    println!("{}  {action}  last: {last:<8} {}", i.month, i.reason);
                }
                println!(
                    "dry run: {} of {} months would run",
                    items.iter().filter(|i| i.run).count(),
                    items.len()
                );
                return Ok(());
            }
            let l = loader(database_url, source).await?;
            let items = runs::plan(&l.pool, *from, *to, rerun).await?;
            let list = runs::run_months(&l, &items, &retry.policy()).await?;
            print_summaries(&list);
            summaries_result(&list)
        }
        EtlCommand::Status { json } => {
            let pool = pool(database_url).await?;
            let cells = runs::status(&pool).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&cells)?);
            } else {
                print!(
                    "{}",
                    super::grid::render_grid(&cells, std::io::stdout().is_terminal())
                );
            }
            Ok(())
        }
        EtlCommand::BuildFeatures => {
            let pool = pool(database_url).await?;
            let report = std::sync::Mutex::new(None);
            let s = runs::run_tracked(
                &pool,
                runs::JOB_BUILD_FEATURES,
                runs::PERIOD_ALL,
                &RetryPolicy::default(),
                || async {
                    let (o, r) = features::build(&pool).await;
                    if let Ok(mut slot) = report.lock() {
                        *slot = r;
                    }
                    o
                },
            )
            .await?;
            if let Some(r) = report.into_inner().ok().flatten() {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            single(s)
        }
        EtlCommand::Check { table, json } => {
            let pool = pool(database_url).await?;
            let mut checks = quality::all_checks();
            if !table.is_empty() {
                checks.retain(|c| table.iter().any(|t| t == c.table));
                if checks.is_empty() {
                    bail!("no checks for table(s) {table:?}");
                }
            }
            let (id, _) = runs::start(&pool, runs::JOB_CHECK, runs::PERIOD_ALL).await?;
            // One read-only snapshot for every check: tables compared with each other
            // (relationships, reconciliation) are seen at the same instant.
            let mut conn = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await?;
            let results = quality::run_checks_combined(&mut conn, &checks).await;
            drop(conn);
            let results = match results {
                Ok(r) => r,
                Err(e) => {
                    let msg = e.to_string();
                    runs::finish(&pool, id, Status::Failed, None, Some(&msg)).await?;
                    return Err(e.into());
                }
            };
            quality::record(&pool, Some(id), &results).await?;
            let blocking = quality::blocking_summary(&results);
            runs::finish(
                &pool,
                id,
                if blocking.is_some() {
                    Status::Failed
                } else {
                    Status::Success
                },
                None,
                blocking.as_deref(),
            )
            .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                print!("{}", quality::render(&results));
            }
            match blocking {
                Some(b) => bail!("error-level checks failed: {b}"),
                None => Ok(()),
            }
        }
        EtlCommand::Report { out } => {
            let pool = pool(database_url).await?;
            let w = pipeline::report::write(&pool, out).await?;
            if w.stores == 0 {
                println!(
                    "monthly_sales is empty: {} says \"no data\"",
                    w.monthly_sales.display()
                );
            }
            if w.cells == 0 {
                println!("no runs recorded: {} says \"no data\"", w.runs.display());
            }
            println!(
                "wrote {} ({} stores, {} months) and {} ({} cells)",
                w.monthly_sales.display(),
                w.stores,
                w.months,
                w.runs.display(),
                w.cells
            );
            Ok(())
        }
        EtlCommand::Generate {
            out,
            customers,
            months,
            seed,
        } => {
            let target = Source::from_env_location(out).await?;
            let opts = generate::GenOptions {
                customers: *customers,
                months: *months,
                seed: *seed,
                ..Default::default()
            };
            let r = generate::generate(&target, &opts).await?;
            println!(
                "generated {} customers ({} activity rows), {} positive ({:.2}%), {} sales \
                 files ({} rows) into {}",
                r.customers,
                r.activity_rows,
                r.positives,
                r.positive_rate * 100.0,
                r.sales_files,
                r.sales_rows,
                target.describe()
            );
            println!(
                "optimum AUC (true probabilities as scores): {:.4} on these labels, {:.4} \
                 expected",
                r.optimum_auc, r.expected_auc
            );
            Ok(())
        }
    }
}
