//! Starts a PostgreSQL cluster and the AWS emulator, prints where they are as one JSON
//! line, then waits to be killed. The harness's own tests use it to prove that services
//! are cleaned up when the process that started them dies; it is also handy by hand:
//! `cargo run -p harness --bin harness-hold` gives a throwaway database and emulator.

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let pg = harness::PgCluster::start()?;
    let moto = harness::Moto::start()?;
    let line = serde_json::json!({
        "pg_port": pg.port(),
        "pg_dir": pg.base_dir(),
        "database_url": pg.admin_url("postgres"),
        "moto_port": moto.port(),
        "aws_endpoint_url": moto.endpoint(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}
