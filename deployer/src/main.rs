//! `deployer --config deploy.toml <command>`: parses the command line and dispatches.
//! The arguments, the commands and what they print live in [`cli`].

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command};
use cli::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Needs no configuration and no AWS.
    if let Command::Comment(a) = &cli.command {
        return commands::comment(a).await;
    }
    let d = commands::deployer(&cli.config).await?;
    match cli.command {
        Command::Init => commands::init(&d).await,
        Command::Plan(a) => commands::plan(&d, a).await,
        Command::Apply(a) => commands::apply(&d, a).await,
        Command::Destroy { auto_approve, lock } => commands::destroy(&d, auto_approve, lock).await,
        Command::ForceUnlock { id } => commands::force_unlock(&d, &id).await,
        Command::LockInfo => commands::lock_info(&d).await,
        Command::Publish(a) => commands::publish(&d, a).await,
        Command::Deploy {
            release,
            model,
            opts,
        } => commands::deploy(&d, release.as_deref(), model.as_deref(), opts.options()?).await,
        Command::Rollback { opts } => commands::rollback(&d, opts.options()?).await,
        Command::Retire { lock } => commands::retire(&d, lock).await,
        Command::Status { probes, json } => commands::status(&d, &probes.endpoints()?, json).await,
        Command::History { json } => commands::history(&d, json).await,
        Command::Forward(a) => commands::forward(&d, a).await,
        Command::Comment(_) => unreachable!("handled before the configuration is loaded"),
    }
}
