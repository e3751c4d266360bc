//! `make demo`: the main job, end to end, on this machine.
//!
//! Starts a private PostgreSQL cluster and the AWS emulator on loopback, then runs the
//! product's own binaries as a user would: `pipeline db migrate|users`, `generate` into a
//! local bucket laid out as the original one (or uploads a given folder), the loads,
//! the quality checks, the feature store, training, and `server` processes answering
//! the original example request, then `deployer init|plan|apply|publish` and two
//! blue/green deploys behind a loopback stand-in for the Elastic IP, with a live
//! prediction through the fixed endpoint after each. Services stop when the demo ends, however it ends
//! (Ctrl-C included): the harness's watchdogs see to that, and the server is a child
//! killed on the way out.
//!
//! Usage: `demo [DIR]` — with DIR, upload that folder instead of generating data.
//! Environment: DEMO_CUSTOMERS (default 150000), DEMO_MONTHS (default 36),
//! DEMO_OUT (pictures and logs, default `out/demo`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const BUCKET: &str = "ml-data";
const EXAMPLE: &str =
    r#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;

struct Steps(Vec<(String, f64)>);

impl Steps {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        println!("\n==> {name}");
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

/// Runs a product binary with its output shown, failing on a non-zero exit.
fn run_cli(bin: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    let status = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_str())))
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!(
            "`{} {}` exited with {status}",
            bin.file_name().unwrap_or_default().to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

/// Every CSV file under `dir`, as (path, key relative to `dir`).
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

/// A child process killed when dropped (the server the demo starts).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let raw = harness::http_request(port, method, path, body)
        .with_context(|| format!("{method} http://127.0.0.1:{port}{path}"))?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn predict(port: u16) -> anyhow::Result<String> {
    let (status, body) = http(port, "POST", "/predict", EXAMPLE)?;
    if status != 200 {
        bail!("POST /predict answered {status}: {body}");
    }
    Ok(body)
}

/// `[section] key = "value"` from a TOML text.
fn toml_string(text: &str, section: &str, key: &str) -> anyhow::Result<String> {
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

fn env_num(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
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
    let given = std::env::args().nth(1).map(PathBuf::from);
    let customers = env_num("DEMO_CUSTOMERS", 150_000)?;
    let months = env_num("DEMO_MONTHS", 36)?;
    let out_dir = PathBuf::from(std::env::var("DEMO_OUT").unwrap_or_else(|_| "out/demo".into()));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let pipeline = sibling_binary("pipeline")?;
    let server = sibling_binary("server")?;
    let deployer = sibling_binary("deployer")?;
    let mut steps = Steps(Vec::new());

    let pg = steps.run("start a private PostgreSQL cluster on loopback", || {
        Ok(harness::PgCluster::start()?)
    })?;
    let moto = steps.run("start the AWS emulator on loopback", || {
        Ok(harness::Moto::start()?)
    })?;
    pg.psql("postgres", "CREATE DATABASE ml")?;

    // Throwaway secrets for this run only, handed over through the environment.
    let ds_pw = harness::unique("ds");
    let source = format!("s3://{BUCKET}/raw");
    let models = format!("s3://{BUCKET}/models");
    let mut env: Vec<(&str, String)> = moto.env();
    env.push(("DATABASE_URL", pg.admin_url("ml")));
    env.push(("DS_DATABASE_URL", pg.url_for("ds_user", &ds_pw, "ml")));
    env.push(("DS_USER_PASSWORD", ds_pw.clone()));
    env.push(("MLE_USER_PASSWORD", harness::unique("mle")));
    env.push(("PIPELINE_SOURCE", source.clone()));
    env.push(("MODELS", models.clone()));
    env.push(("RUST_LOG", "warn".into()));

    steps.run("pipeline db migrate", || {
        run_cli(&pipeline, &["db", "migrate"], &env)
    })?;
    steps.run("pipeline db users", || {
        run_cli(&pipeline, &["db", "users"], &env)
    })?;

    let sdk = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(BUCKET).send().await?;
    match &given {
        None => steps.run(
            &format!("pipeline generate: {customers} customers, {months} months"),
            || {
                run_cli(
                    &pipeline,
                    &[
                        "generate",
                        "--out",
                        &source,
                        "--customers",
                        &customers.to_string(),
                        "--months",
                        &months.to_string(),
                    ],
                    &env,
                )
            },
        )?,
        Some(dir) => {
            println!("\n==> upload {} to {source}/", dir.display());
            let t = Instant::now();
            let files = files_under(dir)?;
            if files.is_empty() {
                bail!("no CSV files under {}", dir.display());
            }
            for (path, key) in &files {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                s3.put_object()
                    .bucket(BUCKET)
                    .key(format!("raw/{key}"))
                    .body(body)
                    .send()
                    .await
                    .with_context(|| format!("uploading {key}"))?;
            }
            steps.0.push((
                format!("upload {} files", files.len()),
                t.elapsed().as_secs_f64(),
            ));
        }
    }

    // The generated months run from 2020-01; stop the schedule where the data stops.
    let until = {
        let m = months.max(1) - 1;
        format!("{:04}-{:02}", 2020 + m / 12, m % 12 + 1)
    };
    steps.run("pipeline load-customers", || {
        run_cli(&pipeline, &["load-customers"], &env)
    })?;
    steps.run(&format!("pipeline catch-up (2020-01 to {until})"), || {
        run_cli(&pipeline, &["catch-up", "--until", &until], &env)
    })?;
    steps.run("pipeline build-features", || {
        run_cli(&pipeline, &["build-features"], &env)
    })?;
    steps.run("pipeline check", || run_cli(&pipeline, &["check"], &env))?;
    steps.run("pipeline status", || run_cli(&pipeline, &["status"], &env))?;
    steps.run("pipeline train (as ds_user), promote to latest", || {
        run_cli(&pipeline, &["train"], &env)
    })?;

    // The stack, as a user would run it: deploy.example.toml as it is, against the
    // emulator. The "instances" are real server processes on loopback, one per colour,
    // and a loopback forwarder stands in for the Elastic IP.
    let config = out_dir.join("deploy.toml");
    std::fs::copy(harness::repo_root().join("deploy.example.toml"), &config)
        .context("copying deploy.example.toml")?;
    let cfg_text = std::fs::read_to_string(&config)?;
    let artifacts_bucket = toml_string(&cfg_text, "artifacts", "bucket")?;
    s3.create_bucket().bucket(&artifacts_bucket).send().await?;
    let model_version = {
        let o = s3
            .get_object()
            .bucket(BUCKET)
            .key("models/latest")
            .send()
            .await?;
        let b = o.body.collect().await?.into_bytes();
        String::from_utf8_lossy(&b).trim().to_string()
    };
    env.push(("DEPLOYER_CONFIG", config.display().to_string()));

    steps.run("deployer init", || run_cli(&deployer, &["init"], &env))?;
    steps.run("deployer plan", || run_cli(&deployer, &["plan"], &env))?;
    steps.run("deployer apply", || {
        run_cli(&deployer, &["apply", "--auto-approve"], &env)
    })?;
    let server_path = server.display().to_string();
    for r in ["r1", "r2"] {
        steps.run(&format!("deployer publish --release {r}"), || {
            run_cli(
                &deployer,
                &[
                    "publish",
                    "--release",
                    r,
                    "--server-binary",
                    &server_path,
                    "--model-version",
                    &model_version,
                ],
                &env,
            )
        })?;
    }

    // Stand-ins for the two colours' instances: each serves the published model and
    // reports its release, as the boot script would make it do.
    let start_server = |release: &str| -> anyhow::Result<(Killed, u16)> {
        let port = harness::free_port();
        let child = Command::new(&server)
            .args(["--model", &models, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--release", release])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SERVER_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(out_dir.join(format!("server-{release}.log")))
                    .context("creating the server log")?,
            )
            .spawn()
            .context("starting the server")?;
        Ok((Killed(child), port))
    };
    let (_blue, blue_port) = start_server("r1")?;
    let (_green, green_port) = start_server("r2")?;
    let fixed_port = harness::free_port();
    let endpoints =
        format!("blue=http://127.0.0.1:{blue_port},green=http://127.0.0.1:{green_port}");
    let _forwarder = Killed(
        Command::new(&deployer)
            .args(["forward", "--listen", &format!("127.0.0.1:{fixed_port}")])
            .args(["--endpoint", &format!("blue=http://127.0.0.1:{blue_port}")])
            .args([
                "--endpoint",
                &format!("green=http://127.0.0.1:{green_port}"),
            ])
            .args(["--delay", "2s", "--poll", "200ms"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(out_dir.join("forwarder.log"))
                    .context("creating the forwarder log")?,
            )
            .spawn()
            .context("starting the Elastic IP forwarder")?,
    );
    let mut deploy_env = env.clone();
    deploy_env.push(("DEPLOYER_ENDPOINTS", endpoints));
    deploy_env.push((
        "DEPLOYER_FIXED_ENDPOINT",
        format!("http://127.0.0.1:{fixed_port}"),
    ));
    let deploy = |release: &str| {
        run_cli(
            &deployer,
            &[
                "deploy",
                "--release",
                release,
                "--probe-interval",
                "200ms",
                "--health-deadline",
                "60s",
                "--rollback-window",
                "3s",
            ],
            &deploy_env,
        )
    };
    steps.run("deployer deploy --release r1 (blue/green)", || deploy("r1"))?;
    let answer = steps.run(
        &format!("a live prediction through the fixed endpoint 127.0.0.1:{fixed_port}"),
        || predict(fixed_port),
    )?;
    steps.run("deployer deploy --release r2 over r1 (blue/green)", || {
        deploy("r2")
    })?;
    let second = steps.run("the same prediction, now served by r2", || {
        let start = Instant::now();
        loop {
            let (_, v) = http(fixed_port, "GET", "/version", "")?;
            if v.contains("\"r2\"") {
                return predict(fixed_port);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the fixed endpoint still serves {v} 30 s after the deploy");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })?;
    steps.run("deployer status", || {
        run_cli(&deployer, &["status"], &deploy_env)
    })?;
    steps.run("deployer history", || {
        run_cli(&deployer, &["history"], &env)
    })?;
    let port = fixed_port;

    println!("\nsummary");
    for (name, secs) in &steps.0 {
        println!("  {secs:>7.2} s  {name}");
    }
    println!("\nrequest:  {EXAMPLE}");
    println!("answer:   {}   (release r1)", answer.trim());
    println!("answer:   {}   (release r2)", second.trim());
    println!(
        "\nexample, through the fixed endpoint (it stops with the demo):\n  curl -s -X POST http://127.0.0.1:{port}/predict -d '{EXAMPLE}'"
    );
    println!(
        "\nPostgreSQL on 127.0.0.1:{}, the AWS emulator on {}, the servers and the forwarder stop now.",
        pg.port(),
        moto.endpoint()
    );
    Ok(())
}
