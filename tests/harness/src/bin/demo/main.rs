//! `make demo`: the main job, end to end, on this machine.
//!
//! Starts a private PostgreSQL cluster and the local cloud (the AWS emulator with AWS's
//! eventual consistency, instances that really boot their user data, Elastic IPs that
//! really carry traffic; `harness::cloud`), then runs the product's own binaries as a
//! user would: `pipeline db migrate|users`, `generate` into a local bucket laid out as
//! the original one (or uploads a given folder), the loads, the quality checks, the
//! feature store, training; then `deployer init|plan|apply|publish` and two blue/green
//! deploys. No server is started by hand: each instance the deployer launches boots
//! from its user data (the real `boot.sh` downloads the published server binary from
//! S3 and installs its unit, which the local cloud starts on a loopback address of
//! that instance's own), and the deployer probes the instances through the local
//! cloud's address map. After each deploy the example request is answered through the
//! Elastic IP's own address, over plain HTTP and over HTTPS (`tls = "acme"`, Pebble as
//! the local ACME CA: `curl --cacert <Pebble's root> https://<Elastic IP>:8443/predict`
//! verifies the certificate issued for the Elastic IP at the first switch-on).
//!
//! Then it runs the job a second time against the same services, as a user re-running
//! it would (loads, catch-up, features, checks, training, plan/apply, a third release
//! booted from its own user data), and fails unless the counts moved by exactly one
//! more model and one more release: same table rows, same running and serving
//! instances. Then `deployer rollback` (the Elastic IP must serve the previous release
//! again), `status`, `history` and `destroy`, after which no instance, Elastic IP, VPC,
//! IAM role or instance profile of the app may be left. The pictures (monthly sales,
//! the run grid, the model's evaluation) and every instance's boot log and journal go
//! to the output folder.
//!
//! Every process the demo starts is registered; Ctrl-C or SIGTERM at any point stops
//! them all (`kill -TERM`, then `-KILL` after 5 s) and exits 130. PostgreSQL, the
//! emulator and the instances' processes stop with the demo whatever ends it: the
//! harness's watchdogs see to that.
//!
//! Usage: `demo [DIR]` — with DIR, upload that folder instead of generating data.
//! Environment: DEMO_CUSTOMERS (default 150000), DEMO_MONTHS (default 36),
//! DEMO_OUT (pictures and logs, default `out/demo`); the local cloud's
//! LOCAL_CLOUD_AWS and LOCAL_CLOUD_EIP_DELAY_MS (`harness::cloud::LocalCloudOptions`).

use std::net::SocketAddr;
use std::path::PathBuf;
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
mod https;
mod instances;
mod procs;
mod stop;

use counts::{compare, get_text, snapshot};
use instances::eip_address;
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
            // What the local cloud's runner saw, for an instance that did not come up.
            let out = std::env::var("DEMO_OUT").unwrap_or_else(|_| "out/demo".into());
            let log = PathBuf::from(out).join("instances/runner.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("the local cloud's runner ({}), last lines:", log.display());
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("  {l}");
                }
            }
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
    // The stack, as a user would run it: deploy.example.toml as it is.
    let config = out_dir.join("deploy.toml");
    std::fs::copy(harness::repo_root().join("deploy.example.toml"), &config)
        .context("copying deploy.example.toml")?;
    // HTTPS at the Elastic IP (tls = "acme") with Pebble as the CA; its root is trusted
    // by the deployer (`[https] roots`) and by curl below, nothing else.
    let pebble = harness::pebble::Pebble::start().context("starting pebble (the ACME CA)")?;
    let https_port = 8443;
    https::enable(&config, &pebble, https_port)?;
    println!(
        "Pebble (the local ACME CA) at {}, its root in {}",
        pebble.directory_url(),
        pebble.issuer_root_path().display()
    );
    let cfg_text = std::fs::read_to_string(&config)?;
    let app = toml_string(&cfg_text, "", "app")?;
    let artifacts_bucket = toml_string(&cfg_text, "artifacts", "bucket")?;
    let api_port: u16 = toml_string(&cfg_text, "", "api_port")?
        .parse()
        .context("deploy.example.toml: api_port")?;
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
    let cloud = steps.run(
        "start the local cloud (the AWS emulator with AWS's delays, instances that boot, Elastic IPs on loopback)",
        || {
            let mut opts = harness::cloud::LocalCloudOptions::from_env()?;
            opts.eip_ports.push(api_port);
            Ok(harness::cloud::LocalCloud::start(opts)?)
        },
    )?;
    let moto = cloud.moto();
    println!(
        "the AWS emulator on {}, the local cloud's instances under {}",
        moto.endpoint(),
        cloud.sandbox().display()
    );
    // Every instance's boot log and journal are copied to the output folder however
    // the demo ends (but by a signal), before the local cloud removes its sandbox.
    let logs = instances::SaveLogs::new(&cloud, &out_dir);
    pg.psql("postgres", "CREATE DATABASE ml")?;

    // Throwaway secrets for this run only, handed over through the environment.
    let ds_pw = harness::unique("ds");
    let source = format!("s3://{BUCKET}/raw");
    // The models go where the instances read them: the artifacts bucket's models/.
    let models = format!("s3://{artifacts_bucket}/models");
    let mut env: Vec<(&str, String)> = moto.env();
    env.push(("DATABASE_URL", pg.admin_url("ml")));
    env.push(("DS_DATABASE_URL", pg.url_for("ds_user", &ds_pw, "ml")));
    env.push(("DS_USER_PASSWORD", ds_pw.clone()));
    env.push(("MLE_USER_PASSWORD", harness::unique("mle")));
    env.push(("PIPELINE_SOURCE", source.clone()));
    env.push(("MODELS", models.clone()));
    env.push(("RUST_LOG", "warn".into()));
    env.push(("DEPLOYER_CONFIG", config.display().to_string()));

    steps.run("pipeline db migrate", || {
        run_cli(&pipeline, &["db", "migrate"], &env)
    })?;
    steps.run("pipeline db users", || {
        run_cli(&pipeline, &["db", "users"], &env)
    })?;
    // From a fresh account: `init` makes the state bucket, the lock table and the
    // artifacts bucket training publishes into.
    steps.run("deployer init", || run_cli(&deployer, &["init"], &env))?;

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

    let model_version = get_text(&s3, &artifacts_bucket, "models/latest")
        .await?
        .trim()
        .to_string();

    // `apply` makes the network, the IAM role and profile and the Elastic IP.
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

    // The deployer probes each instance's own address as in production; the address
    // map (kept by the local cloud) translates the emulator's addresses into the
    // loopback stand-ins the instances serve on. As deploy.yml does, each deploy keeps
    // the previous colour for a rollback (`--no-wait`); the next deploy replaces it.
    let address_map = cloud.address_map_path().display().to_string();
    let mut deploy_env = env.clone();
    deploy_env.push(("DEPLOYER_ADDRESS_MAP", address_map.clone()));
    let release_opts = [
        "--address-map",
        address_map.as_str(),
        "--probe-interval",
        "200ms",
        "--health-deadline",
        "120s",
        "--rollback-window",
        "10m",
        "--no-wait",
    ];
    let deploy = |release: &str| {
        let mut args = vec!["deploy", "--release", release];
        args.extend(release_opts);
        run_cli(&deployer, &args, &deploy_env)
    };
    steps.run(
        "deployer deploy --release r1 (boots from its user data)",
        || deploy("r1"),
    )?;
    let eip = steps.run("the Elastic IP's address (deployer status --json)", || {
        eip_address(&deployer, &deploy_env)
    })?;
    let through_eip = SocketAddr::from((eip, api_port));
    println!("the Elastic IP {eip}: its stand-in listens on {through_eip}");
    // The example request through the Elastic IP's own address, once it serves `release`
    // (the address follows a move after its propagation delay).
    let served_by = |release: &str| -> anyhow::Result<String> {
        let start = Instant::now();
        let want = format!("\"{release}\"");
        loop {
            let last = match http_at(through_eip, "GET", "/version", "") {
                Ok((200, v)) if v.contains(&want) => return predict_at(through_eip),
                Ok((status, v)) => format!("{status} {}", v.trim()),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the Elastic IP {through_eip} does not serve {release} 60 s after the deploy: {last}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let answer = steps.run(
        &format!("a live prediction through the Elastic IP {through_eip}, served by r1"),
        || served_by("r1"),
    )?;
    let https_at = SocketAddr::from((eip, https_port));
    let root = pebble.issuer_root_path();
    let curl = format!(
        "curl --cacert {} https://{https_at}/predict",
        root.display()
    );
    steps.run(
        &format!(
            "HTTPS through the Elastic IP: {curl} (r1's certificate, issued by Pebble for {eip})"
        ),
        || https::curl(https_at, &root),
    )?;
    steps.run("deployer deploy --release r2 over r1 (blue/green)", || {
        deploy("r2")
    })?;
    let second = steps.run(
        &format!("the same prediction through {through_eip}, now served by r2"),
        || served_by("r2"),
    )?;
    steps.run(
        &format!("HTTPS through the Elastic IP again, now r2 with the stored certificate: {curl}"),
        || https::curl(https_at, &root),
    )?;
    steps.run("deployer status", || {
        run_cli(&deployer, &["status"], &deploy_env)
    })?;

    // The second pass: the same job again over the same services, as a user re-running
    // it would. It may add one model version and one release, nothing else.
    let before = snapshot(&pg, &s3, &ec2, &artifacts_bucket, &cloud).await?;
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
    let model_version3 = get_text(&s3, &artifacts_bucket, "models/latest")
        .await?
        .trim()
        .to_string();
    publish(&mut steps, "r3", &model_version3)?;
    // r3 replaces the colour kept for the rollback (r1's): a new instance that boots r3
    // from its own user data.
    steps.run(
        "re-run: deployer deploy --release r3 (replaces r1's colour, blue/green)",
        || deploy("r3"),
    )?;
    let third = steps.run(
        &format!("the same prediction through {through_eip}, now served by r3"),
        || served_by("r3"),
    )?;
    let after = snapshot(&pg, &s3, &ec2, &artifacts_bucket, &cloud).await?;

    steps.run(
        "deployer rollback (the Elastic IP back to r2's colour)",
        || {
            let mut args = vec!["rollback"];
            args.extend(release_opts);
            run_cli(&deployer, &args, &deploy_env)
        },
    )?;
    let rolled_back = steps.run(
        &format!("the same prediction through {through_eip}, served by r2 again"),
        || served_by("r2"),
    )?;
    steps.run("deployer status", || {
        run_cli(&deployer, &["status"], &deploy_env)
    })?;
    steps.run("deployer history", || {
        run_cli(&deployer, &["history"], &env)
    })?;
    steps.run("deployer destroy --auto-approve", || {
        run_cli(&deployer, &["destroy", "--auto-approve"], &env)
    })?;
    let name = "after destroy: what is left of the app (instances, Elastic IPs, VPCs, IAM)";
    println!("\n==> {name}");
    let t = Instant::now();
    let left = instances::left_after_destroy(&ec2, moto, &app)
        .await
        .with_context(|| format!("step failed: {name}"))?;
    steps.0.push((name.to_string(), t.elapsed().as_secs_f64()));
    print!("{left}");
    let instance_logs = logs.save();

    // The promoted model's picture and metrics, from its artifact.
    let latest = get_text(&s3, &artifacts_bucket, "models/latest")
        .await?
        .trim()
        .to_string();
    let evaluation = out_dir.join("evaluation.svg");
    let svg = get_text(
        &s3,
        &artifacts_bucket,
        &format!("models/{latest}/evaluation.svg"),
    )
    .await?;
    std::fs::write(&evaluation, svg)
        .with_context(|| format!("writing {}", evaluation.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(
        &get_text(
            &s3,
            &artifacts_bucket,
            &format!("models/{latest}/manifest.json"),
        )
        .await?,
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
    println!(
        "answer:   {}   (release r1, through the Elastic IP {through_eip})",
        answer.trim()
    );
    println!(
        "answer:   {}   (release r2, through the Elastic IP {through_eip})",
        second.trim()
    );
    println!(
        "answer:   {}   (release r3, after the re-run, through the Elastic IP {through_eip})",
        third.trim()
    );
    println!(
        "answer:   {}   (release r2 again, after the rollback, through the Elastic IP {through_eip})",
        rolled_back.trim()
    );
    println!(
        "\nexample, as it was answered through the Elastic IP (destroyed since):\n  curl -s -X POST http://{through_eip}/predict -d '{EXAMPLE}'\n  {curl} -d '{EXAMPLE}'   (HTTPS, verified against Pebble's root only)"
    );
    println!("\nthe instances' boot logs and journals (each booted from its user data):");
    for path in &instance_logs {
        println!("  {}", path.display());
    }

    let (table, wrong) = compare(&before, &after);
    println!("\nthe re-run, counted (before and after the second pass):\n{table}");
    println!(
        "PostgreSQL on 127.0.0.1:{}, the local cloud (the AWS emulator on {}) stop now.",
        pg.port(),
        moto.endpoint()
    );
    if !wrong.is_empty() {
        bail!("idempotence: FAILED: {}", wrong.join("; "));
    }
    println!(
        "idempotence: OK (rows equal, model versions +1, releases +1, running and serving instances equal)"
    );
    Ok(())
}
