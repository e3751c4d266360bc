//! Starts the local cloud (the emulator with AWS's delays, the instance runner, the
//! Elastic IP stand-ins), prints where it is, and runs until Ctrl-C or SIGTERM:
//!
//! ```text
//! cargo run -p harness --bin local-cloud
//! export AWS_ENDPOINT_URL=http://127.0.0.1:PORT
//! …
//! ```
//!
//! The `export` lines on stdout can be `eval`ed by a shell; everything else goes to
//! stderr. `LOCAL_CLOUD_AWS` (`off`, or JSON such as `{"instance_s": 5}`) and
//! `LOCAL_CLOUD_EIP_DELAY_MS` change the behaviour; `--json` prints one JSON line instead.

use std::io::Write as _;

use anyhow::Context as _;
use harness::cloud::{LocalCloud, LocalCloudOptions};

fn main() -> anyhow::Result<()> {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let opts = LocalCloudOptions::from_env()?;
    let aws = opts.aws.to_json();
    let cloud = LocalCloud::start(opts).context("starting the local cloud")?;
    let moto = cloud.moto();
    let mut out = std::io::stdout().lock();
    if json {
        let env: serde_json::Map<String, serde_json::Value> = moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let line = serde_json::json!({
            "endpoint": moto.endpoint(),
            "env": env,
            "address_map": cloud.address_map_path(),
            "sandbox": cloud.sandbox(),
            "aws": serde_json::from_str::<serde_json::Value>(&aws)?,
        });
        writeln!(out, "{line}")?;
    } else {
        for (k, v) in moto.env() {
            writeln!(out, "export {k}={v}")?;
        }
        eprintln!("local cloud: emulator {}", moto.endpoint());
        eprintln!("local cloud: AWS behaviours {aws}");
        eprintln!(
            "local cloud: address map {}",
            cloud.address_map_path().display()
        );
        eprintln!(
            "local cloud: instances boot under {}/instances/<id>/",
            cloud.sandbox().display()
        );
        eprintln!("local cloud: Ctrl-C stops everything");
    }
    out.flush()?;
    drop(out);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    drop(cloud);
    Ok(())
}
