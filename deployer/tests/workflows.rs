//! The workflows' own `run:` steps, run as written (`gha`: the runner, the stand-ins
//! and what it supplies) against the local services: the local cloud (moto with AWS's
//! delays, instances that boot their user data, Elastic IPs that carry traffic) for
//! AWS, a loopback fake of the GitHub API for the plan comment, and a private
//! PostgreSQL for the pipeline. A workflow that cannot work fails here, and each case
//! that must fail is shown failing on a mutated copy (or a checkout without the file).
//!
//! It lives with the deployer's tests because they have what it needs already: the
//! deployer binary (`CARGO_BIN_EXE_deployer`), the local cloud and wiremock; `server` and
//! `pipeline` come from the same target directory (`harness::workspace_bin`). Nothing
//! is compiled: `cargo build` steps link those binaries.
#![allow(clippy::unwrap_used)]

mod common;
mod gha;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::version_at;
use deployer::aws::Clients;
use deployer::config::Config;
use gha::{Outcome, Runner, Workflow};
use harness::cloud::LocalCloud;

const REPO: &str = "acme/shop";

fn cloud() -> &'static LocalCloud {
    // The local cloud's warnings (an instance it could not take on) show with a failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    harness::cloud::shared()
}

fn bin(name: &str) -> PathBuf {
    harness::workspace_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// One production on the shared local cloud: the repository's `deploy.toml` with only
/// the names that must be unique per test (app, buckets, table) and the API port
/// changed, `deployer init` run by the owner as the README says.
struct Production {
    dir: tempfile::TempDir,
    /// What actions/checkout leaves for `deploy.toml` (None: the repository has none).
    deploy_toml: Option<String>,
    cfg: Config,
    config_path: PathBuf,
}

impl Production {
    async fn new() -> Production {
        let dir = tempfile::tempdir().unwrap();
        let repo = harness::repo_root().join("deploy.toml");
        let text = std::fs::read_to_string(&repo)
            .unwrap_or_else(|e| panic!("{}: the workflows read it: {e}", repo.display()));
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        let app = harness::unique("wf");
        let set = |doc: &mut toml::Table, section: &str, key: &str, v: toml::Value| {
            let t = if section.is_empty() {
                doc
            } else {
                doc.get_mut(section).and_then(|s| s.as_table_mut()).unwrap()
            };
            assert!(t.contains_key(key), "deploy.toml has no {section}.{key}");
            t.insert(key.into(), v);
        };
        let s = |v: String| toml::Value::String(v);
        set(&mut doc, "", "app", s(app.clone()));
        set(&mut doc, "state", "bucket", s(format!("{app}-state")));
        set(&mut doc, "lock", "table", s(format!("{app}-locks")));
        set(
            &mut doc,
            "artifacts",
            "bucket",
            s(format!("{app}-artifacts")),
        );
        set(
            &mut doc,
            "",
            "api_port",
            toml::Value::Integer(harness::free_port().into()),
        );
        let text = toml::to_string(&doc).unwrap();
        let config_path = dir.path().join("deploy.toml");
        std::fs::write(&config_path, &text).unwrap();
        let cfg = Config::load(&config_path).unwrap();
        let p = Production {
            dir,
            deploy_toml: Some(text),
            cfg,
            config_path,
        };
        p.deployer(&["init"]);
        p
    }

    async fn clients(&self) -> Clients {
        Clients::from_sdk(&cloud().moto().sdk_config().await)
    }

    /// The deployer as the owner runs it, with administrator credentials.
    fn deployer(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .envs(cloud().moto().env())
            .env("DEPLOYER_ADDRESS_MAP", cloud().address_map_path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "deployer {args:?}:\n{text}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A model artifact in the artifacts bucket's `models/`, promoted to `latest`: a
    /// logistic model whose manifest records `test_auc` (the gate compares with it).
    async fn promote_model(&self, test_auc: f64, secs: u64) -> String {
        let mut metrics = serde_json::Map::new();
        metrics.insert("test".into(), serde_json::json!({ "roc_auc": test_auc }));
        let a = model::Artifact::new(model::ArtifactSpec {
            model: harness::artifact::model(0.1),
            code_version: "workflows-test".into(),
            training_data: "sha256:00".into(),
            metrics,
            extra_files: Default::default(),
            created: std::time::UNIX_EPOCH + Duration::from_secs(1_795_539_600 + secs),
        })
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        a.save(root.path()).unwrap();
        model::artifact::promote(root.path(), a.version()).unwrap();
        let s3 = self.clients().await.s3;
        let mut files = vec![root.path().join("latest")];
        for e in std::fs::read_dir(root.path().join(a.version())).unwrap() {
            files.push(e.unwrap().path());
        }
        // `latest` last, as training writes it.
        files.rotate_left(1);
        for f in files {
            let rel = f
                .strip_prefix(root.path())
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            s3.put_object()
                .bucket(&self.cfg.artifacts.bucket)
                .key(format!("models/{rel}"))
                .body(std::fs::read(&f).unwrap().into())
                .send()
                .await
                .unwrap();
        }
        a.version().to_string()
    }

    /// The Elastic IP's own (loopback) address.
    async fn eip(&self) -> IpAddr {
        let d = deployer::Deployer::new(self.cfg.clone(), self.clients().await);
        let st = d.read_state().await.unwrap();
        let alloc = &st.resources["aws_eip.api"].id;
        let (ip, _) = deployer::release::eip_holder(&self.clients().await, alloc)
            .await
            .unwrap();
        ip.unwrap().parse().unwrap()
    }

    /// Each instance the runner saw for this app: its status and boot log (for failures).
    async fn boot_logs(&self) -> String {
        let ec2 = self.clients().await.ec2;
        let tag = aws_sdk_ec2::types::Filter::builder()
            .name("tag:app")
            .values(&self.cfg.app)
            .build();
        let res = ec2.describe_instances().filters(tag).send().await.unwrap();
        let mut out = String::new();
        for i in res.reservations().iter().flat_map(|r| r.instances()) {
            let id = i.instance_id().unwrap_or_default();
            out.push_str(&format!(
                "--- instance {id} {:?} public {:?}: {:?}\n{}\n",
                i.state().and_then(|s| s.name()),
                i.public_ip_address(),
                cloud().status(id),
                std::fs::read_to_string(cloud().boot_log(id)).unwrap_or_default()
            ));
        }
        out
    }

    async fn state(&self) -> deployer::state::State {
        deployer::Deployer::new(self.cfg.clone(), self.clients().await)
            .read_state()
            .await
            .unwrap()
    }

    /// The runner for this production: the GitHub context of `event`, the secrets, the
    /// stand-ins, the emulator's keys for OIDC.
    fn runner(&self, event: &str, sha: &str, extra: &[(&str, String)]) -> Runner {
        let scratch = self.dir.path().join(harness::unique("runner"));
        let stand_ins = scratch.join("bin");
        gha::write_stand_ins(
            &stand_ins,
            &[
                ("deployer", PathBuf::from(env!("CARGO_BIN_EXE_deployer"))),
                ("server", bin("server")),
                ("pipeline", bin("pipeline")),
            ],
            cloud().address_map_path(),
        );
        let moto = cloud().moto();
        let keys: Vec<(String, String)> = moto
            .env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET"))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let mut table: BTreeMap<String, String> = [
            ("github.sha", sha.to_string()),
            ("github.repository", REPO.into()),
            ("github.ref", "refs/heads/main".into()),
            ("github.event_name", event.into()),
            ("github.token", "gh-test-token-of-the-run".into()),
            ("runner.os", "Linux".into()),
            (
                "secrets.AWS_DEPLOY_ROLE_ARN",
                "arn:aws:iam::000000000000:role/deploy".into(),
            ),
            (
                "secrets.AWS_PLAN_ROLE_ARN",
                "arn:aws:iam::000000000000:role/plan".into(),
            ),
            (
                "secrets.AWS_PIPELINE_ROLE_ARN",
                "arn:aws:iam::000000000000:role/pipeline".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            table.insert((*k).to_string(), v.clone());
        }
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", stand_ins.display());
        Runner {
            table,
            machine_env: vec![
                ("PATH".into(), path),
                ("HOME".into(), scratch.display().to_string()),
                ("LANG".into(), "C.UTF-8".into()),
                ("AWS_ENDPOINT_URL".into(), moto.endpoint()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ],
            aws_keys: keys,
            checkout: self
                .deploy_toml
                .iter()
                .map(|t| ("deploy.toml".to_string(), t.clone()))
                .collect(),
            stubs: [("./.github/workflows/ci.yml".to_string(), Outcome::Success)]
                .into_iter()
                .collect(),
            overrides: BTreeMap::new(),
            scratch,
        }
    }
}

/// Waits (the Elastic IP's move propagates) until `ip:port` reports `want`; returns
/// what it reports last.
fn served(ip: IpAddr, port: u16, want: (&str, &str)) -> Option<(String, String)> {
    common::wait_version(ip, port, want.0, Some(want.1), Duration::from_secs(20))
}

fn no_inputs() -> BTreeMap<String, String> {
    BTreeMap::new()
}

async fn run_blocking(
    runner: Runner,
    wf: Workflow,
    inputs: BTreeMap<String, String>,
) -> gha::WorkflowRun {
    tokio::task::spawn_blocking(move || runner.run(&wf, &inputs))
        .await
        .unwrap()
}

fn published_model(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.split("(model ").nth(1))
        .map(|m| m.trim_end_matches(").").trim_end_matches(')').to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_yml_on_a_push_serves_the_commit_with_the_model_it_pinned_and_fails_without_the_config_or_the_public_probe()
 {
    let p = Production::new().await;
    let m0 = p.promote_model(0.6, 0).await;
    let port = p.cfg.api_port;

    // The push: checks pass, publish pins `latest` (m0), apply, deploy, status.
    let sha = "1111111111111111111111111111111111111111";
    let run = run_blocking(
        p.runner("push", sha, &[]),
        Workflow::load(".github/workflows/deploy.yml"),
        no_inputs(),
    )
    .await;
    assert_eq!(run.ids(), ["checks", "deploy", "model"], "{}", run.log());
    let job = run.job("deploy");
    assert_eq!(
        job.result,
        Outcome::Success,
        "{}\n{}",
        run.log(),
        p.boot_logs().await
    );
    assert_eq!(run.job("model").result, Outcome::Skipped);
    assert_eq!(
        published_model(&job.step("publish").log).as_deref(),
        Some(m0.as_str()),
        "{}",
        job.step("publish").log
    );
    let status = &job.step("status").log;
    assert!(
        status.contains(&format!("release {sha} model {m0}")) && status.contains("healthy"),
        "{status}"
    );
    let eip = p.eip().await;
    assert_eq!(
        served(eip, port, (sha, &m0)),
        Some((sha.to_string(), m0.clone()))
    );

    // A commit whose checks failed is never deployed.
    let sha2 = "2222222222222222222222222222222222222222";
    let mut r = p.runner("push", sha2, &[]);
    r.stubs
        .insert("./.github/workflows/ci.yml".into(), Outcome::Failure);
    let run = run_blocking(
        r,
        Workflow::load(".github/workflows/deploy.yml"),
        no_inputs(),
    )
    .await;
    assert_eq!(run.job("deploy").result, Outcome::Skipped, "{}", run.log());

    // Without --allow-public-probes the gate refuses the instance's address, as on a
    // real runner: the job fails and the address stays where it was.
    let text =
        std::fs::read_to_string(harness::repo_root().join(".github/workflows/deploy.yml")).unwrap();
    assert!(text.contains(" --allow-public-probes"));
    let mutated = Workflow::from_text(
        ".github/workflows/deploy.yml",
        &text.replace(" --allow-public-probes", ""),
    );
    let run = run_blocking(p.runner("push", sha2, &[]), mutated, no_inputs()).await;
    let job = run.job("deploy");
    assert_eq!(job.result, Outcome::Failure, "{}", run.log());
    assert_eq!(job.step("deploy").outcome, Outcome::Failure);
    assert!(
        job.step("deploy").log.contains("loopback"),
        "{}",
        job.step("deploy").log
    );
    assert_eq!(version_at(eip, port), Some((sha.to_string(), m0.clone())));

    // Without deploy.toml in the repository, the first step that reads it fails.
    let mut r = p.runner("push", sha2, &[]);
    r.checkout.clear();
    let run = run_blocking(
        r,
        Workflow::load(".github/workflows/deploy.yml"),
        no_inputs(),
    )
    .await;
    let job = run.job("deploy");
    assert_eq!(job.result, Outcome::Failure, "{}", run.log());
    assert!(job.log().contains("deploy.toml"), "{}", job.log());
    assert_eq!(job.step("deploy").outcome, Outcome::Skipped);
    assert_eq!(version_at(eip, port), Some((sha.to_string(), m0)));
}

fn pr_table(head_repo: &str) -> Vec<(&'static str, String)> {
    vec![
        ("github.event.pull_request.number", "42".into()),
        (
            "github.event.pull_request.head.repo.full_name",
            head_repo.into(),
        ),
        (
            "github.event.pull_request.head.sha",
            "3333333333333333333333333333333333333333".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_yml_plans_while_a_deploy_holds_the_lock_and_keeps_one_comment() {
    let p = Production::new().await;
    let (api, comments) = common::github::start().await;
    // A deploy holds the state lock for the whole plan.
    let d = deployer::Deployer::new(p.cfg.clone(), p.clients().await);
    let guard = d.locker().acquire("deploy", Duration::ZERO).await.unwrap();
    let sha = "3333333333333333333333333333333333333333";
    for _push in 0..2 {
        let mut r = p.runner("pull_request", sha, &pr_table(REPO));
        r.machine_env.push(("GITHUB_API_URL".into(), api.uri()));
        let run = run_blocking(r, Workflow::load(".github/workflows/plan.yml"), no_inputs()).await;
        let job = run.job("plan");
        assert_eq!(job.result, Outcome::Success, "{}", run.log());
        assert_eq!(
            job.step("comment").outcome,
            Outcome::Success,
            "{}",
            run.log()
        );
    }
    let list = comments.0.lock().unwrap().clone();
    assert_eq!(list.len(), 1, "one comment, edited in place: {list:?}");
    assert!(
        list[0].1.contains("deployer-plan") && list[0].1.contains(sha),
        "{}",
        list[0].1
    );

    // A plan that takes the lock fails while the deploy holds it.
    let text =
        std::fs::read_to_string(harness::repo_root().join(".github/workflows/plan.yml")).unwrap();
    let mutated = Workflow::from_text(
        ".github/workflows/plan.yml",
        &text.replace(" --no-lock", ""),
    );
    let mut r = p.runner("pull_request", sha, &pr_table(REPO));
    r.machine_env.push(("GITHUB_API_URL".into(), api.uri()));
    let run = run_blocking(r, mutated, no_inputs()).await;
    assert_eq!(
        run.job("plan").step("plan").outcome,
        Outcome::Failure,
        "{}",
        run.log()
    );
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_yml_for_a_fork_passes_with_a_summary_and_no_comment() {
    let p = Production::new().await;
    let (api, comments) = common::github::start().await;
    // GitHub gives a fork's workflow no secrets.
    let mut extra = pr_table("someone/shop");
    extra.push(("secrets.AWS_PLAN_ROLE_ARN", String::new()));
    let mut r = p.runner(
        "pull_request",
        "3333333333333333333333333333333333333333",
        &extra,
    );
    r.machine_env.push(("GITHUB_API_URL".into(), api.uri()));
    let run = run_blocking(r, Workflow::load(".github/workflows/plan.yml"), no_inputs()).await;
    let job = run.job("plan");
    assert_eq!(job.result, Outcome::Success, "{}", run.log());
    assert!(job.summary.contains("fork someone/shop"), "{}", job.summary);
    for s in ["plan", "comment"] {
        assert_eq!(job.step(s).outcome, Outcome::Skipped, "{s}");
    }
    assert_eq!(*comments.1.lock().unwrap(), 0, "no request reached the API");
}

/// The pipeline binary as the owner runs it (README, "The database"), or as the monthly
/// files arrive (`generate` stands in for the source system).
fn pipeline(args: &[&str], env: &[(&str, String)]) {
    let out = std::process::Command::new(bin("pipeline"))
        .args(args)
        .envs(cloud().moto().env())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pipeline {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Months from 2020-01 (where the generator starts) to the last complete one.
fn months_to_last_complete() -> u32 {
    use chrono::Datelike as _;
    let now = chrono::Utc::now();
    ((now.year() - 2020) * 12) as u32 + now.month0()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_run_from_catch_up_to_promotion_ends_with_the_new_model_served_through_the_elastic_ip()
 {
    let p = Production::new().await;
    let port = p.cfg.api_port;
    // The database, once, as the README's owner does it.
    let db = harness::postgres().database();
    let ds_pw = harness::unique("ds");
    let owner = [
        ("DATABASE_URL", db.url()),
        ("DS_USER_PASSWORD", ds_pw.clone()),
        ("MLE_USER_PASSWORD", harness::unique("mle")),
    ];
    pipeline(&["db", "migrate"], &owner);
    pipeline(&["db", "users"], &owner);
    // The monthly files, every month to the last complete one (a small data size).
    let source_bucket = harness::unique("source");
    p.clients()
        .await
        .s3
        .create_bucket()
        .bucket(&source_bucket)
        .send()
        .await
        .unwrap();
    let source = format!("s3://{source_bucket}/raw");
    let months = months_to_last_complete().to_string();
    pipeline(
        &[
            "generate",
            "--out",
            &source,
            "--customers",
            "3000",
            "--months",
            &months,
        ],
        &[],
    );
    // Production serves the commit's server with last month's model (m0).
    let m0 = p.promote_model(0.6, 0).await;
    let sha = "4444444444444444444444444444444444444444";
    let run = run_blocking(
        p.runner("push", sha, &[]),
        Workflow::load(".github/workflows/deploy.yml"),
        no_inputs(),
    )
    .await;
    assert_eq!(
        run.job("deploy").result,
        Outcome::Success,
        "{}\n{}",
        run.log(),
        p.boot_logs().await
    );
    let eip = p.eip().await;
    assert_eq!(
        served(eip, port, (sha, &m0)),
        Some((sha.to_string(), m0.clone()))
    );

    let models = format!("s3://{}/models", p.cfg.artifacts.bucket);
    let secrets = vec![
        ("secrets.PIPELINE_SOURCE", source.clone()),
        ("secrets.MODELS_LOCATION", models),
        ("secrets.DATABASE_URL", db.url()),
        ("secrets.DS_DATABASE_URL", db.url_as("ds_user", &ds_pw)),
        ("inputs.from", String::new()),
        ("inputs.to", String::new()),
        ("inputs.rerun", String::new()),
    ];

    // The monthly run: catch-up, checks, features, training promotes m1, and the deploy
    // job releases it on the running server binary.
    let run = run_blocking(
        p.runner("schedule", sha, &secrets),
        Workflow::load(".github/workflows/pipeline.yml"),
        no_inputs(),
    )
    .await;
    let job = run.job("pipeline");
    assert_eq!(job.result, Outcome::Success, "{}", run.log());
    let m1 = job.outputs["model"].clone();
    assert!(!m1.is_empty() && m1 != m0, "promoted {m1:?}");
    let deploy = run.job("deploy");
    assert_eq!(
        deploy.result,
        Outcome::Success,
        "{}\n{}",
        run.log(),
        p.boot_logs().await
    );
    let called = deploy.called.as_ref().unwrap();
    assert_eq!(
        called.job("model").result,
        Outcome::Success,
        "{}",
        run.log()
    );
    assert_eq!(
        called.job("deploy").result,
        Outcome::Skipped,
        "no server build on a model deploy"
    );
    // Through the fixed endpoint: the model-only release with m1.
    let release = format!("{sha}_{m1}");
    assert_eq!(
        served(eip, port, (&release, &m1)),
        Some((release.clone(), m1.clone())),
        "{}",
        run.log()
    );
    // The colour that held the address keeps the previous release and model for a
    // rollback, and still serves them.
    let st = p.state().await;
    let holder = st.release.eip_holder.unwrap();
    let other = &st.release.instances[&holder.other()];
    assert_eq!(
        (other.release.as_str(), other.model_version.as_deref()),
        (sha, Some(m0.as_str()))
    );
    let standin = cloud().standin_of(&other.instance_id).unwrap();
    assert_eq!(
        version_at(IpAddr::V4(standin), port),
        Some((sha.to_string(), m0.clone()))
    );
    // status shows each colour's release and model.
    let status: serde_json::Value =
        serde_json::from_str(&p.deployer(&["status", "--json"])).unwrap();
    let colors = status["colors"].as_array().unwrap();
    for (rel, model) in [(release.as_str(), m1.as_str()), (sha, m0.as_str())] {
        assert!(
            colors.iter().any(|c| c["release"] == rel
                && c["model_version"] == model
                && c["health"] == "healthy"),
            "{status:#}"
        );
    }

    // A pipeline that trains without deploying: the new model is promoted and never
    // served, so the check above fails on it.
    let text = std::fs::read_to_string(harness::repo_root().join(".github/workflows/pipeline.yml"))
        .unwrap();
    let cut = text
        .find("\n  deploy:\n")
        .expect("pipeline.yml has a deploy job");
    let mutated = Workflow::from_text(".github/workflows/pipeline.yml", &text[..cut + 1]);
    let run = run_blocking(p.runner("schedule", sha, &secrets), mutated, no_inputs()).await;
    assert_eq!(
        run.job("pipeline").result,
        Outcome::Success,
        "{}",
        run.log()
    );
    let m2 = run.job("pipeline").outputs["model"].clone();
    assert_ne!(m2, m1);
    let now = version_at(eip, port);
    assert_ne!(
        now.as_ref().map(|v| v.1.as_str()),
        Some(m2.as_str()),
        "the promoted model is not served without the deploy job"
    );
    assert_eq!(now, Some((release, m1)));
}
