//! The `pipeline` binary's subcommands: argument parsing over the library, and the
//! rendering of what it returns. Nothing here is reachable from the library.

pub mod db;
pub mod etl;
pub mod grid;
pub mod train;

use anyhow::Context as _;

/// `--database-url` / `DATABASE_URL`, which every command but `train` needs.
pub fn database_url(url: Option<&str>) -> anyhow::Result<&str> {
    url.context("no database given: set DATABASE_URL or pass --database-url")
}
