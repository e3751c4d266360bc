//! `make demo`: the main job, end to end, on this machine.
//!
//! Starts a private PostgreSQL cluster and the AWS emulator on loopback, then runs the
//! product's own binaries as a user would: `pipeline db migrate|users`, `generate` into a
//! local bucket laid out as the original one (or uploads a given folder), the loads,
//! the quality checks, the feature store, training, and `server` processes answering
//! the original example request, then `deployer init|plan|apply|publish` and two
//! blue/green deploys behind a loopback stand-in for the Elastic IP, with a live
//! prediction through the fixed endpoint after each.
//!
//! Then it runs the job a second time against the same services, as a user re-running
//! it would (loads, catch-up, features, checks, training, plan/apply, a third release),
//! and fails unless the counts moved by exactly one more model and one more release:
//! same table rows, same running instances. The pictures (monthly sales, the run grid,
//! the model's evaluation) go to the output folder.
//!
//! Every process the demo starts is registered; Ctrl-C or SIGTERM at any point stops
//! them all (`kill -TERM`, then `-KILL` after 5 s) and exits 130. PostgreSQL and the
//! emulator stop with the demo whatever ends it: the harness's watchdogs see to that.
//!
//! Usage: `demo [DIR]` — with DIR, upload that folder instead of generating data.
//! Environment: DEMO_CUSTOMERS (default 150000), DEMO_MONTHS (default 36),
//! DEMO_OUT (pictures and logs, default `out/demo`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

mod counts;
mod procs;
mod stop;

use counts::{compare, get_text, snapshot};
use procs::*;

/// `metrics.<part>.<key>` of an artifact's manifest, as a number.
fn metric(manifest: &serde_json::Value, part: &str, key: &str) -> f64 {
    manifest["metrics"][part][key].as_f64().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    if let Err(e) = stop::install() {
        eprintln!("error: installing the Ctrl-C handler: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = run().await;
    stop::park_if_stopping();
    match result {
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
    let pipeline = harness::workspace_bin("pipeline")?;
    let server = harness::workspace_bin("server")?;
    let deployer = harness::workspace_bin("deployer")?;
    let mut steps = Steps(Vec::new());

    let pg = steps.run("start a private PostgreSQL cluster on loopback", || {
        Ok(harness::PgCluster::start()?)
    })?;
    println!(
        "PostgreSQL on 127.0.0.1:{}, data in {}",
        pg.port(),
        pg.base_dir().display()
    );
    let moto = steps.run("start the AWS emulator on loopback", || {
        Ok(harness::Moto::start()?)
    })?;
    println!("the AWS emulator on {}", moto.endpoint());
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

    let s3 = moto.s3_client().await;
    let ec2 = moto.ec2_client().await;
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
    // The stack, as a user would run it: deploy.example.toml as it is, against the
    // emulator. The "instances" are real server processes on loopback, one per colour,
    // and a loopback forwarder stands in for the Elastic IP.
    let config = out_dir.join("deploy.toml");
    std::fs::copy(harness::repo_root().join("deploy.example.toml"), &config)
        .context("copying deploy.example.toml")?;
    let cfg_text = std::fs::read_to_string(&config)?;
    let artifacts_bucket = toml_string(&cfg_text, "artifacts", "bucket")?;
    s3.create_bucket().bucket(&artifacts_bucket).send().await?;
    env.push(("DEPLOYER_CONFIG", config.display().to_string()));

    let out_arg = out_dir.display().to_string();
    // The data part of the job; the second pass runs it again, unchanged.
    let data_steps = |steps: &mut Steps, pass: &str| -> anyhow::Result<()> {
        steps.run(&format!("{pass}pipeline load-customers"), || {
            run_cli(&pipeline, &["load-customers"], &env)
        })?;
        steps.run(
            &format!("{pass}pipeline catch-up (2020-01 to {until})"),
            || run_cli(&pipeline, &["catch-up", "--until", &until], &env),
        )?;
        steps.run(&format!("{pass}pipeline build-features"), || {
            run_cli(&pipeline, &["build-features"], &env)
        })?;
        steps.run(&format!("{pass}pipeline check"), || {
            run_cli(&pipeline, &["check"], &env)
        })?;
        steps.run(&format!("{pass}pipeline status"), || {
            run_cli(&pipeline, &["status"], &env)
        })?;
        steps.run(&format!("{pass}pipeline report --out {out_arg}"), || {
            run_cli(&pipeline, &["report", "--out", &out_arg], &env)
        })?;
        steps.run(
            &format!("{pass}pipeline train (as ds_user), promote to latest"),
            || run_cli(&pipeline, &["train"], &env),
        )
    };
    data_steps(&mut steps, "")?;

    let model_version = get_text(&s3, BUCKET, "models/latest")
        .await?
        .trim()
        .to_string();

    steps.run("deployer init", || run_cli(&deployer, &["init"], &env))?;
    steps.run("deployer plan", || run_cli(&deployer, &["plan"], &env))?;
    steps.run("deployer apply", || {
        run_cli(&deployer, &["apply", "--auto-approve"], &env)
    })?;
    let server_path = server.display().to_string();
    let publish = |steps: &mut Steps, release: &str, model_version: &str| {
        steps.run(&format!("deployer publish --release {release}"), || {
            run_cli(
                &deployer,
                &[
                    "publish",
                    "--release",
                    release,
                    "--server-binary",
                    &server_path,
                    "--model-version",
                    model_version,
                ],
                &env,
            )
        })
    };
    for r in ["r1", "r2"] {
        publish(&mut steps, r, &model_version)?;
    }

    // Stand-ins for the two colours' instances: each serves the published model and
    // reports its release, as the boot script would make it do.
    let start_server = |release: &str, port: u16| -> anyhow::Result<Killed> {
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
        Ok(Killed::new(child))
    };
    let (blue_port, green_port) = (harness::free_port(), harness::free_port());
    let mut stand_ins: BTreeMap<&str, (u16, Killed)> = BTreeMap::new();
    stand_ins.insert("blue", (blue_port, start_server("r1", blue_port)?));
    stand_ins.insert("green", (green_port, start_server("r2", green_port)?));
    let fixed_port = harness::free_port();
    let endpoints =
        format!("blue=http://127.0.0.1:{blue_port},green=http://127.0.0.1:{green_port}");
    let _forwarder = Killed::new(
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
    let served_by = |release: &str| -> anyhow::Result<String> {
        let start = Instant::now();
        let want = format!("\"{release}\"");
        loop {
            let (_, v) = http(fixed_port, "GET", "/version", "")?;
            if v.contains(&want) {
                return predict(fixed_port);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the fixed endpoint still serves {v} 30 s after the deploy");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    steps.run("deployer deploy --release r1 (blue/green)", || deploy("r1"))?;
    let answer = steps.run(
        &format!("a live prediction through the fixed endpoint 127.0.0.1:{fixed_port}"),
        || predict(fixed_port),
    )?;
    steps.run("deployer deploy --release r2 over r1 (blue/green)", || {
        deploy("r2")
    })?;
    let second = steps.run("the same prediction, now served by r2", || served_by("r2"))?;
    steps.run("deployer status", || {
        run_cli(&deployer, &["status"], &deploy_env)
    })?;

    // The second pass: the same job again over the same services, as a user re-running
    // it would. It may add one model version and one release, nothing else.
    let before = snapshot(&pg, &s3, &ec2, &artifacts_bucket).await?;
    println!("\n==> second pass: the same job again, against the same services");
    data_steps(&mut steps, "re-run: ")?;
    steps.run("re-run: deployer plan (no change expected)", || {
        let (status, _) = spawn_wait(&deployer, &["plan", "--detailed-exitcode"], &env, false)?;
        match status.code() {
            Some(0) => Ok(()),
            Some(2) => {
                bail!("`deployer plan` wants changes after an apply: the stack did not converge")
            }
            _ => bail!("`deployer plan --detailed-exitcode` exited with {status}"),
        }
    })?;
    steps.run("re-run: deployer apply (no change expected)", || {
        run_cli(&deployer, &["apply", "--auto-approve"], &env)
    })?;
    let model_version3 = get_text(&s3, BUCKET, "models/latest")
        .await?
        .trim()
        .to_string();
    publish(&mut steps, "r3", &model_version3)?;
    // r3 goes to the colour that does not hold the Elastic IP. A fresh instance would
    // boot as r3: restart that colour's stand-in as r3, on the same port.
    let status_json = run_cli_output(&deployer, &["status", "--json"], &deploy_env)?;
    let status: serde_json::Value =
        serde_json::from_str(&status_json).context("reading `deployer status --json`")?;
    let idle = match status["active"].as_str() {
        Some("blue") => "green",
        Some("green") => "blue",
        other => bail!("`deployer status` names no active colour ({other:?}) after two deploys"),
    };
    steps.run(
        &format!("re-run: restart the {idle} stand-in as release r3"),
        || {
            let (port, old) = stand_ins
                .remove(idle)
                .with_context(|| format!("no {idle} stand-in"))?;
            drop(old);
            let new = start_server("r3", port)?;
            stand_ins.insert(idle, (port, new));
            Ok(())
        },
    )?;
    steps.run(
        &format!("re-run: deployer deploy --release r3 ({idle}, blue/green)"),
        || deploy("r3"),
    )?;
    let third = steps.run("the same prediction, now served by r3", || served_by("r3"))?;
    steps.run("deployer history", || {
        run_cli(&deployer, &["history"], &env)
    })?;
    let after = snapshot(&pg, &s3, &ec2, &artifacts_bucket).await?;

    // The promoted model's picture and metrics, from its artifact.
    let latest = get_text(&s3, BUCKET, "models/latest")
        .await?
        .trim()
        .to_string();
    let evaluation = out_dir.join("evaluation.svg");
    let svg = get_text(&s3, BUCKET, &format!("models/{latest}/evaluation.svg")).await?;
    std::fs::write(&evaluation, svg)
        .with_context(|| format!("writing {}", evaluation.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(
        &get_text(&s3, BUCKET, &format!("models/{latest}/manifest.json")).await?,
    )
    .context("reading the artifact's manifest.json")?;

    println!("\nsummary");
    for (name, secs) in &steps.0 {
        println!("  {secs:>7.2} s  {name}");
    }
    println!(
        "\nmodel {latest} ({}), test split:",
        manifest["metrics"]["chosen"].as_str().unwrap_or("?")
    );
    println!(
        "  ROC AUC {:.4}   PR AUC {:.4}   F1 {:.3} at threshold {:.3}",
        metric(&manifest, "test", "roc_auc"),
        metric(&manifest, "test", "pr_auc"),
        metric(&manifest, "test", "f1"),
        metric(&manifest, "test", "threshold"),
    );
    println!(
        "  baseline (majority class): ROC AUC {:.4}   PR AUC {:.4}   F1 {:.3}",
        metric(&manifest, "baseline_majority_class", "roc_auc"),
        metric(&manifest, "baseline_majority_class", "pr_auc"),
        metric(&manifest, "baseline_majority_class", "f1"),
    );
    println!("\npictures:");
    for name in ["evaluation.svg", "monthly_sales.svg", "pipeline_runs.svg"] {
        println!("  {}", out_dir.join(name).display());
    }
    println!("\nrequest:  {EXAMPLE}");
    println!("answer:   {}   (release r1)", answer.trim());
    println!("answer:   {}   (release r2)", second.trim());
    println!(
        "answer:   {}   (release r3, after the re-run)",
        third.trim()
    );
    println!(
        "\nexample, through the fixed endpoint (it stops with the demo):\n  curl -s -X POST http://127.0.0.1:{fixed_port}/predict -d '{EXAMPLE}'"
    );

    let (table, wrong) = compare(&before, &after);
    println!("\nthe re-run, counted (before and after the second pass):\n{table}");
    println!(
        "PostgreSQL on 127.0.0.1:{}, the AWS emulator on {}, the servers and the forwarder stop now.",
        pg.port(),
        moto.endpoint()
    );
    if !wrong.is_empty() {
        bail!("idempotence: FAILED: {}", wrong.join("; "));
    }
    println!(
        "idempotence: OK (rows equal, model versions +1, releases +1, running instances equal)"
    );
    Ok(())
}
