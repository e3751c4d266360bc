//! `make demo`: the main job, end to end, on this machine.
//!
//! Starts a private PostgreSQL cluster and the AWS emulator on loopback, builds the
//! database (`pipeline db migrate`, `pipeline db users`), uploads the input files to a
//! local bucket laid out as the original system's, and shows what is there. Services
//! stop when the demo ends, however it ends (Ctrl-C included): the harness's watchdogs
//! see to that.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

const BUCKET: &str = "ml-data";

struct Steps(Vec<(String, f64)>);

impl Steps {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        println!("==> {name}");
        let t = Instant::now();
        let out = f().with_context(|| format!("step failed: {name}"))?;
        self.0.push((name.to_string(), t.elapsed().as_secs_f64()));
        Ok(out)
    }
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the demo binary")?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (`cargo build --bins`)",
            p.display()
        );
    }
    Ok(p)
}

fn run_cli(bin: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} exited with {}: {}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every file under `dir`, as (path, key relative to `dir`).
fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let data = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(harness::fixtures_dir);
    let pipeline = sibling_binary("pipeline")?;
    let mut steps = Steps(Vec::new());

    let pg = steps.run("start a private PostgreSQL cluster on loopback", || {
        Ok(harness::PgCluster::start()?)
    })?;
    let moto = steps.run("start the AWS emulator on loopback", || {
        Ok(harness::Moto::start()?)
    })?;
    pg.psql("postgres", "CREATE DATABASE ml")?;

    // Throwaway secrets for this run only, handed over through the environment.
    let mut env: Vec<(&str, String)> = moto.env();
    env.push(("DATABASE_URL", pg.admin_url("ml")));
    env.push(("DS_USER_PASSWORD", harness::unique("ds")));
    env.push(("MLE_USER_PASSWORD", harness::unique("mle")));
    env.push(("RUST_LOG", "warn".into()));

    steps.run("pipeline db migrate", || {
        print!("{}", run_cli(&pipeline, &["db", "migrate"], &env)?);
        Ok(())
    })?;
    steps.run("pipeline db users", || {
        print!("{}", run_cli(&pipeline, &["db", "users"], &env)?);
        Ok(())
    })?;

    let sdk = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    println!("==> upload {} to s3://{BUCKET}/", data.display());
    let t = Instant::now();
    s3.create_bucket().bucket(BUCKET).send().await?;
    let files = files_under(&data)?;
    if files.is_empty() {
        bail!("no CSV files under {}", data.display());
    }
    for (path, key) in &files {
        let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body)
            .send()
            .await
            .with_context(|| format!("uploading {key}"))?;
    }
    steps.0.push((
        format!("upload {} files", files.len()),
        t.elapsed().as_secs_f64(),
    ));

    println!("\ns3://{BUCKET}/");
    let listing = s3.list_objects_v2().bucket(BUCKET).send().await?;
    for o in listing.contents() {
        println!(
            "  {:>10} bytes  {}",
            o.size().unwrap_or_default(),
            o.key().unwrap_or_default()
        );
    }

    println!("\nsummary");
    for (name, secs) in &steps.0 {
        println!("  {secs:>7.2} s  {name}");
    }
    println!(
        "\nPostgreSQL on 127.0.0.1:{} and the AWS emulator on {}; both stop now.",
        pg.port(),
        moto.endpoint()
    );
    Ok(())
}
