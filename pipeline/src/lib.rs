//! The data side of the product: ETL from S3 into PostgreSQL, data-quality checks, the
//! feature store, training and the run ledger. The `pipeline` binary is a thin clap
//! layer over these modules, so tests drive the same code.

pub mod db;
pub mod etl;
pub mod features;
pub mod generate;
pub mod logging;
pub mod progress;
pub mod quality;
pub mod report;
pub mod runs;
pub mod train;
