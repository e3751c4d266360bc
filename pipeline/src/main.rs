//! `pipeline`: the command line over the pipeline library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use pipeline::db;

mod etl_cli;

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
    Db(DbCommand),
    /// ETL, schedule, quality checks, features and the data generator.
    #[command(flatten)]
    Etl(etl_cli::EtlCommand),
    /// Train, evaluate and publish a model from feature_store (read as ds_user).
    Train(pipeline::train::TrainArgs),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Apply the SQL migrations that are not applied yet (idempotent).
    Migrate,
    /// Create or update the login users ds_user and mle_user, with passwords from
    /// DS_USER_PASSWORD and MLE_USER_PASSWORD (idempotent).
    Users,
}

fn database_url(cli: &Cli) -> anyhow::Result<&str> {
    cli.database_url
        .as_deref()
        .context("no database given: set DATABASE_URL or pass --database-url")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Etl(cmd) => etl_cli::run(cmd, cli.database_url.as_deref()).await?,
        Command::Train(args) => pipeline::train::cli(args).await?,
        Command::Db(DbCommand::Migrate) => {
            let pool = db::connect(database_url(&cli)?).await?;
            let report = db::migrate(&pool).await?;
            if report.applied.is_empty() {
                println!("migrations: up to date ({} applied before)", report.already);
            } else {
                println!(
                    "migrations: applied {:?} ({} applied before)",
                    report.applied, report.already
                );
            }
        }
        Command::Db(DbCommand::Users) => {
            // Read the passwords before connecting: refuse early, touch nothing.
            let users = db::UserSpec::from_env()?;
            let pool = db::connect(database_url(&cli)?).await?;
            for (user, change) in db::ensure_users(&pool, &users).await? {
                println!("{user}: {change:?}");
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
