//! `pipeline`: the command line over the pipeline library. Parsing and dispatch here,
//! each command's options and output in [`cli`].

use clap::{Parser, Subcommand};

mod cli;

#[derive(Debug, Parser)]
#[command(
    name = "pipeline",
    version,
    about = "ETL, data quality, features and training"
)]
struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Database schema and users.
    #[command(subcommand)]
    Db(cli::db::DbCommand),
    /// ETL, schedule, quality checks, features and the data generator.
    #[command(flatten)]
    Etl(cli::etl::EtlCommand),
    /// Train, evaluate and publish a model from feature_store (read as ds_user).
    Train(cli::train::TrainArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let database_url = cli.database_url.as_deref();
    match &cli.command {
        Command::Db(cmd) => cli::db::run(cmd, database_url).await,
        Command::Etl(cmd) => cli::etl::run(cmd, database_url).await,
        Command::Train(args) => cli::train::run(args).await,
    }
}

fn main() -> std::process::ExitCode {
    cli::fixed_mmap_threshold();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> std::process::ExitCode {
    pipeline::logging::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
