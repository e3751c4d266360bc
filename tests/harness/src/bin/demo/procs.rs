//! Running the product's binaries as children of the demo (registered with [`crate::stop`]
//! so Ctrl-C ends them), and talking to a server on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

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

/// A long-running child (a server, the forwarder): registered for Ctrl-C, killed when
/// dropped.
pub struct Killed(Child);

impl Killed {
    pub fn new(child: Child) -> Killed {
        stop::register(child.id());
        Killed(child)
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        stop::unregister(self.0.id());
    }
}

pub fn http(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let r = harness::http::request(port, method, path, body)?;
    Ok((r.status, r.body))
}

pub fn predict(port: u16) -> anyhow::Result<String> {
    let (status, body) = http(port, "POST", "/predict", EXAMPLE)?;
    if status != 200 {
        bail!("POST /predict answered {status}: {body}");
    }
    Ok(body)
}

/// `[section] key = "value"` from a TOML text.
pub fn toml_string(text: &str, section: &str, key: &str) -> anyhow::Result<String> {
    let mut in_section = false;
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
