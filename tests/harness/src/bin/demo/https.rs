//! The demo over HTTPS: `tls = "acme"` against the demo's own Pebble, and the check a
//! user would make, curl verifying the Elastic IP's certificate against Pebble's root.

use super::EXAMPLE;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// `tls = "acme"` in the demo's copy of deploy.example.toml, against `pebble`: the
/// challenge port is Pebble's `httpPort` (binding port 80 would need root).
pub(crate) fn enable(
    config: &std::path::Path,
    pebble: &harness::pebble::Pebble,
    https_port: u16,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    if text.matches("\n[https]\n").count() != 1 {
        bail!("deploy.example.toml has no single [https] section");
    }
    // Values as TOML basic strings (the paths are temp dirs: no quotes or backslashes).
    let settings = format!(
        "[https]\nport = {https_port}\nchallenge_port = {}\nacme_directory = {:?}\n\
         roots = {:?}\nacme_directory_root = {:?}\ncheck_interval_seconds = 1\n",
        pebble.http_port(),
        pebble.directory_url(),
        pebble.issuer_root_path().display().to_string(),
        pebble.api_root_path().display().to_string(),
    );
    // `tls` first: a top-level key must come before every section.
    let text = format!(
        "tls = \"acme\"\n{}",
        text.replacen("\n[https]\n", &format!("\n{settings}"), 1)
    );
    std::fs::write(config, text).with_context(|| format!("writing {}", config.display()))
}

/// `curl --cacert <root> https://<addr>/predict` with the example request: curl sends
/// no SNI for an IP address and checks the certificate's IP SAN against it. Prints the
/// answer and what curl verified.
pub(crate) fn curl(addr: SocketAddr, root: &std::path::Path) -> anyhow::Result<()> {
    let url = format!("https://{addr}/predict");
    let start = Instant::now();
    loop {
        let out = std::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--verbose",
                "--cacert",
            ])
            .arg(root)
            .args([
                "-H",
                "content-type: application/json",
                "--data",
                EXAMPLE,
                &url,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .context("running curl")?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            for l in err.lines().filter(|l| {
                l.contains("subjectAltName")
                    || l.contains("issuer:")
                    || l.contains("expire date")
                    || l.contains("SSL certificate verify")
                    || l.contains("SSL connection using")
            }) {
                println!("  {}", l.trim_start_matches("* ").trim());
            }
            println!("{}", String::from_utf8_lossy(&out.stdout).trim());
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            let last = err.lines().rfind(|l| !l.starts_with(['>', '<', '{', '}']));
            bail!("curl {url} ({}): {}", out.status, last.unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
