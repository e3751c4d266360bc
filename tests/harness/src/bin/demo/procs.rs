//! Running the product's binaries as children of the demo (registered with [`crate::stop`]
//! so Ctrl-C ends them), and talking to a server through a loopback address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{EXAMPLE, stop};

pub fn bin_name(bin: &Path) -> String {
    bin.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Runs a product binary with its output shown (or captured), registered for Ctrl-C.
pub fn spawn_wait(
    bin: &Path,
    args: &[&str],
    env: &[(&str, String)],
    capture: bool,
) -> anyhow::Result<(ExitStatus, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let pid = child.id();
    stop::register(pid);
    let out = child.stdout.take().map(|mut o| {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut o, &mut s);
        s
    });
    let status = child.wait();
    stop::unregister(pid);
    if let Ok(s) = &status {
        stop::settle(s);
    }
    let status = status.with_context(|| format!("waiting for {}", bin.display()))?;
    Ok((status, out.unwrap_or_default()))
}

/// Runs a product binary with its output shown, failing on a non-zero exit.
pub fn run_cli(bin: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    run_checked(bin, args, env, false).map(drop)
}

/// Runs a product binary and returns its standard output, failing on a non-zero exit.
pub fn run_cli_output(bin: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
    run_checked(bin, args, env, true)
}

/// [`spawn_wait`], a non-zero exit an error; the output when captured.
fn run_checked(
    bin: &Path,
    args: &[&str],
    env: &[(&str, String)],
    capture: bool,
) -> anyhow::Result<String> {
    let (status, out) = spawn_wait(bin, args, env, capture)?;
    if !status.success() {
        bail!(
            "`{} {}` exited with {status}",
            bin_name(bin),
            args.join(" ")
        );
    }
    Ok(out)
}

/// Every CSV file under `dir`, as (path, key relative to `dir`).
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                let key = p
                    .strip_prefix(dir)?
                    .to_string_lossy()
                    .replace(std::path::MAIN_SEPARATOR, "/");
                out.push((p, key));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// One HTTP/1.1 exchange (`harness::http`) with a loopback address, such as the
/// Elastic IP's stand-in: (status, body). A non-empty body is sent as JSON.
pub fn http_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    http_with(addr, method, path, &[], body)
}

/// [`http_at`] with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let r = harness::http::request_at(addr, method, path, headers, body, Duration::from_secs(10))?;
    Ok((r.status, r.body))
}

/// The example request, answered through `addr`.
pub fn predict_at(addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = http_at(addr, "POST", "/predict", EXAMPLE)?;
    if status != 200 {
        bail!("POST http://{addr}/predict answered {status}: {body}");
    }
    Ok(body)
}

/// `[section] key = "value"` (or `key = value`) from a TOML text; section "" is the
/// top level.
pub fn toml_string(text: &str, section: &str, key: &str) -> anyhow::Result<String> {
    let mut in_section = section.is_empty();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
        } else if in_section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Ok(v.trim().trim_matches('"').to_string());
        }
    }
    if section.is_empty() {
        bail!("deploy.example.toml has no top-level {key}")
    }
    bail!("deploy.example.toml has no [{section}] {key}")
}

pub fn env_num(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}
