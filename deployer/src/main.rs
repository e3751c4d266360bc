//! `deployer --config deploy.toml <command>`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use deployer::aws::Clients;
use deployer::config::Config;
use deployer::plan::{Operation, Plan, render};
use deployer::{Deployer, LockOptions};

#[derive(Debug, Parser)]
#[command(
    name = "deployer",
    version,
    about = "Provisions the AWS stack, keeps its state in S3 under a lock, plans and applies."
)]
struct Cli {
    /// The configuration file (see deploy.example.toml).
    #[arg(
        long,
        short,
        env = "DEPLOYER_CONFIG",
        default_value = "deploy.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the state bucket (versioned, encrypted, private) and the lock table.
    Init,
    /// Read the real resources, diff them against the configuration, print the plan.
    Plan {
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Save the plan (with the state serial it was made against) for `apply FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 0 when there are no changes, 2 when there are, 1 on errors.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan the removal of everything instead.
        #[arg(long)]
        destroy: bool,
        /// How long to wait for the state lock (e.g. 30s, 2m); 0 fails at once.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
        /// Do not take the state lock (read-only plans in CI, at your own risk).
        #[arg(long)]
        no_lock: bool,
        /// Also show the blue/green cutover `deploy --release` would make.
        #[arg(long, value_name = "SHA")]
        release: Option<String>,
    },
    /// Bring the real resources to the configuration (or carry out a saved plan).
    ///
    /// Manages the shared stack (network, security group, IAM, Elastic IP); instances
    /// are launched by the blue/green release (`deploy`).
    Apply {
        /// A plan saved with `plan --out`; refused if the state moved since.
        plan_file: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
    },
    /// Remove everything the deployer owns, instances first, in reverse order.
    Destroy {
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        lock_timeout: Duration,
    },
    /// Remove the state lock with this id (and only a lock with this id).
    ForceUnlock { id: String },
    /// Show who holds the state lock, if anyone.
    LockInfo,
    /// Upload a release bundle (server binary + manifest with sha256) to the artifact
    /// bucket under releases/<SHA>/.
    Publish {
        #[arg(long)]
        release: String,
        #[arg(long, value_name = "PATH")]
        server_binary: PathBuf,
        /// The model version the release serves (the health gate checks it).
        #[arg(long)]
        model_version: Option<String>,
    },
    /// Blue/green: launch the idle colour with the release, health-gate it, move the
    /// Elastic IP to it, keep the old colour for the rollback window, then retire it.
    Deploy {
        #[arg(long)]
        release: String,
        #[command(flatten)]
        opts: ReleaseArgs,
    },
    /// Move the Elastic IP back to the previous colour (if alive and healthy), else
    /// redeploy the previous release.
    Rollback {
        #[command(flatten)]
        opts: ReleaseArgs,
    },
    /// Terminate the colours whose rollback window is over.
    Retire {
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lock_timeout: Duration,
    },
    /// Active colour, release, model, each instance's health, the Elastic IP.
    Status {
        #[command(flatten)]
        probes: ProbeArgs,
        #[arg(long)]
        json: bool,
    },
    /// The audit log: applies, deploys, rollbacks, unlocks (who, when, what, outcome).
    History {
        #[arg(long)]
        json: bool,
    },
    /// Local simulation: a loopback TCP forwarder standing in for the Elastic IP,
    /// following DescribeAddresses with a propagation delay.
    Forward {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// COLOR=http://127.0.0.1:PORT, for blue and green.
        #[arg(long = "endpoint", value_name = "COLOR=URL")]
        endpoints: Vec<String>,
        /// How long a move takes to reach traffic (AWS: typically 5-20s).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        delay: Duration,
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        poll: Duration,
    },
    /// Post a saved plan as a comment on a pull request, editing the deployer's earlier
    /// comment there instead of adding another. Repository, token and API address come
    /// from GITHUB_REPOSITORY, GITHUB_TOKEN and GITHUB_API_URL.
    Comment {
        /// The pull request's number.
        #[arg(long)]
        pr: u64,
        /// A plan saved with `plan --out`.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// The commit the plan was made for (default: GITHUB_SHA).
        #[arg(long, env = "GITHUB_SHA")]
        commit: Option<String>,
    },
}

/// Where the health gate's probes go.
#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// A colour's server, COLOR=http://127.0.0.1:PORT (tests, local demo). Probes go
    /// to loopback only unless --allow-public-probes.
    #[arg(
        long = "endpoint",
        value_name = "COLOR=URL",
        env = "DEPLOYER_ENDPOINTS",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// The service through the Elastic IP, verified after the move (locally: the
    /// forwarder).
    #[arg(long, value_name = "URL", env = "DEPLOYER_FIXED_ENDPOINT")]
    fixed_endpoint: Option<String>,
    /// Production: probe the instances' real addresses (never in tests: the emulator
    /// invents addresses for machines that do not exist).
    #[arg(long)]
    allow_public_probes: bool,
}

impl ProbeArgs {
    fn endpoints(&self) -> anyhow::Result<deployer::health::Endpoints> {
        Ok(deployer::health::Endpoints::parse(
            &self.endpoints,
            self.fixed_endpoint.as_deref(),
            self.allow_public_probes,
        )?)
    }
}

#[derive(Debug, clap::Args)]
struct ReleaseArgs {
    #[command(flatten)]
    probes: ProbeArgs,
    /// How long the new colour has to report ready with the expected release and model.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    health_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    probe_interval: Duration,
    /// How long the previous colour is kept for a rollback.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    rollback_window: Duration,
    /// Do not wait out the window: `deployer retire` (or the next deploy) ends it.
    #[arg(long)]
    no_wait: bool,
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    lock_timeout: Duration,
}

impl ReleaseArgs {
    fn options(&self) -> anyhow::Result<deployer::release::ReleaseOptions> {
        Ok(deployer::release::ReleaseOptions {
            endpoints: self.probes.endpoints()?,
            health_deadline: self.health_deadline,
            probe_interval: self.probe_interval,
            rollback_window: self.rollback_window,
            wait_window: !self.no_wait,
            lock_timeout: self.lock_timeout,
            ..Default::default()
        })
    }
}

fn print_deployed(verb: &str, d: &deployer::release::Deployed) {
    println!(
        "{verb}: release {} on {} ({}) holds the Elastic IP.",
        d.release, d.color, d.instance_id
    );
    if let Some((c, id)) = &d.previous {
        if d.retired.contains(id) {
            println!("The rollback window is over: {c} ({id}) terminated.");
        } else {
            println!("{c} ({id}) is kept for a rollback until its window ends.");
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // Needs no configuration and no AWS: only the saved plan and GitHub.
    if let Command::Comment { pr, plan, commit } = &cli.command {
        return run_comment(*pr, plan, commit.as_deref()).await;
    }
    let cfg = Config::load(&cli.config)?;
    let clients = Clients::load(&cfg.region).await;
    let d = Deployer::new(cfg, clients);
    match cli.command {
        Command::Init => {
            let r = d.init().await.context("init")?;
            println!(
                "State bucket s3://{} {}; {}.",
                d.cfg.state.bucket,
                if r.bucket_created {
                    "created"
                } else {
                    "already there (settings enforced)"
                },
                match &d.cfg.lock.table {
                    Some(t) if d.cfg.lock.backend == deployer::config::LockBackend::Dynamodb =>
                        format!(
                            "lock table {t} {}",
                            if r.table_created {
                                "created"
                            } else {
                                "already there"
                            }
                        ),
                    _ => "S3 locking: no table needed".to_string(),
                }
            );
            Ok(0)
        }
        Command::Plan {
            json,
            out,
            detailed_exitcode,
            destroy,
            lock_timeout,
            no_lock,
            release,
        } => {
            let op = if destroy {
                Operation::Destroy
            } else {
                Operation::Apply
            };
            let plan = d
                .plan(
                    op,
                    LockOptions {
                        enabled: !no_lock,
                        timeout: lock_timeout,
                    },
                )
                .await
                .context("plan")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", render(&plan));
            }
            if let Some(r) = &release {
                deployer::publish::check_release(r)?;
                let state = d.read_state().await.context("reading the state")?;
                print!(
                    "{}",
                    deployer::release::cutover_preview(
                        &state,
                        r,
                        &deployer::release::ReleaseOptions::default()
                    )
                );
            }
            if let Some(path) = out {
                std::fs::write(&path, serde_json::to_vec_pretty(&plan)?)
                    .with_context(|| format!("writing the plan to {}", path.display()))?;
                if !json {
                    println!(
                        "\nSaved the plan to {} (state serial {}). Apply it with `deployer apply {}`.",
                        path.display(),
                        plan.state_serial,
                        path.display()
                    );
                }
            }
            Ok(if detailed_exitcode && plan.has_changes() {
                2
            } else {
                0
            })
        }
        Command::Apply {
            plan_file,
            auto_approve,
            lock_timeout,
        } => {
            let saved = match &plan_file {
                None => None,
                Some(p) => {
                    let text = std::fs::read(p)
                        .with_context(|| format!("reading the plan {}", p.display()))?;
                    let plan: Plan = serde_json::from_slice(&text)
                        .with_context(|| format!("{} is not a saved plan", p.display()))?;
                    if plan.operation != Operation::Apply {
                        bail!("{} is a destroy plan: use `deployer destroy`", p.display());
                    }
                    Some(plan)
                }
            };
            // A saved plan was reviewed when it was made.
            let approved = auto_approve || saved.is_some();
            run_apply(&d, Operation::Apply, saved, approved, lock_timeout).await
        }
        Command::Destroy {
            auto_approve,
            lock_timeout,
        } => run_apply(&d, Operation::Destroy, None, auto_approve, lock_timeout).await,
        Command::ForceUnlock { id } => {
            let info = d.force_unlock(&id).await.context("force-unlock")?;
            println!("Removed the lock: {info}.");
            Ok(0)
        }
        Command::Comment { .. } => unreachable!("handled before the configuration is loaded"),
        Command::Publish {
            release,
            server_binary,
            model_version,
        } => {
            let m = deployer::publish::publish(
                &d.clients,
                &d.cfg.artifacts.bucket,
                &release,
                &server_binary,
                model_version.as_deref(),
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
        Command::Deploy { release, opts } => {
            let dep = d
                .deploy(&release, &opts.options()?)
                .await
                .context("deploy")?;
            print_deployed("Deployed", &dep);
            Ok(0)
        }
        Command::Rollback { opts } => {
            let dep = d.rollback(&opts.options()?).await.context("rollback")?;
            print_deployed("Rolled back", &dep);
            Ok(0)
        }
        Command::Retire { lock_timeout } => {
            let ids = d.retire(lock_timeout).await.context("retire")?;
            println!(
                "Terminated {} instance(s) past their rollback window.",
                ids.len()
            );
            Ok(0)
        }
        Command::Status { probes, json } => {
            let st = d.status(&probes.endpoints()?).await.context("status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                println!(
                    "Active colour: {}",
                    st.active
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into())
                );
                println!(
                    "Elastic IP {} -> {} ({})",
                    st.eip_public_ip.as_deref().unwrap_or("-"),
                    st.eip_instance.as_deref().unwrap_or("no instance"),
                    st.eip_color
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "not one of ours".into())
                );
                for c in &st.colors {
                    println!(
                        "  {:5} {} release {} model {} [{}] {}{}",
                        c.color.to_string(),
                        c.instance_id,
                        c.release,
                        c.model_version.as_deref().unwrap_or("-"),
                        c.state,
                        c.health,
                        c.retire_after
                            .map(|t| format!(" (retires after {t})"))
                            .unwrap_or_default()
                    );
                }
                if let Some(l) = &st.last {
                    println!(
                        "Last: {} {} at {}: {}",
                        l.operation, l.release, l.at, l.outcome
                    );
                }
            }
            Ok(0)
        }
        Command::History { json } => {
            let entries = d.history().list().await.context("history")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in &entries {
                    println!(
                        "{}  {:12} {:24} {}  {}",
                        e.at.format("%Y-%m-%d %H:%M:%S"),
                        e.operation,
                        e.who,
                        e.outcome,
                        e.what
                    );
                }
            }
            Ok(0)
        }
        Command::Forward {
            listen,
            endpoints,
            delay,
            poll,
        } => {
            let eps = deployer::health::Endpoints::parse(&endpoints, None, false)?;
            let state = d.read_state().await.context("reading the state")?;
            let allocation = state
                .resources
                .get("aws_eip.api")
                .map(|r| r.id.clone())
                .context("no aws_eip.api in the state: run `deployer apply` first")?;
            let f = deployer::forwarder::start(
                d.clients.clone(),
                deployer::forwarder::ForwarderConfig {
                    listen,
                    allocation,
                    endpoints: eps.colors,
                    delay,
                    poll,
                },
            )
            .await
            .context("forward")?;
            println!("Forwarding {} to the Elastic IP's holder.", f.addr);
            f.run_forever().await;
            Ok(0)
        }
        Command::LockInfo => {
            match d.locker().current().await.context("reading the lock")? {
                Some(info) => println!("{info}"),
                None => println!("The state is not locked."),
            }
            Ok(0)
        }
    }
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
    let mut confirm = |plan: &Plan| -> Result<bool, deployer::Error> {
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
    };
    let outcome = d
        .apply(op, saved, lock_timeout, &mut confirm)
        .await
        .context(word)?;
    if let Some(a) = outcome.applied {
        match op {
            Operation::Apply => println!(
                "\nApply complete! Resources: {} added, {} changed, {} destroyed{}.",
                a.added,
                a.changed,
                a.destroyed,
                if a.adopted > 0 {
                    format!(", {} recorded from tags", a.adopted)
                } else {
                    String::new()
                }
            ),
            Operation::Destroy => {
                println!("\nDestroy complete! Resources: {} destroyed.", a.destroyed)
            }
        }
    }
    Ok(0)
}

async fn run_comment(
    pr: u64,
    plan_file: &std::path::Path,
    commit: Option<&str>,
) -> anyhow::Result<u8> {
    use deployer::github;
    let target = github::GithubTarget::from_env()?;
    let text = std::fs::read_to_string(plan_file)
        .with_context(|| format!("reading the plan {}", plan_file.display()))?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a saved plan", plan_file.display()))?;
    let body = github::render_comment(&plan, commit);
    match github::post(&target, pr, &plan.app, &body).await? {
        github::Posted::Created { id } => println!("Posted the plan on #{pr} (comment {id})."),
        github::Posted::Updated { id } => println!("Updated the plan on #{pr} (comment {id})."),
    }
    Ok(0)
}
