//! Instances that boot: the runner follows the emulator's instances and, for each one
//! that reaches `running`, does what EC2 and systemd would do on a real machine:
//!
//! * gives it a loopback stand-in address of its own (127.77.x.y: moto's Elastic IPs
//!   are random 127.x.y.z, so a stand-in is never one that an Elastic IP holds now);
//! * runs its user data (`DescribeInstanceAttribute userData`, the real `boot.sh`) with
//!   `ROOT=<its sandbox root>`, `SYSTEMCTL=<a stub that records the calls>` and
//!   `SERVICE_USER=<this user>`; output in `<sandbox>/instances/<id>/boot.log`;
//! * honours the VPC: with neither a public address routed to an internet gateway nor
//!   an S3 gateway endpoint on its subnet's route table, the instance has no route to
//!   S3. Its `curl` then fails as on AWS (exit 28, connection timed out) and its
//!   server's S3 endpoint refuses;
//! * starts what the installed unit (`etc/systemd/system/churn-api.service`) describes:
//!   `ExecStart` under the sandbox root, the unit's `Environment=` with `SERVER_LISTEN`
//!   moved from `0.0.0.0:PORT` to `<stand-in>:PORT`, and what the instance role would
//!   give it (the emulator's endpoint and keys); output in `journal.log`;
//! * stops the instance's processes (the whole process group) once it leaves `running`.
//!
//! It also keeps the address map (`{"<public ip>": "<stand-in>", "<private ip>": …}`)
//! and drives the Elastic IP forwarders ([`super::eip`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use base64::Engine as _;

use super::{InstanceStatus, LocalCloudOptions, Shared, eip};
use crate::REGION;

pub(crate) struct Context {
    pub(crate) moto_env: Vec<(&'static str, String)>,
    pub(crate) moto_endpoint: String,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) sandbox: PathBuf,
    pub(crate) address_map: PathBuf,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) opts: LocalCloudOptions,
}

/// One instance the runner has taken on.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) standin: Ipv4Addr,
    pub(crate) public_ip: Option<String>,
    pub(crate) private_ip: Option<String>,
    pub(crate) status: InstanceStatus,
    /// The ports its unit's server listens on.
    pub(crate) ports: Vec<u16>,
    /// Process groups to end when it stops (its boot script, its server).
    pub(crate) groups: Vec<u32>,
    server: Option<Child>,
}

impl Instance {
    /// Ends every process of the instance (each started in a process group of its own).
    pub(crate) fn stop(&mut self) {
        for g in self.groups.drain(..) {
            kill_group(g);
        }
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.status = InstanceStatus::Stopped;
    }

    fn alive(&self) -> bool {
        self.status != InstanceStatus::Stopped
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn instance_dir(sandbox: &Path, id: &str) -> PathBuf {
    sandbox.join("instances").join(id)
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The runner thread: polls the emulator until `stopped` says so, then ends every
/// instance's processes.
pub(crate) fn run(ctx: Context, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("local-cloud-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("local cloud: cannot start its runtime: {e}");
            return;
        }
    };
    let ctx = Arc::new(ctx);
    rt.block_on(async {
        let creds = aws_credential_types::Credentials::new(
            &ctx.access_key,
            &ctx.secret_key,
            None,
            None,
            "local-cloud",
        );
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&ctx.moto_endpoint)
            .credentials_provider(creds)
            .load()
            .await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let mut state = Runner {
            next_standin: 2,
            last_map: String::new(),
            forwarders: eip::Forwarders::new(
                ctx.shared.clone(),
                ctx.opts.eip_propagation,
                ctx.opts.eip_ports.clone(),
            ),
        };
        loop {
            if let Err(e) = state.tick(&ctx, &ec2).await {
                tracing::warn!("local cloud: {e}");
            }
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tokio::time::sleep(ctx.opts.poll) => {}
            }
            if *stopped.borrow() {
                break;
            }
        }
        state.forwarders.stop_all();
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut shared = lock(&ctx.shared);
    for i in shared.instances.values_mut() {
        i.stop();
    }
    shared.sync_pgids();
}

struct Runner {
    next_standin: u32,
    last_map: String,
    forwarders: eip::Forwarders,
}

/// What the runner reads of one instance in `DescribeInstances`.
struct Seen {
    id: String,
    state: String,
    public_ip: Option<String>,
    private_ip: Option<String>,
    subnet: Option<String>,
    vpc: Option<String>,
}

type Fallible<T> = Result<T, String>;

fn sdk_err<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {}", aws_sdk_ec2::error::DisplayErrorContext(&e))
}

impl Runner {
    async fn tick(&mut self, ctx: &Arc<Context>, ec2: &aws_sdk_ec2::Client) -> Fallible<()> {
        let seen = list_instances(ec2).await?;
        let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
        for s in &seen {
            let known = lock(&ctx.shared).instances.contains_key(&s.id);
            if s.state == "running" && !known {
                // Tried again at the next tick if the emulator is not ready for it.
                if let Err(e) = self.take_on(ctx, ec2, s).await {
                    tracing::warn!("local cloud: {}: {e}", s.id);
                }
            } else if known {
                let mut shared = lock(&ctx.shared);
                let mut stopped = false;
                if let Some(i) = shared.instances.get_mut(&s.id) {
                    i.public_ip.clone_from(&s.public_ip);
                    i.private_ip.clone_from(&s.private_ip);
                    if s.state != "running" && s.state != "pending" && i.alive() {
                        tracing::info!("local cloud: {} is {}: stopping it", s.id, s.state);
                        i.stop();
                        stopped = true;
                    }
                }
                if stopped {
                    shared.sync_pgids();
                }
            }
        }
        {
            // Gone from the emulator altogether (a reset): stop it too.
            let mut shared = lock(&ctx.shared);
            let mut stopped = false;
            for (id, i) in shared.instances.iter_mut() {
                if !ids.contains(id.as_str()) && i.alive() {
                    i.stop();
                    stopped = true;
                }
            }
            if stopped {
                shared.sync_pgids();
            }
        }
        self.write_address_map(ctx)?;
        let addresses = ec2
            .describe_addresses()
            .send()
            .await
            .map_err(sdk_err("DescribeAddresses"))?;
        let holders: Vec<(Ipv4Addr, Option<String>)> = addresses
            .addresses()
            .iter()
            .filter_map(|a| {
                let ip: Ipv4Addr = a.public_ip()?.parse().ok()?;
                let holder = a.instance_id().filter(|i| !i.is_empty()).map(String::from);
                Some((ip, holder))
            })
            .collect();
        self.forwarders.update(&holders);
        Ok(())
    }

    fn allocate_standin(&mut self, shared: &Shared) -> Ipv4Addr {
        loop {
            let n = self.next_standin;
            self.next_standin = if n >= 0xFFFE { 2 } else { n + 1 };
            let ip = Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xFF) as u8);
            let taken = shared
                .instances
                .values()
                .any(|i| i.standin == ip && i.alive())
                || shared.eips.contains_key(&ip);
            if !taken && (n & 0xFF) != 0 && (n & 0xFF) != 255 {
                return ip;
            }
        }
    }

    /// A new running instance: read its user data and its route, then boot it.
    async fn take_on(
        &mut self,
        ctx: &Arc<Context>,
        ec2: &aws_sdk_ec2::Client,
        s: &Seen,
    ) -> Fallible<()> {
        let attr = ec2
            .describe_instance_attribute()
            .instance_id(&s.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(sdk_err("DescribeInstanceAttribute userData"))?;
        let user_data = attr
            .user_data()
            .and_then(|u| u.value())
            .map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("{}: user data is not base64: {e}", s.id))
            })
            .transpose()?;
        let route = route_to_s3(ec2, s).await?;
        let dir = instance_dir(&ctx.sandbox, &s.id);
        fs::create_dir_all(dir.join("root")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let standin = {
            let mut shared = lock(&ctx.shared);
            let standin = self.allocate_standin(&shared);
            shared.instances.insert(
                s.id.clone(),
                Instance {
                    standin,
                    public_ip: s.public_ip.clone(),
                    private_ip: s.private_ip.clone(),
                    status: InstanceStatus::Booting,
                    ports: Vec::new(),
                    groups: Vec::new(),
                    server: None,
                },
            );
            standin
        };
        tracing::info!("local cloud: {} runs: booting it on {standin}", s.id);
        let boot = Boot {
            ctx: ctx.clone(),
            id: s.id.clone(),
            standin,
            dir,
            user_data,
            route,
        };
        std::thread::Builder::new()
            .name(format!("boot-{}", s.id))
            .spawn(move || boot.run())
            .map_err(|e| format!("starting the boot thread of {}: {e}", s.id))?;
        Ok(())
    }

    fn write_address_map(&mut self, ctx: &Context) -> Fallible<()> {
        let mut map = BTreeMap::new();
        for i in lock(&ctx.shared).instances.values().filter(|i| i.alive()) {
            for ip in [&i.public_ip, &i.private_ip].into_iter().flatten() {
                // An Elastic IP (loopback) is served by its own forwarder, and moto
                // leaves it on the instance it moved away from: never map it.
                if ip.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback()) {
                    continue;
                }
                map.insert(ip.clone(), i.standin.to_string());
            }
        }
        let text = serde_json::to_string_pretty(&map).map_err(|e| e.to_string())? + "\n";
        if text != self.last_map {
            let tmp = ctx.address_map.with_extension("json.tmp");
            fs::write(&tmp, &text)
                .and_then(|()| fs::rename(&tmp, &ctx.address_map))
                .map_err(|e| format!("writing {}: {e}", ctx.address_map.display()))?;
            self.last_map = text;
        }
        Ok(())
    }
}

async fn list_instances(ec2: &aws_sdk_ec2::Client) -> Fallible<Vec<Seen>> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let page = ec2
            .describe_instances()
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk_err("DescribeInstances"))?;
        for r in page.reservations() {
            for i in r.instances() {
                let Some(id) = i.instance_id() else { continue };
                out.push(Seen {
                    id: id.to_string(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    public_ip: i.public_ip_address().map(String::from),
                    private_ip: i.private_ip_address().map(String::from),
                    subnet: i.subnet_id().map(String::from),
                    vpc: i.vpc_id().map(String::from),
                });
            }
        }
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

/// Whether instance `s` can reach S3: `Ok(how)` or `Err(why not)` inside.
async fn route_to_s3(ec2: &aws_sdk_ec2::Client, s: &Seen) -> Fallible<Result<String, String>> {
    let (Some(subnet), Some(vpc)) = (&s.subnet, &s.vpc) else {
        return Ok(Err("it is in no subnet".into()));
    };
    let filter = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let mut tables = ec2
        .describe_route_tables()
        .filters(filter("association.subnet-id", subnet))
        .send()
        .await
        .map_err(sdk_err("DescribeRouteTables"))?
        .route_tables
        .unwrap_or_default();
    if tables.is_empty() {
        tables = ec2
            .describe_route_tables()
            .filters(filter("vpc-id", vpc))
            .filters(filter("association.main", "true"))
            .send()
            .await
            .map_err(sdk_err("DescribeRouteTables"))?
            .route_tables
            .unwrap_or_default();
    }
    let Some(table) = tables.first() else {
        return Ok(Err(format!("subnet {subnet} has no route table")));
    };
    let rtb = table.route_table_id().unwrap_or_default().to_string();
    let igw = table.routes().iter().find_map(|r| {
        let gw = r.gateway_id().filter(|g| g.starts_with("igw-"))?;
        (r.destination_cidr_block() == Some("0.0.0.0/0")).then(|| gw.to_string())
    });
    if let (Some(ip), Some(igw)) = (&s.public_ip, &igw) {
        return Ok(Ok(format!("public address {ip} through {igw} ({rtb})")));
    }
    let s3 = format!("com.amazonaws.{REGION}.s3");
    let endpoints = ec2
        .describe_vpc_endpoints()
        .send()
        .await
        .map_err(sdk_err("DescribeVpcEndpoints"))?;
    if let Some(e) = endpoints.vpc_endpoints().iter().find(|e| {
        e.vpc_id() == Some(vpc.as_str())
            && e.service_name() == Some(s3.as_str())
            && e.route_table_ids().contains(&rtb)
    }) {
        return Ok(Ok(format!(
            "S3 gateway endpoint {} on {rtb}",
            e.vpc_endpoint_id().unwrap_or_default()
        )));
    }
    let internet = match (&s.public_ip, &igw) {
        (None, _) => "no public IPv4 address".to_string(),
        (Some(ip), None) => {
            format!("public address {ip} but no 0.0.0.0/0 route to an internet gateway in {rtb}")
        }
        (Some(_), Some(_)) => unreachable!("returned above"),
    };
    Ok(Err(format!(
        "{internet}, and no S3 gateway endpoint ({s3}) on {rtb}: no route to S3"
    )))
}

/// The boot of one instance, on a thread of its own.
struct Boot {
    ctx: Arc<Context>,
    id: String,
    standin: Ipv4Addr,
    dir: PathBuf,
    user_data: Option<Vec<u8>>,
    route: Result<String, String>,
}

impl Boot {
    fn note(&self, log: &mut fs::File, line: &str) {
        let _ = writeln!(log, "local-cloud: {}: {line}", self.id);
    }

    fn set_status(&self, status: InstanceStatus) {
        if let Some(i) = lock(&self.ctx.shared).instances.get_mut(&self.id)
            && i.alive()
        {
            i.status = status;
        }
    }

    fn run(self) {
        let log_path = self.dir.join("boot.log");
        let mut log = match fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("local cloud: {}: {e}", log_path.display());
                self.set_status(InstanceStatus::BootFailed(None));
                return;
            }
        };
        if let Err(why) = self.boot(&mut log) {
            if let Some(i) = lock(&self.ctx.shared).instances.get_mut(&self.id)
                && i.status == InstanceStatus::Booting
            {
                i.status = InstanceStatus::BootFailed(None);
            }
            self.note(&mut log, &why);
            tracing::warn!("local cloud: {}: {why}", self.id);
        }
    }

    fn boot(&self, log: &mut fs::File) -> Result<(), String> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| format!("{what}: {e}")
        };
        self.note(log, &format!("stand-in address {}", self.standin));
        match &self.route {
            Ok(how) => self.note(log, &format!("route to S3: {how}")),
            Err(why) => self.note(log, why),
        }
        let Some(user_data) = &self.user_data else {
            self.set_status(InstanceStatus::BootFailed(None));
            return Err("no user data: nothing to boot".into());
        };
        let root = self.dir.join("root");
        let bin = self.dir.join("bin");
        fs::create_dir_all(&bin).map_err(io("creating bin"))?;
        let script = self.dir.join("user-data");
        fs::write(&script, user_data).map_err(io("writing the user data"))?;
        let calls = self.dir.join("systemctl.calls");
        let systemctl = bin.join("systemctl");
        write_exec(
            &systemctl,
            &format!(
                "#!/bin/sh\n# systemctl stand-in: the runner starts the unit itself.\n\
                 echo \"$*\" >> {}\n",
                crate::shell_quote(&calls)
            ),
        )?;
        let mut path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        if self.route.is_err() {
            // No route: a connection to S3 would hang until curl's connect timeout.
            let nonet = self.dir.join("nonet");
            fs::create_dir_all(&nonet).map_err(io("creating nonet"))?;
            write_exec(
                &nonet.join("curl"),
                "#!/bin/sh\n# No route to S3 from this instance (local cloud).\n\
                 for a; do url=$a; done\nhost=${url#*://}; host=${host%%/*}\n\
                 echo \"curl: (28) Failed to connect to $host after 130000 ms: Connection timed out\" >&2\n\
                 exit 28\n",
            )?;
            path = format!("{}:{path}", nonet.display());
        }
        let out = log.try_clone().map_err(io("boot log"))?;
        let err = log.try_clone().map_err(io("boot log"))?;
        let mut child = Command::new("bash")
            .arg(&script)
            .env("ROOT", &root)
            .env("SYSTEMCTL", &systemctl)
            .env("SERVICE_USER", current_user())
            .env("PATH", &path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io("running the user data"))?;
        let pgid = child.id();
        let registered = {
            let mut shared = lock(&self.ctx.shared);
            let registered = match shared.instances.get_mut(&self.id) {
                Some(i) if i.alive() => {
                    i.groups.push(pgid);
                    true
                }
                _ => false,
            };
            shared.sync_pgids();
            registered
        };
        if !registered {
            kill_group(pgid);
        }
        let status = child.wait().map_err(io("waiting for the user data"));
        {
            let mut shared = lock(&self.ctx.shared);
            if let Some(i) = shared.instances.get_mut(&self.id) {
                i.groups.retain(|g| *g != pgid);
            }
            shared.sync_pgids();
        }
        let status = status?;
        if !status.success() {
            self.set_status(InstanceStatus::BootFailed(status.code()));
            return Err(format!("user data failed ({status})"));
        }
        self.note(log, "user data done");
        let unit_path = root.join("etc/systemd/system/churn-api.service");
        let unit = fs::read_to_string(&unit_path).map_err(|e| {
            self.set_status(InstanceStatus::BootFailed(None));
            format!("no unit installed at {}: {e}", unit_path.display())
        })?;
        self.start_unit(log, &root, &unit)
    }

    fn start_unit(&self, log: &mut fs::File, root: &Path, unit: &str) -> Result<(), String> {
        let mut exec = None;
        let mut env = Vec::new();
        let mut ports = Vec::new();
        for line in unit.lines().map(str::trim) {
            if let Some(kv) = line.strip_prefix("Environment=") {
                let kv = kv.trim_matches('"');
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = if k == "SERVER_LISTEN" {
                    let port = v.rsplit_once(':').map(|(_, p)| p).unwrap_or(v);
                    if let Ok(p) = port.parse::<u16>() {
                        ports.push(p);
                    }
                    format!("{}:{port}", self.standin)
                } else {
                    v.to_string()
                };
                env.push((k.to_string(), v));
            } else if let Some(e) = line.strip_prefix("ExecStart=") {
                exec = Some(e.to_string());
            }
        }
        let exec = exec.ok_or("the unit has no ExecStart")?;
        let mut words = exec.split_whitespace();
        let program = words.next().ok_or("ExecStart is empty")?;
        let program = root.join(program.trim_start_matches('/'));
        let journal = self.dir.join("journal.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal)
            .map_err(|e| format!("{}: {e}", journal.display()))?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&program);
        cmd.args(words)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .process_group(0);
        // What the instance role gives it: S3 through the emulator, if it has a route.
        for (k, v) in &self.ctx.moto_env {
            cmd.env(k, v);
        }
        if self.route.is_err() {
            cmd.env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", refusing_port()),
            );
        }
        let mut shared = lock(&self.ctx.shared);
        let Some(i) = shared.instances.get_mut(&self.id).filter(|i| i.alive()) else {
            return Err("stopped before its unit started".into());
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let pid = child.id();
        i.groups.push(pid);
        i.server = Some(child);
        i.ports = ports;
        i.status = InstanceStatus::Serving(pid);
        shared.sync_pgids();
        drop(shared);
        self.note(
            log,
            &format!(
                "started {} (pid {pid}), journal in {}",
                program.display(),
                journal.display()
            ),
        );
        Ok(())
    }
}

fn write_exec(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A loopback port nothing listens on (bound a moment ago, then closed): connecting
/// is refused at once.
fn refusing_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9)
}

fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "nobody".into())
}

/// Reaps server processes that ended by themselves (called by the forwarders' tick).
pub(crate) fn reap(shared: &Mutex<Shared>) {
    for i in lock(shared).instances.values_mut() {
        if let Some(c) = i.server.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            i.server = None;
            if i.alive() {
                i.status = InstanceStatus::Exited(st.code());
            }
        }
    }
}
