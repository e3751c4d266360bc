//! The local cloud: the AWS emulator with AWS's eventual consistency, instances that
//! really boot their user data, and Elastic IPs that really carry traffic. Three layers,
//! each a real process or socket on loopback:
//!
//! 1. **moto with AWS's delays** (`tests/harness/cloud/moto_aws.py`): moto's backends
//!    wrapped so that what AWS documents as eventually consistent is eventually
//!    consistent here too, and so that AWS's refusals moto lacks are there ([`AwsBehaviour`]).
//! 2. **Instances that boot** ([`runner`]): every running instance's user data (the real
//!    `boot.sh`) runs in a sandbox root; the unit it installs is started as a process
//!    listening on a loopback stand-in address of the instance's own (127.77.x.y). An
//!    instance with no route to S3 (no public address through an internet gateway, no
//!    S3 gateway endpoint) cannot download. A terminated instance's processes stop.
//! 3. **Elastic IPs** ([`eip`]): for each Elastic IP (moto hands them out in
//!    127.0.0.0/8), a TCP forwarder listens on that very address and forwards each new
//!    connection to the stand-in of the instance `DescribeAddresses` shows holding it,
//!    following changes after a propagation delay.
//!
//! ```no_run
//! # async fn f() -> Result<(), harness::HarnessError> {
//! let cloud = harness::cloud::LocalCloud::start(Default::default())?;
//! let sdk = cloud.moto().sdk_config().await;  // or cloud.moto().env() for a child
//! let map = cloud.address_map_path();          // {"54.x.y.z": "127.77.0.2", "10.0.1.5": …}
//! # Ok(()) }
//! ```
//!
//! Nothing but loopback is ever connected to: the addresses moto invents for instances
//! (54.x, 10.x) only appear as keys of the address map.

pub mod balancer;
mod boot;
pub mod eip;
pub mod runner;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{HarnessError, Moto, io_err, moto_server_bin, repo_root};

/// AWS's eventual consistency and refusals, as the wrapped emulator plays them. A zero
/// duration turns that delay off; [`AwsBehaviour::off`] is plain moto.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsBehaviour {
    /// `RunInstances` refuses an instance profile created (or given a role) less than
    /// this long ago: `InvalidParameterValue`, "Invalid IAM Instance Profile name".
    pub instance_profile: Duration,
    /// A new IAM role is unknown (`NoSuchEntity`) to `PutRolePolicy` and
    /// `AddRoleToInstanceProfile` for this long after `CreateRole`.
    pub role: Duration,
    /// A new instance id is unknown (`InvalidInstanceID.NotFound`; absent from
    /// listings) for this long after `RunInstances`.
    pub instance: Duration,
    /// A new security group is unknown (`InvalidGroup.NotFound`) for this long.
    pub security_group: Duration,
    /// `DescribeAddresses` shows the previous association for this long after
    /// `AssociateAddress`.
    pub address: Duration,
    /// A terminated instance's interfaces block `DeleteSubnet` and
    /// `DeleteSecurityGroup` (`DependencyViolation`), and its public address counts as
    /// mapped, for this long.
    pub terminated_interfaces: Duration,
    /// AWS's refusals moto lacks: `DetachInternetGateway` while public addresses are
    /// mapped, `ReleaseAddress` of an associated address (`InvalidIPAddress.InUse`),
    /// deleting a subnet or security group a live instance uses; and terminating an
    /// instance lets go of its Elastic IP.
    pub strict: bool,
    /// A new Network Load Balancer stays `provisioning` for this long before it is
    /// `active` (and routes).
    pub balancer_active: Duration,
    /// A deleted balancer's interfaces linger this long, holding its Elastic IPs and
    /// blocking `DeleteSubnet`.
    pub balancer_interfaces: Duration,
}

impl AwsBehaviour {
    /// Plain moto: instant and forgiving.
    pub fn off() -> AwsBehaviour {
        AwsBehaviour {
            instance_profile: Duration::ZERO,
            role: Duration::ZERO,
            instance: Duration::ZERO,
            security_group: Duration::ZERO,
            address: Duration::ZERO,
            terminated_interfaces: Duration::ZERO,
            strict: false,
            balancer_active: Duration::ZERO,
            balancer_interfaces: Duration::ZERO,
        }
    }

    /// The shapes AWS documents, with short delays (seconds, where AWS can take longer).
    pub fn aws_like() -> AwsBehaviour {
        AwsBehaviour {
            instance_profile: Duration::from_secs(4),
            role: Duration::from_secs(2),
            instance: Duration::from_secs(2),
            security_group: Duration::from_secs(2),
            address: Duration::from_secs(2),
            terminated_interfaces: Duration::from_secs(3),
            strict: true,
            balancer_active: Duration::from_secs(3),
            balancer_interfaces: Duration::from_secs(3),
        }
    }

    /// Reads `LOCAL_CLOUD_AWS`: `off`, or a JSON object with any of the keys
    /// `instance_profile_s`, `role_s`, `instance_s`, `security_group_s`, `address_s`,
    /// `terminated_eni_s`, `lb_active_s`, `lb_interfaces_s` (seconds) and `strict`, over
    /// [`AwsBehaviour::aws_like`].
    pub fn from_env() -> Result<AwsBehaviour, HarnessError> {
        let Ok(text) = std::env::var("LOCAL_CLOUD_AWS") else {
            return Ok(AwsBehaviour::aws_like());
        };
        if text.trim() == "off" {
            return Ok(AwsBehaviour::off());
        }
        let bad = |detail: String| HarnessError::Failed {
            what: "reading LOCAL_CLOUD_AWS".into(),
            detail,
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut b = AwsBehaviour::aws_like();
        let secs = |key: &str, into: &mut Duration| -> Result<(), HarnessError> {
            if let Some(x) = v.get(key) {
                let s = x
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| bad(format!("{key} must be a number of seconds, not {x}")))?;
                *into = Duration::from_secs_f64(s);
            }
            Ok(())
        };
        secs("instance_profile_s", &mut b.instance_profile)?;
        secs("role_s", &mut b.role)?;
        secs("instance_s", &mut b.instance)?;
        secs("security_group_s", &mut b.security_group)?;
        secs("address_s", &mut b.address)?;
        secs("terminated_eni_s", &mut b.terminated_interfaces)?;
        secs("lb_active_s", &mut b.balancer_active)?;
        secs("lb_interfaces_s", &mut b.balancer_interfaces)?;
        if let Some(x) = v.get("strict") {
            b.strict = x
                .as_bool()
                .ok_or_else(|| bad(format!("strict must be true or false, not {x}")))?;
        }
        Ok(b)
    }

    /// The JSON the wrapper script reads (`LOCAL_CLOUD_AWS`).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "instance_profile_s": self.instance_profile.as_secs_f64(),
            "role_s": self.role.as_secs_f64(),
            "instance_s": self.instance.as_secs_f64(),
            "security_group_s": self.security_group.as_secs_f64(),
            "address_s": self.address.as_secs_f64(),
            "terminated_eni_s": self.terminated_interfaces.as_secs_f64(),
            "strict": self.strict,
            "lb_active_s": self.balancer_active.as_secs_f64(),
            "lb_interfaces_s": self.balancer_interfaces.as_secs_f64(),
        })
        .to_string()
    }
}

impl Default for AwsBehaviour {
    fn default() -> Self {
        AwsBehaviour::aws_like()
    }
}

/// How the local cloud behaves.
#[derive(Debug, Clone)]
pub struct LocalCloudOptions {
    pub aws: AwsBehaviour,
    /// How long an Elastic IP's traffic takes to follow an association (AWS: 5-20 s).
    pub eip_propagation: Duration,
    /// Ports every Elastic IP stand-in listens on, besides the port of each booted
    /// instance's server (`SERVER_LISTEN` in its unit).
    pub eip_ports: Vec<u16>,
    /// How often the runner reads the emulator.
    pub poll: Duration,
    /// How long a change of a balancer listener's weights takes to reach new
    /// connections.
    pub balancer_propagation: Duration,
    /// Balancer health checks run at this fraction of the target group's interval and
    /// timeout (AWS: 5-300 s intervals); thresholds are kept.
    pub health_check_scale: f64,
}

impl Default for LocalCloudOptions {
    fn default() -> Self {
        LocalCloudOptions {
            aws: AwsBehaviour::aws_like(),
            eip_propagation: Duration::from_millis(1500),
            eip_ports: Vec::new(),
            poll: Duration::from_millis(200),
            balancer_propagation: Duration::from_millis(1500),
            health_check_scale: 0.1,
        }
    }
}

impl LocalCloudOptions {
    /// [`LocalCloudOptions::default`] with `LOCAL_CLOUD_AWS` ([`AwsBehaviour::from_env`])
    /// and `LOCAL_CLOUD_EIP_DELAY_MS` applied.
    pub fn from_env() -> Result<LocalCloudOptions, HarnessError> {
        let mut o = LocalCloudOptions {
            aws: AwsBehaviour::from_env()?,
            ..LocalCloudOptions::default()
        };
        if let Ok(ms) = std::env::var("LOCAL_CLOUD_EIP_DELAY_MS") {
            let ms: u64 = ms.trim().parse().map_err(|_| HarnessError::Failed {
                what: "reading LOCAL_CLOUD_EIP_DELAY_MS".into(),
                detail: format!("{ms:?} is not a number of milliseconds"),
            })?;
            o.eip_propagation = Duration::from_millis(ms);
        }
        Ok(o)
    }
}

/// What the runner knows of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Its user data is running.
    Booting,
    /// The boot script failed (its exit code); the boot log says why.
    BootFailed(Option<i32>),
    /// The unit's process runs (its pid).
    Serving(u32),
    /// The unit's process ended by itself (its exit code).
    Exited(Option<i32>),
    /// The instance left `running`: its processes were stopped.
    Stopped,
}

/// Everything the runner and the forwarders share with the [`LocalCloud`] handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) instances: BTreeMap<String, runner::Instance>,
    /// Elastic IP -> the stand-in its forwarder sends new connections to.
    pub(crate) eips: BTreeMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// (balancer address, listener port) -> the weights and backends new connections
    /// are spread over.
    pub(crate) balancers: BTreeMap<(Ipv4Addr, u16), balancer::Spread>,
    /// Where the process groups of every instance are listed for the watchdog.
    pub(crate) pgids_file: Option<PathBuf>,
}

impl Shared {
    /// Rewrites the watchdog's list of process groups (call after any change).
    pub(crate) fn sync_pgids(&self) {
        let Some(path) = &self.pgids_file else { return };
        let list: Vec<String> = self
            .instances
            .values()
            .flat_map(|i| i.groups.iter().map(u32::to_string))
            .collect();
        let tmp = path.with_extension("tmp");
        let written =
            std::fs::write(&tmp, list.join("\n") + "\n").and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!("local cloud: writing {}: {e}", path.display());
        }
    }
}

/// The three layers, running. Dropping it stops the runner, every instance's
/// processes, the forwarders and the emulator; a watchdog does the same if the process
/// dies without dropping it.
#[derive(Debug)]
pub struct LocalCloud {
    moto: Moto,
    sandbox: PathBuf,
    address_map: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// A local cloud shared by every test in this process (started on first use, with
/// [`LocalCloudOptions::from_env`]). Isolate tests on it by unique names and VPCs; start
/// a private one ([`LocalCloud::start`]) to see an empty account.
pub fn shared() -> &'static LocalCloud {
    static CLOUD: std::sync::OnceLock<LocalCloud> = std::sync::OnceLock::new();
    CLOUD.get_or_init(|| {
        LocalCloudOptions::from_env()
            .and_then(LocalCloud::start)
            .unwrap_or_else(|e| panic!("starting the local cloud: {e}"))
    })
}

/// The Python interpreter next to `moto_server` (`MOTO_PYTHON` overrides).
fn moto_python() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("MOTO_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let server = moto_server_bin()?;
    for name in ["python3", "python"] {
        let p = server.with_file_name(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(HarnessError::Missing {
        what: format!("a Python interpreter next to {}", server.display()),
        hint: "run tools/bootstrap.sh (creates .venv with moto[server]), or set MOTO_PYTHON".into(),
    })
}

/// The wrapper that runs moto with AWS's behaviours.
pub fn moto_wrapper_script() -> PathBuf {
    repo_root().join("tests/harness/cloud/moto_aws.py")
}

impl Moto {
    /// A private emulator with AWS's eventual consistency and refusals (see
    /// [`AwsBehaviour`]); with [`AwsBehaviour::off`] it behaves as [`Moto::start`].
    pub fn start_aws_like(aws: &AwsBehaviour) -> Result<Moto, HarnessError> {
        Moto::start_aws_like_with(aws, &[])
    }

    /// [`Moto::start_aws_like`] with more environment for the wrapper (such as
    /// `LOCAL_CLOUD_TARGET_HEALTH`, the balancer stand-in's verdicts).
    pub fn start_aws_like_with(
        aws: &AwsBehaviour,
        env: &[(&'static str, String)],
    ) -> Result<Moto, HarnessError> {
        let script = moto_wrapper_script();
        let mut all = vec![("LOCAL_CLOUD_AWS", aws.to_json())];
        all.extend(env.iter().cloned());
        Moto::start_program(&moto_python()?, Some(&script), &all)
    }
}

impl LocalCloud {
    /// Starts the emulator (through the wrapper), the instance runner and the Elastic
    /// IP stand-ins.
    pub fn start(opts: LocalCloudOptions) -> Result<LocalCloud, HarnessError> {
        let sandbox = tempfile::Builder::new()
            .prefix("harness-cloud-")
            .tempdir()
            .map_err(io_err("creating the local cloud's sandbox"))?
            .keep();
        // The balancer stand-in's health verdicts, which the emulator answers
        // DescribeTargetHealth from.
        let target_health = sandbox.join("target-health.json");
        let moto = Moto::start_aws_like_with(
            &opts.aws,
            &[(
                "LOCAL_CLOUD_TARGET_HEALTH",
                target_health.display().to_string(),
            )],
        )?;
        // One watchdog for the whole cloud: the instances' process groups (kept in a
        // file by the runner), then the sandbox. (`sh` may be dash, whose `kill` takes
        // no `--`: `kill -KILL -- -G` would kill nothing.)
        let pgids = sandbox.join("process-groups");
        crate::spawn_watchdog(&format!(
            "for g in $(cat {pgids} 2>/dev/null); do kill -KILL -$g 2>/dev/null; done\n\
             rm -rf {sandbox}",
            pgids = crate::shell_quote(&pgids),
            sandbox = crate::shell_quote(&sandbox)
        ))?;
        let address_map = sandbox.join("address-map.json");
        std::fs::write(&address_map, "{}\n").map_err(io_err("writing the address map"))?;
        let shared = Arc::new(Mutex::new(Shared {
            pgids_file: Some(pgids),
            ..Shared::default()
        }));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let ctx = runner::Context {
            moto_env: moto.env(),
            moto_endpoint: moto.endpoint(),
            access_key: moto.access_key.clone(),
            secret_key: moto.secret_key.clone(),
            sandbox: sandbox.clone(),
            address_map: address_map.clone(),
            shared: shared.clone(),
            opts,
        };
        let thread = std::thread::Builder::new()
            .name("local-cloud".into())
            .spawn(move || runner::run(ctx, stopped))
            .map_err(io_err("starting the local cloud's runner thread"))?;
        Ok(LocalCloud {
            moto,
            sandbox,
            address_map,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The emulator: `.endpoint()`, `.env()` for a child process, `.sdk_config()`.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The directory that holds every instance's root, logs and the address map.
    pub fn sandbox(&self) -> &Path {
        &self.sandbox
    }

    /// `{"<public ip>": "<stand-in>", "<private ip>": "<stand-in>"}` for every instance
    /// that runs, rewritten (atomically) as instances come and go.
    pub fn address_map_path(&self) -> &Path {
        &self.address_map
    }

    /// The loopback address instance `id` serves on, once the runner has seen it.
    pub fn standin_of(&self, id: &str) -> Option<Ipv4Addr> {
        self.lock().instances.get(id).map(|i| i.standin)
    }

    /// What the runner did and every error it met (instances taken on, stopped, not
    /// yet taken on and why), one timestamped line each.
    pub fn runner_log(&self) -> PathBuf {
        self.sandbox.join("runner.log")
    }

    /// Where instance `id`'s boot output goes (its user data's stdout and stderr, and
    /// the runner's notes, such as why it has no route).
    pub fn boot_log(&self, id: &str) -> PathBuf {
        runner::instance_dir(&self.sandbox, id).join("boot.log")
    }

    /// Where the output of instance `id`'s unit process goes (its journal).
    pub fn journal(&self, id: &str) -> PathBuf {
        runner::instance_dir(&self.sandbox, id).join("journal.log")
    }

    /// What the runner knows of instance `id`.
    pub fn status(&self, id: &str) -> Option<InstanceStatus> {
        self.lock().instances.get(id).map(|i| i.status.clone())
    }

    /// Waits (up to `deadline`) until instance `id`'s status satisfies `done`; returns
    /// the last status seen.
    pub fn wait_status(
        &self,
        id: &str,
        deadline: Duration,
        done: impl Fn(&InstanceStatus) -> bool,
    ) -> Option<InstanceStatus> {
        let start = std::time::Instant::now();
        loop {
            let s = self.status(id);
            if s.as_ref().is_some_and(&done) || start.elapsed() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The stand-in Elastic IP `eip`'s forwarder sends new connections to (`None`: no
    /// holder yet, or not an Elastic IP the forwarders know).
    pub fn eip_backend(&self, eip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.lock().eips.get(&eip).copied().flatten()
    }

    /// How the balancer stand-in listening on `ip:port` spreads new connections now:
    /// (weight, backends) per target group of the listener; `None` when no balancer
    /// listens there.
    pub fn balancer_route(&self, ip: Ipv4Addr, port: u16) -> Option<balancer::Spread> {
        self.lock().balancers.get(&(ip, port)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for LocalCloud {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The runner stops every instance on its way out; this covers a runner that died.
        let mut shared = self.lock();
        for i in shared.instances.values_mut() {
            i.stop();
        }
        shared.sync_pgids();
        drop(shared);
        let _ = self.moto._child.kill();
        let _ = self.moto._child.wait();
        let _ = std::fs::remove_dir_all(&self.sandbox);
    }
}
