//! `server --model DIR|s3://BUCKET/PREFIX[@VERSION] --listen ADDR`
//!
//! Every flag can also come from the environment (shown in `--help`). The admin token
//! for `POST /admin/reload` is read from `SERVER_ADMIN_TOKEN` only (never a flag, so it
//! does not show in `ps`); without it the admin API is disabled.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use server::app::{AppConfig, AppState};
use server::metrics::Metrics;
use server::predlog::PredLog;
use server::predlog::pg::PgSinkConfig;
use server::serve::{ServeOptions, run_with_tls};
use server::source::{Fetcher, ModelSource};

#[derive(Debug, Parser)]
#[command(name = "server", version, about = "Serves the model over HTTP")]
struct Args {
    /// Model artifact root: a directory or s3://BUCKET/PREFIX, optionally @VERSION
    /// (default: the version `latest` names).
    #[arg(long, env = "SERVER_MODEL")]
    model: String,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, env = "SERVER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Release name reported by GET /version.
    #[arg(long, env = "RELEASE", default_value = concat!("server-", env!("CARGO_PKG_VERSION")))]
    release: String,
    /// Largest accepted request body, in bytes (larger: 413).
    #[arg(long, env = "SERVER_BODY_LIMIT", default_value_t = 1 << 20)]
    body_limit: usize,
    /// Most instances in one POST /predict/batch.
    #[arg(long, env = "SERVER_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Seconds in-flight requests get after SIGTERM.
    #[arg(long, env = "SERVER_SHUTDOWN_TIMEOUT", default_value_t = 10.0)]
    shutdown_timeout: f64,
    /// Seconds a client may take to send its request headers (0: no limit).
    #[arg(long, env = "SERVER_HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Longest pause, in seconds, between retries of the first model load (0: try
    /// once). The server stays not-ready, and keeps trying, until a model is in.
    #[arg(long, env = "SERVER_FIRST_LOAD_MAX_BACKOFF", default_value_t = 30.0)]
    first_load_max_backoff: f64,
    /// Append every prediction to this JSON lines file.
    #[arg(long, env = "SERVER_PREDICTION_LOG")]
    prediction_log: Option<PathBuf>,
    /// Records the prediction log may queue before it drops (and counts) them.
    #[arg(long, env = "SERVER_PREDICTION_LOG_CAPACITY", default_value_t = 10_000)]
    prediction_log_capacity: usize,
    /// Also write every prediction to the `predictions` table of this PostgreSQL
    /// database (postgres://USER:PASSWORD@HOST:PORT/DB; no TLS yet, so sslmode=require
    /// and verify-* are refused). Prefer the environment: a flag shows in `ps`.
    #[arg(long, env = "PREDICTION_DATABASE_URL", hide_env_values = true)]
    prediction_database_url: Option<String>,
    /// Most records in one COPY into the predictions table.
    #[arg(long, env = "SERVER_PREDICTION_DB_BATCH", default_value_t = 1000)]
    prediction_database_batch: usize,
    /// Milliseconds a record waits at most for its batch to fill.
    #[arg(long, env = "SERVER_PREDICTION_DB_FLUSH_MS", default_value_t = 200)]
    prediction_database_flush_ms: u64,
    /// Records the database sink may queue before it drops (and counts) them.
    #[arg(long, env = "SERVER_PREDICTION_DB_CAPACITY", default_value_t = 10_000)]
    prediction_database_capacity: usize,
    /// Log format on stderr.
    #[arg(long, env = "SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    #[command(flatten)]
    tls: server::https::TlsArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn secs(what: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{what} {v} is not a duration in seconds"))
}

async fn main_inner(args: Args) -> anyhow::Result<()> {
    let source: ModelSource = args.model.parse().context("--model")?;
    let metrics = Arc::new(Metrics::new());
    let tls = server::https::setup(&args.tls, args.listen, &metrics).await?;
    let mut predlog = PredLog::new();
    if let Some(url) = args
        .prediction_database_url
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        // Checked before anything starts: a bad URL is a startup error, one line.
        let mut cfg = PgSinkConfig::parse(url)?;
        cfg.batch = args.prediction_database_batch.max(1);
        cfg.flush_interval = Duration::from_millis(args.prediction_database_flush_ms);
        cfg.capacity = args.prediction_database_capacity.max(1);
        predlog = predlog.with_postgres(cfg, &metrics);
    }
    if let Some(p) = &args.prediction_log {
        predlog = predlog.with_file(p, args.prediction_log_capacity, &metrics)?;
    }
    let predlog = (!predlog.is_empty()).then_some(predlog);
    let admin_token = std::env::var("SERVER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if admin_token.is_none() {
        tracing::info!(
            "SERVER_ADMIN_TOKEN not set: POST /admin/reload is disabled (SIGHUP still reloads)"
        );
    }
    let state = Arc::new(AppState::new(
        AppConfig {
            release: args.release,
            body_limit: args.body_limit,
            max_batch: args.max_batch.max(1),
            admin_token,
        },
        Fetcher::new(source),
        metrics,
        predlog,
    ));
    run_with_tls(
        state,
        ServeOptions {
            listen: args.listen,
            shutdown_timeout: secs("shutdown-timeout", args.shutdown_timeout)?,
            header_read_timeout: secs("header-timeout", args.header_timeout)?,
            first_load_max_backoff: secs("first-load-max-backoff", args.first_load_max_backoff)?,
        },
        tls,
    )
    .await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(main_inner(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "server failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
