//! The run ledger (`pipeline_runs`) and the monthly schedule: catch-up and backfill
//! the way a monthly DAG with `catchup=True` runs, and the status grid.
//!
//! Every attempt is one row: inserted as `running` before the work starts, closed as
//! `success`, `failed` or `waiting` (the month's file is not there yet). Transient
//! failures (network, throttling, a lost database connection) are retried with
//! exponential backoff and jitter, each retry a new row with the next attempt number;
//! a permanent failure (bad data, failed error-level check) fails that month only and
//! the schedule goes on with the next.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::etl::Month;
use crate::etl::load::{Loader, Outcome};
use crate::progress::Progress;
use crate::quality;

/// The ledger's job names.
pub const JOB_LOAD_SALES: &str = "load-sales";
pub const JOB_LOAD_CUSTOMERS: &str = "load-customers";
pub const JOB_BUILD_FEATURES: &str = "build-features";
pub const JOB_CHECK: &str = "check";
/// The period of jobs that are not monthly.
pub const PERIOD_ALL: &str = "all";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Success,
    Failed,
    Waiting,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Waiting => "waiting",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "success" => Status::Success,
            "failed" => Status::Failed,
            "waiting" => Status::Waiting,
            "skipped" => Status::Skipped,
            _ => return None,
        })
    }
}

/// How transient failures are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, ...): base × 2^(next-2), capped, with
    /// 50–100 % jitter so parallel runs do not retry in step.
    pub fn delay(&self, next: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (next.saturating_sub(2)).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// What one job for one period came to, after its retries.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub job: String,
    pub period: String,
    pub status: Status,
    /// Attempts made by this invocation.
    pub attempts: u32,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub run_id: i64,
    pub secs: f64,
}

/// Why the ledger itself failed (the database is gone).
#[derive(Debug, thiserror::Error)]
#[error("run ledger: {0}")]
pub struct LedgerError(#[from] pub sqlx::Error);

/// Opens an attempt: a `running` row with the next attempt number.
pub async fn start(pool: &PgPool, job: &str, period: &str) -> Result<(i64, i32), sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO pipeline_runs (job, period, status, attempt) \
         VALUES ($1, $2, 'running', \
           (SELECT coalesce(max(attempt), 0) + 1 FROM pipeline_runs \
            WHERE job = $1 AND period = $2)) \
         RETURNING id, attempt",
    )
    .bind(job)
    .bind(period)
    .fetch_one(pool)
    .await
}

/// Closes an attempt.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    status: Status,
    rows: Option<u64>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pipeline_runs SET status = $2, finished_at = greatest(now(), started_at), \
         rows_loaded = $3, error = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(rows.map(|r| r as i64))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Runs `work` as `job` for `period`, recording every attempt and its data-quality
/// results, retrying transient failures by `policy`.
pub async fn run_tracked<F, Fut>(
    pool: &PgPool,
    job: &str,
    period: &str,
    policy: &RetryPolicy,
    mut work: F,
) -> Result<RunSummary, LedgerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let (id, attempt) = start(pool, job, period).await?;
        let outcome = work().await;
        quality::record(pool, Some(id), &outcome.checks).await?;
        let summary = |status, rows, error| RunSummary {
            job: job.to_string(),
            period: period.to_string(),
            status,
            attempts: tries,
            rows,
            error,
            run_id: id,
            secs: started.elapsed().as_secs_f64(),
        };
        match outcome.result {
            Ok(report) => {
                let rows = report.rows();
                finish(pool, id, Status::Success, Some(rows), None).await?;
                tracing::info!(job, period, attempt, rows, "success");
                return Ok(summary(Status::Success, Some(rows), None));
            }
            Err(e) if e.is_missing() => {
                let msg = e.to_string();
                finish(pool, id, Status::Waiting, None, Some(&msg)).await?;
                tracing::info!(job, period, "waiting: {msg}");
                return Ok(summary(Status::Waiting, None, Some(msg)));
            }
            Err(e) if e.is_transient() && tries < policy.max_attempts => {
                let msg = format!("transient, will retry: {e}");
                finish(pool, id, Status::Failed, None, Some(&msg)).await?;
                let wait = policy.delay(tries + 1);
                tracing::warn!(job, period, attempt, "{msg} (in {wait:?})");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let msg = e.to_string();
                finish(pool, id, Status::Failed, None, Some(&msg)).await?;
                tracing::error!(job, period, attempt, "failed: {msg}");
                return Ok(summary(Status::Failed, None, Some(msg)));
            }
        }
    }
}

/// Which months a backfill runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rerun {
    /// Months never run, or waiting: not succeeded, not failed.
    #[default]
    Missing,
    /// Also the months whose last attempt failed.
    Failed,
    /// Every month in range.
    All,
}

impl std::str::FromStr for Rerun {
    type Err = String;
    fn from_str(s: &str) -> Result<Rerun, String> {
        match s {
            "failed" => Ok(Rerun::Failed),
            "all" => Ok(Rerun::All),
            "missing" | "none" => Ok(Rerun::Missing),
            _ => Err(format!("--rerun takes failed or all, not {s:?}")),
        }
    }
}

/// One month of a schedule: run it or not, and why.
#[derive(Clone, Debug, Serialize)]
pub struct PlanItem {
    pub month: String,
    pub last_status: Option<Status>,
    pub run: bool,
    pub reason: &'static str,
}

/// Latest status of `job` per period.
pub async fn latest_status(
    pool: &PgPool,
    job: &str,
) -> Result<BTreeMap<String, Status>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (period) period, status FROM pipeline_runs WHERE job = $1 \
         ORDER BY period, started_at DESC, id DESC",
    )
    .bind(job)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(p, s)| Some((p, Status::parse(&s)?)))
        .collect())
}

/// Decides, month by month, what a backfill over `from..=to` would do.
pub async fn plan(
    pool: &PgPool,
    from: Month,
    to: Month,
    rerun: Rerun,
) -> Result<Vec<PlanItem>, sqlx::Error> {
    let latest = latest_status(pool, JOB_LOAD_SALES).await?;
    Ok(from
        .through(to)
        .into_iter()
        .map(|m| {
            let last = latest.get(&m.to_string()).copied();
            let (run, reason) = match (last, rerun) {
                (None, _) => (true, "never run"),
                (Some(Status::Waiting), _) => (true, "was waiting for its file"),
                (Some(Status::Running), _) => (true, "last attempt did not finish"),
                (Some(Status::Skipped), _) => (true, "was skipped"),
                (Some(Status::Success), Rerun::All) => (true, "rerun all"),
                (Some(Status::Success), _) => (false, "already succeeded"),
                (Some(Status::Failed), Rerun::Failed | Rerun::All) => (true, "rerun failed"),
                (Some(Status::Failed), Rerun::Missing) => {
                    (false, "failed before (use --rerun failed)")
                }
            };
            PlanItem {
                month: m.to_string(),
                last_status: last,
                run,
                reason,
            }
        })
        .collect())
}

/// Runs the planned months in order. A failed or waiting month does not stop the
/// later ones.
pub async fn run_months(
    loader: &Loader,
    items: &[PlanItem],
    policy: &RetryPolicy,
) -> Result<Vec<RunSummary>, LedgerError> {
    let mut todo = Vec::new();
    for item in items.iter().filter(|i| i.run) {
        let month: Month = item
            .month
            .parse()
            .map_err(|e| LedgerError(sqlx::Error::Protocol(format!("{e}"))))?;
        todo.push((item.month.clone(), month));
    }
    let progress = Progress::items(loader.progress, "months", todo.len() as u64);
    // Months are independent (each replaces its own rows in its own transaction), so
    // up to `loader.jobs` run at once: a month is mostly round trips and small parses,
    // and two overlap well even on two cores. Summaries come back in month order.
    let jobs = loader.jobs.clamp(1, MAX_JOBS);
    let mut results: Vec<Option<RunSummary>> = vec![None; todo.len()];
    let mut running = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut failure = None;
    while next < todo.len() || !running.is_empty() {
        while failure.is_none() && next < todo.len() && running.len() < jobs {
            let (period, month) = todo[next].clone();
            let (loader, policy, i) = (loader.clone(), policy.clone(), next);
            running.spawn(async move {
                let summary = run_tracked(&loader.pool, JOB_LOAD_SALES, &period, &policy, || {
                    loader.load_sales(month)
                })
                .await;
                (i, summary)
            });
            next += 1;
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok((i, Ok(summary))) => {
                progress.inc(1);
                results[i] = Some(summary);
            }
            // The ledger itself failed: start no more months, let the running ones end.
            Ok((_, Err(e))) => failure = failure.or(Some(e)),
            Err(e) => {
                failure = failure.or(Some(LedgerError(sqlx::Error::Protocol(format!(
                    "a month's task failed: {e}"
                )))))
            }
        }
    }
    progress.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(results.into_iter().flatten().collect())
}

/// The most months loaded at once (the pool holds four connections; a month uses one
/// at a time).
pub const MAX_JOBS: usize = 4;

/// `catch-up`: every month from `start` to `until` that has not succeeded yet
/// (failed months included), in order.
pub async fn catch_up(
    loader: &Loader,
    start: Month,
    until: Month,
    policy: &RetryPolicy,
) -> Result<Vec<RunSummary>, LedgerError> {
    let items = plan(&loader.pool, start, until, Rerun::Failed).await?;
    run_months(loader, &items, policy).await
}

/// One cell of the status grid: the latest attempt of a job for a period.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub job: String,
    pub period: String,
    pub status: Status,
    /// Attempts recorded for this job and period, in all.
    pub attempts: i64,
    pub started_at: DateTime<Utc>,
    pub duration_secs: Option<f64>,
    pub rows_loaded: Option<i64>,
    pub error: Option<String>,
}

type CellRow = (
    String,
    String,
    String,
    i64,
    DateTime<Utc>,
    Option<f64>,
    Option<i64>,
    Option<String>,
);

/// The latest attempt of every job and period.
pub async fn status(pool: &PgPool) -> Result<Vec<Cell>, sqlx::Error> {
    let rows: Vec<CellRow> = sqlx::query_as(
        "SELECT DISTINCT ON (job, period) job, period, status, \
                count(*) OVER (PARTITION BY job, period) AS attempts, started_at, \
                extract(epoch FROM finished_at - started_at)::float8 AS secs, \
                rows_loaded, error \
         FROM pipeline_runs ORDER BY job, period, started_at DESC, id DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(job, period, status, attempts, started_at, secs, rows, error)| Cell {
                job,
                period,
                status: Status::parse(&status).unwrap_or(Status::Failed),
                attempts,
                started_at,
                duration_secs: secs,
                rows_loaded: rows,
                error,
            },
        )
        .collect())
}

/// A load-customers run, recorded.
pub async fn load_customers(
    loader: &Loader,
    policy: &RetryPolicy,
) -> Result<RunSummary, LedgerError> {
    run_tracked(&loader.pool, JOB_LOAD_CUSTOMERS, PERIOD_ALL, policy, || {
        loader.load_customers()
    })
    .await
}

/// A load-sales run for one month, recorded.
pub async fn load_month(
    loader: &Loader,
    month: Month,
    policy: &RetryPolicy,
) -> Result<RunSummary, LedgerError> {
    run_tracked(
        &loader.pool,
        JOB_LOAD_SALES,
        &month.to_string(),
        policy,
        || loader.load_sales(month),
    )
    .await
}
