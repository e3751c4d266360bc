//! What each command does: call the library, print the result.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use deployer::aws::Clients;
use deployer::config::Config;
use deployer::plan::{Operation, Plan, render};
use deployer::release::ReleaseOptions;
use deployer::{Deployer, LockOptions};

use super::args::{ApplyArgs, CommentArgs, ForwardArgs, LockArgs, PlanArgs, PublishArgs};
use super::render::{AppliedSummary, DeployedSummary, InitSummary};

/// The deployer for the configuration at `config`.
pub async fn deployer(config: &Path) -> anyhow::Result<Deployer> {
    let cfg = Config::load(config)?;
    let clients = Clients::load(&cfg.region).await;
    Ok(Deployer::new(cfg, clients))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn init(d: &Deployer) -> anyhow::Result<u8> {
    let report = d.init().await.context("init")?;
    println!(
        "{}",
        InitSummary {
            cfg: &d.cfg,
            report: &report
        }
    );
    Ok(0)
}

pub async fn plan(d: &Deployer, a: PlanArgs) -> anyhow::Result<u8> {
    let op = if a.destroy {
        Operation::Destroy
    } else {
        Operation::Apply
    };
    let lock = LockOptions {
        enabled: !a.no_lock,
        timeout: a.lock.timeout(),
    };
    let plan = d.plan(op, lock).await.context("plan")?;
    if a.json {
        print_json(&plan)?;
    } else {
        print!("{}", render(&plan));
        super::render::print_certificate(d).await;
    }
    if let Some(r) = &a.release {
        deployer::publish::check_release(r)?;
        let state = d.read_state().await.context("reading the state")?;
        let opts = ReleaseOptions::default();
        let preview = match d.cfg.front {
            deployer::config::Front::Eip => deployer::release::cutover_preview(&state, r, &opts),
            deployer::config::Front::Nlb => deployer::release::cutover_preview_nlb(
                &state,
                r,
                d.cfg.instances_per_color,
                None,
                &opts,
            ),
        };
        print!("{preview}");
    }
    if let Some(path) = a.out {
        std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)
            .with_context(|| format!("writing the plan to {}", path.display()))?;
        if !a.json {
            println!(
                "\nSaved the plan to {} (state serial {}). Apply it with `deployer apply {}`.",
                path.display(),
                plan.state_serial,
                path.display()
            );
        }
    }
    Ok(if a.detailed_exitcode && plan.has_changes() {
        2
    } else {
        0
    })
}

pub async fn apply(d: &Deployer, a: ApplyArgs) -> anyhow::Result<u8> {
    let saved = match &a.plan_file {
        None => None,
        Some(p) => {
            let text =
                std::fs::read(p).with_context(|| format!("reading the plan {}", p.display()))?;
            let plan: Plan = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a saved plan", p.display()))?;
            if plan.operation != Operation::Apply {
                bail!("{} is a destroy plan: use `deployer destroy`", p.display());
            }
            Some(plan)
        }
    };
    // A saved plan was reviewed when it was made.
    let approved = a.auto_approve || saved.is_some();
    run_apply(d, Operation::Apply, saved, approved, a.lock.timeout()).await
}

pub async fn destroy(d: &Deployer, auto_approve: bool, lock: LockArgs) -> anyhow::Result<u8> {
    run_apply(d, Operation::Destroy, None, auto_approve, lock.timeout()).await
}

/// Shows the plan and asks for `yes` on a terminal (unless approved already).
fn confirm(plan: &Plan, word: &str, auto_approve: bool) -> Result<bool, deployer::Error> {
    print!("{}", render(plan));
    let _ = std::io::stdout().flush();
    if !plan.has_changes() || auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(deployer::Error::NotConfirmed(format!(
            "stdin is not a terminal: pass --auto-approve to {word} without a prompt"
        )));
    }
    print!(
        "\nDo you want to perform these actions?\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| deployer::Error::NotConfirmed(format!("reading the answer: {e}")))?;
    Ok(line.trim() == "yes")
}

async fn run_apply(
    d: &Deployer,
    op: Operation,
    saved: Option<Plan>,
    auto_approve: bool,
    lock_timeout: Duration,
) -> anyhow::Result<u8> {
    let word = match op {
        Operation::Apply => "apply",
        Operation::Destroy => "destroy",
    };
    let mut ask = |plan: &Plan| confirm(plan, word, auto_approve);
    let outcome = d
        .apply(op, saved, lock_timeout, &mut ask)
        .await
        .context(word)?;
    if let Some(a) = &outcome.applied {
        println!(
            "{}",
            AppliedSummary {
                operation: op,
                applied: a
            }
        );
    }
    Ok(0)
}

pub async fn force_unlock(d: &Deployer, id: &str) -> anyhow::Result<u8> {
    let info = d.force_unlock(id).await.context("force-unlock")?;
    println!("Removed the lock: {info}.");
    Ok(0)
}

pub async fn lock_info(d: &Deployer) -> anyhow::Result<u8> {
    match d.locker().current().await.context("reading the lock")? {
        Some(info) => println!("{info}"),
        None => println!("The state is not locked."),
    }
    Ok(0)
}

pub async fn publish(d: &Deployer, a: PublishArgs) -> anyhow::Result<u8> {
    let m = deployer::publish::publish(
        &d.clients,
        &d.cfg.artifacts.bucket,
        &a.release,
        &a.server_binary,
        a.model_version.as_deref(),
    )
    .await
    .context("publish")?;
    println!(
        "Published release {} to s3://{}/{} (model {}).",
        m.release,
        d.cfg.artifacts.bucket,
        deployer::publish::prefix(&m.release),
        m.model_version.as_deref().unwrap_or("not set")
    );
    Ok(0)
}

pub async fn deploy(
    d: &Deployer,
    release: Option<&str>,
    model: Option<&str>,
    opts: ReleaseOptions,
) -> anyhow::Result<u8> {
    let deployed = match (release, model) {
        (release, Some(model)) => d.deploy_model(model, release, &opts).await,
        (Some(release), None) => d.deploy(release, &opts).await,
        (None, None) => bail!("deploy needs --release or --model"),
    }
    .context("deploy")?;
    if d.cfg.front == deployer::config::Front::Nlb {
        println!("{}", nlb_summary(d, "Deployed", &deployed).await);
        return Ok(0);
    }
    println!(
        "{}",
        DeployedSummary {
            verb: "Deployed",
            deployed: &deployed
        }
    );
    Ok(0)
}

pub async fn rollback(d: &Deployer, opts: ReleaseOptions) -> anyhow::Result<u8> {
    let deployed = d.rollback(&opts).await.context("rollback")?;
    if d.cfg.front == deployer::config::Front::Nlb {
        println!("{}", nlb_summary(d, "Rolled back", &deployed).await);
        return Ok(0);
    }
    println!(
        "{}",
        DeployedSummary {
            verb: "Rolled back",
            deployed: &deployed
        }
    );
    Ok(0)
}

/// What `deploy` / `rollback` print with `front = "nlb"`: the cutover as the
/// listener's weights now, and the previous colour's fate.
async fn nlb_summary(d: &Deployer, verb: &str, deployed: &deployer::release::Deployed) -> String {
    let weights = match d.read_state().await {
        Ok(st) => d
            .listener_weights(&st)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})")),
        Err(e) => format!("unknown ({e})"),
    };
    let mut out = format!(
        "{verb}: release {} on {} ({}).\nCutover: aws_lb_listener.api weights now {weights}.",
        deployed.release, deployed.color, deployed.instance_id
    );
    if let Some((c, ids)) = &deployed.previous {
        if deployed.retired.iter().any(|r| ids.contains(r.as_str())) {
            out.push_str(&format!(
                "\nThe rollback window is over: {c} ({ids}) drained and terminated."
            ));
        } else {
            out.push_str(&format!(
                "\n{c} ({ids}) stays registered at weight 0 for a rollback until its window ends."
            ));
        }
    }
    out
}

pub async fn retire(d: &Deployer, lock: LockArgs) -> anyhow::Result<u8> {
    let ids = d
        .retire(lock.timeout_or(Duration::from_secs(30)))
        .await
        .context("retire")?;
    println!(
        "Terminated {} instance(s) past their rollback window.",
        ids.len()
    );
    Ok(0)
}

pub async fn status(
    d: &Deployer,
    endpoints: &deployer::health::Endpoints,
    json: bool,
) -> anyhow::Result<u8> {
    let st = d.status(endpoints).await.context("status")?;
    if json {
        /// `status --json`: the status, and with `tls = "acme"` the stored
        /// certificate (as the text's certificate line says it).
        #[derive(serde::Serialize)]
        struct WithCertificate<'a> {
            #[serde(flatten)]
            status: &'a deployer::release::Status,
            #[serde(skip_serializing_if = "Option::is_none")]
            certificate: Option<deployer::cert::CertificateView>,
            #[serde(skip_serializing_if = "Option::is_none")]
            certificate_error: Option<String>,
        }
        let (certificate, certificate_error) = match d.certificate_view().await {
            Ok(deployer::cert::CertificateView::Off) => (None, None),
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        print_json(&WithCertificate {
            status: &st,
            certificate,
            certificate_error,
        })?;
    } else {
        println!("{st}");
        super::render::print_certificate(d).await;
    }
    Ok(0)
}

pub async fn history(d: &Deployer, json: bool) -> anyhow::Result<u8> {
    let entries = d.history().list().await.context("history")?;
    if json {
        print_json(&entries)?;
    } else {
        for e in &entries {
            println!("{e}");
        }
    }
    Ok(0)
}

pub async fn forward(d: &Deployer, a: ForwardArgs) -> anyhow::Result<u8> {
    let eps = deployer::health::Endpoints::parse(&a.endpoints, None, false)?;
    let state = d.read_state().await.context("reading the state")?;
    let allocation = state
        .resources
        .get("aws_eip.api")
        .map(|r| r.id.clone())
        .context("no aws_eip.api in the state: run `deployer apply` first")?;
    let f = deployer::forwarder::start(
        d.clients.clone(),
        deployer::forwarder::ForwarderConfig {
            listen: a.listen,
            allocation,
            endpoints: eps.colors,
            delay: a.delay,
            poll: a.poll,
        },
    )
    .await
    .context("forward")?;
    println!("Forwarding {} to the Elastic IP's holder.", f.addr);
    f.run_forever().await;
    Ok(0)
}

/// Needs no configuration and no AWS: only the saved plan and GitHub.
pub async fn comment(a: &CommentArgs) -> anyhow::Result<u8> {
    use deployer::github;
    let target = github::GithubTarget::from_env()?;
    let text = std::fs::read_to_string(&a.plan)
        .with_context(|| format!("reading the plan {}", a.plan.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a saved plan", a.plan.display()))?;
    let body = github::render_comment(&plan, a.commit.as_deref());
    let pr = a.pr;
    match github::post(&target, pr, &plan.app, &body).await? {
        github::Posted::Created { id } => println!("Posted the plan on #{pr} (comment {id})."),
        github::Posted::Updated { id } => println!("Updated the plan on #{pr} (comment {id})."),
    }
    Ok(0)
}
