//! The command line. Every flag and environment variable keeps its name: tests, CI and
//! the demo drive the binary through them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use deployer::health::{AddressMap, Endpoints};
use deployer::release::ReleaseOptions;

#[derive(Debug, Parser)]
#[command(
    name = "deployer",
    version,
    about = "Provisions the AWS stack, keeps its state in S3 under a lock, plans and applies."
)]
pub struct Cli {
    /// The configuration file (see deploy.example.toml).
    #[arg(
        long,
        short,
        env = "DEPLOYER_CONFIG",
        default_value = "deploy.toml",
        global = true
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the state bucket (versioned, encrypted, private) and the lock table.
    Init,
    /// Read the real resources, diff them against the configuration, print the plan.
    Plan(PlanArgs),
    /// Bring the real resources to the configuration (or carry out a saved plan).
    ///
    /// Manages the shared stack (network, security group, IAM, Elastic IP); instances
    /// are launched by the blue/green release (`deploy`).
    Apply(ApplyArgs),
    /// Remove everything the deployer owns, instances first, in reverse order.
    Destroy {
        #[arg(long)]
        auto_approve: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Remove the state lock with this id (and only a lock with this id).
    ForceUnlock { id: String },
    /// Show who holds the state lock, if anyone.
    LockInfo,
    /// Upload a release bundle (server binary + manifest with sha256) to the artifact
    /// bucket under releases/<SHA>/.
    Publish(PublishArgs),
    /// Blue/green: launch the idle colour with the release, health-gate it, move the
    /// Elastic IP to it, keep the old colour for the rollback window, then retire it.
    ///
    /// With --model (a version, or `latest` resolved now): a model-only release, the
    /// server binary of the running release (or of --release) with that model pinned,
    /// named `<server release>_<model>`; nothing happens if it already holds the address.
    Deploy {
        /// The published release; with --model, the release whose server binary to use.
        #[arg(long, required_unless_present = "model")]
        release: Option<String>,
        /// A model version (or `latest`) to serve with the running server binary.
        #[arg(long, value_name = "VERSION")]
        model: Option<String>,
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
        #[command(flatten)]
        lock: LockArgs,
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
    /// Local simulation only (tests, the demo): a loopback TCP forwarder standing in
    /// for the Elastic IP, following DescribeAddresses with a propagation delay.
    #[command(hide = true)]
    Forward(ForwardArgs),
    /// Post a saved plan as a comment on a pull request, editing the deployer's earlier
    /// comment there instead of adding another. Repository, token and API address come
    /// from GITHUB_REPOSITORY, GITHUB_TOKEN and GITHUB_API_URL.
    Comment(CommentArgs),
}

// The argument structs carry no doc comment of their own: the variant's is the
// command's help.

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Save the plan (with the state serial it was made against) for `apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan the removal of everything instead.
    #[arg(long)]
    pub destroy: bool,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Do not take the state lock (read-only plans in CI, at your own risk).
    #[arg(long)]
    pub no_lock: bool,
    /// Also show the blue/green cutover `deploy --release` would make.
    #[arg(long, value_name = "SHA")]
    pub release: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A plan saved with `plan --out`; refused if the state moved since.
    pub plan_file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub auto_approve: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[arg(long)]
    pub release: String,
    #[arg(long, value_name = "PATH")]
    pub server_binary: PathBuf,
    /// The model version the release serves (the health gate checks it): a version,
    /// or `latest`, resolved now to the version `models/latest` names.
    #[arg(long)]
    pub model_version: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// COLOR=http://127.0.0.1:PORT, for blue and green.
    #[arg(long = "endpoint", value_name = "COLOR=URL")]
    pub endpoints: Vec<String>,
    /// How long a move takes to reach traffic (AWS: typically 5-20s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub delay: Duration,
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub poll: Duration,
}

#[derive(Debug, clap::Args)]
pub struct CommentArgs {
    /// The pull request's number.
    #[arg(long)]
    pub pr: u64,
    /// A plan saved with `plan --out`.
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// The commit the plan was made for (default: GITHUB_SHA).
    #[arg(long, env = "GITHUB_SHA")]
    pub commit: Option<String>,
}

/// The state lock's flags, the same for every command that takes the lock.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct LockArgs {
    /// How long to wait for the state lock (e.g. 30s, 2m); 0 fails at once. Default:
    /// 0s (`retire`: 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,
}

impl LockArgs {
    /// The timeout given, else `default`.
    pub fn timeout_or(self, default: Duration) -> Duration {
        self.lock_timeout.unwrap_or(default)
    }

    /// The timeout given, else none (fail at once).
    pub fn timeout(self) -> Duration {
        self.timeout_or(Duration::ZERO)
    }
}

/// Where the health gate's probes go.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// A colour's server, COLOR=http://127.0.0.1:PORT (tests, local demo). Probes go
    /// to loopback only unless --allow-public-probes.
    #[arg(
        long = "endpoint",
        value_name = "COLOR=URL",
        env = "DEPLOYER_ENDPOINTS",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// The service through the Elastic IP, verified after the move (locally: the
    /// forwarder).
    #[arg(long, value_name = "URL", env = "DEPLOYER_FIXED_ENDPOINT")]
    pub fixed_endpoint: Option<String>,
    /// Production: probe the instances' real addresses (never in tests: the emulator
    /// invents addresses for machines that do not exist).
    #[arg(long)]
    pub allow_public_probes: bool,
    /// Tests and the local demo: a JSON file mapping each instance's address to the
    /// loopback address its server really listens on (the local cloud keeps one).
    /// Probes then follow the production path through it, loopback only.
    #[arg(long, value_name = "FILE", env = "DEPLOYER_ADDRESS_MAP")]
    pub address_map: Option<PathBuf>,
}

impl ProbeArgs {
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        Ok(Endpoints::parse(
            &self.endpoints,
            self.fixed_endpoint.as_deref(),
            self.allow_public_probes,
        )?
        .with_address_map(self.address_map.as_ref().map(AddressMap::new)))
    }
}

/// How `deploy` and `rollback` run.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// How long the new colour has to report ready with the expected release and model.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub health_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// How long the previous colour is kept for a rollback.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub rollback_window: Duration,
    /// Do not wait out the window: `deployer retire` (or the next deploy) ends it.
    #[arg(long)]
    pub no_wait: bool,
    /// `front = "nlb"` only: shift this share of new connections (e.g. 10%) first,
    /// hold it for `[canary] soak_seconds` while the new colour's 5xx rate stays under
    /// `max_error_rate`, then shift the rest; else shift back and abandon the release.
    #[arg(long, value_name = "PERCENT", value_parser = deployer::release::canary::parse_percent)]
    pub canary: Option<u8>,
    #[command(flatten)]
    pub lock: LockArgs,
}

impl ReleaseArgs {
    pub fn options(&self) -> anyhow::Result<ReleaseOptions> {
        Ok(ReleaseOptions {
            endpoints: self.probes.endpoints()?,
            health_deadline: self.health_deadline,
            probe_interval: self.probe_interval,
            rollback_window: self.rollback_window,
            wait_window: !self.no_wait,
            lock_timeout: self.lock.timeout(),
            canary: self.canary,
            ..Default::default()
        })
    }
}

/// `30s`, `2m`, `500ms`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_forward_is_hidden() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("deploy"), "{help}");
        assert!(
            !help.lines().any(|l| l.trim_start().starts_with("forward")),
            "{help}"
        );
        // Still there for the demo and the tests.
        let c = Cli::try_parse_from(["deployer", "forward", "--delay", "1s"]).unwrap();
        assert!(matches!(c.command, Command::Forward(_)));
    }

    #[test]
    fn every_lock_timeout_flag_parses_the_same_way() {
        for args in [
            &["deployer", "plan", "--lock-timeout", "2m"][..],
            &["deployer", "apply", "--lock-timeout", "2m"],
            &["deployer", "destroy", "--lock-timeout", "2m"],
            &["deployer", "retire", "--lock-timeout", "2m"],
            &[
                "deployer",
                "deploy",
                "--release",
                "r",
                "--lock-timeout",
                "2m",
            ],
            &["deployer", "rollback", "--lock-timeout", "2m"],
        ] {
            let c = Cli::try_parse_from(args).unwrap();
            let lock = match c.command {
                Command::Plan(a) => a.lock,
                Command::Apply(a) => a.lock,
                Command::Destroy { lock, .. } | Command::Retire { lock } => lock,
                Command::Deploy { opts, .. } | Command::Rollback { opts } => opts.lock,
                other => panic!("{other:?}"),
            };
            assert_eq!(lock.timeout(), Duration::from_secs(120), "{args:?}");
        }
        // deploy: --release, --model, or both; never neither.
        assert!(Cli::try_parse_from(["deployer", "deploy"]).is_err());
        for (args, want) in [
            (
                &["deployer", "deploy", "--model", "latest"][..],
                (None, Some("latest")),
            ),
            (&["deployer", "deploy", "--release", "r"], (Some("r"), None)),
            (
                &["deployer", "deploy", "--release", "r", "--model", "latest"],
                (Some("r"), Some("latest")),
            ),
        ] {
            let Command::Deploy { release, model, .. } = Cli::try_parse_from(args).unwrap().command
            else {
                panic!("{args:?}")
            };
            assert_eq!((release.as_deref(), model.as_deref()), want, "{args:?}");
        }
        let c = Cli::try_parse_from(["deployer", "retire"]).unwrap();
        let Command::Retire { lock } = c.command else {
            panic!()
        };
        assert_eq!(
            lock.timeout_or(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(lock.timeout(), Duration::ZERO);
    }
}
