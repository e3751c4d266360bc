//! `pipeline db migrate|users`.

use clap::Subcommand;

use pipeline::db;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply the SQL migrations that are not applied yet (idempotent).
    Migrate,
    /// Create or update the login users ds_user and mle_user, with passwords from
    /// DS_USER_PASSWORD and MLE_USER_PASSWORD (idempotent).
    Users,
}

pub async fn run(cmd: &DbCommand, database_url: Option<&str>) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Migrate => {
            let pool = db::connect(super::database_url(database_url)?).await?;
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
        DbCommand::Users => {
            // Read the passwords before connecting: refuse early, touch nothing.
            let users = db::UserSpec::from_env()?;
            let pool = db::connect(super::database_url(database_url)?).await?;
            for (user, change) in db::ensure_users(&pool, &users).await? {
                println!("{user}: {change:?}");
            }
        }
    }
    Ok(())
}
