//! Running the product's binaries as children of the demo (registered with [`crate::stop`]
//! so Ctrl-C ends them), and talking to a server through a loopback address.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
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
    let (status, _) = spawn_wait(bin, args, env, false)?;
    if !status.success() {
        bail!(
            "`{} {}` exited with {status}",
            bin_name(bin),
            args.join(" ")
        );
    }
    Ok(())
}

/// Runs a product binary and returns its standard output, failing on a non-zero exit.
pub fn run_cli_output(bin: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
    let (status, out) = spawn_wait(bin, args, env, true)?;
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

/// One HTTP/1.1 exchange (`Connection: close`) with a loopback address, such as the
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
    if !addr.ip().is_loopback() {
        bail!("refusing to connect to {addr}: not a loopback address");
    }
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("{method} http://{addr}{path}: connecting"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    if !body.is_empty() {
        extra.push_str("Content-Type: application/json\r\n");
    }
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .with_context(|| format!("{method} http://{addr}{path}: sending"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("{method} http://{addr}{path}: reading the answer"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!(
            "{method} http://{addr}{path}: no complete answer ({} bytes)",
            raw.len()
        );
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{method} http://{addr}{path}: no status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

/// A chunked body's data.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
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
