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
//!   (and, with HTTPS on, `SERVER_HTTPS_LISTEN` and `SERVER_ACME_HTTP_LISTEN`) moved
//!   from `0.0.0.0:PORT` to `<stand-in>:PORT`, and what the instance role would
//!   give it (the emulator's endpoint and keys); output in `journal.log`;
//! * stops the instance's processes (the whole process group) once it leaves `running`.
//!
//! It also keeps the address map (`{"<public ip>": "<stand-in>", "<private ip>": …}`)
//! and drives the Elastic IP forwarders ([`super::eip`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use base64::Engine as _;

use super::boot::Boot;
use super::{InstanceStatus, LocalCloudOptions, Shared, balancer, eip};
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
    pub(crate) server: Option<Child>,
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

    pub(crate) fn alive(&self) -> bool {
        self.status != InstanceStatus::Stopped
    }
}

pub(crate) fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn instance_dir(sandbox: &Path, id: &str) -> PathBuf {
    sandbox.join("instances").join(id)
}

pub(crate) fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
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
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let mut state = Runner {
            log: ctx.sandbox.join("runner.log"),
            missed: BTreeMap::new(),
            // Two clouds on one machine (tests in parallel, a demo beside them) start
            // far apart, and skip addresses someone else serves on.
            next_standin: rand::random_range(2..0xFF00),
            last_map: String::new(),
            forwarders: eip::Forwarders::new(
                ctx.shared.clone(),
                ctx.opts.eip_propagation,
                ctx.opts.eip_ports.clone(),
            ),
            balancers: balancer::Balancers::new(
                ctx.shared.clone(),
                ctx.opts.balancer_propagation,
                ctx.opts.health_check_scale,
                ctx.sandbox.join("target-health.json"),
            ),
        };
        loop {
            if let Err(e) = state.tick(&ctx, &ec2, &elb).await {
                note(&state.log, &format!("tick failed: {e}"));
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
        state.balancers.stop_all();
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut shared = lock(&ctx.shared);
    for i in shared.instances.values_mut() {
        i.stop();
    }
    shared.sync_pgids();
}

struct Runner {
    /// `<sandbox>/runner.log`: what the runner did and every error it met (the demo
    /// and the tests show it when an instance does not come up).
    log: PathBuf,
    /// How many listings in a row have missed each instance taken on.
    missed: BTreeMap<String, u32>,
    next_standin: u32,
    last_map: String,
    forwarders: eip::Forwarders,
    balancers: balancer::Balancers,
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
    async fn tick(
        &mut self,
        ctx: &Arc<Context>,
        ec2: &aws_sdk_ec2::Client,
        elb: &aws_sdk_elasticloadbalancingv2::Client,
    ) -> Fallible<()> {
        let seen = list_instances(ec2).await?;
        let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
        for s in &seen {
            let known = lock(&ctx.shared).instances.contains_key(&s.id);
            if s.state == "running" && !known {
                // Tried again at the next tick if the emulator is not ready for it.
                if let Err(e) = self.take_on(ctx, ec2, s).await {
                    note(&self.log, &format!("{}: not taken on yet: {e}", s.id));
                }
            } else if known {
                let mut shared = lock(&ctx.shared);
                let mut stopped = false;
                if let Some(i) = shared.instances.get_mut(&s.id) {
                    i.public_ip.clone_from(&s.public_ip);
                    i.private_ip.clone_from(&s.private_ip);
                    if s.state != "running" && s.state != "pending" && i.alive() {
                        note(&self.log, &format!("{} is {}: stopping it", s.id, s.state));
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
            // Gone from the emulator altogether (a reset): stop it too, once it has
            // been missing for MISSED_LISTINGS listings in a row (about 5 s). A
            // listing is eventually consistent too: the wrapped emulator has been
            // seen answering an empty DescribeInstances for ~0.6 s right after it
            // listed a new instance (cause not found), and that must not kill a boot.
            let mut shared = lock(&ctx.shared);
            let mut stopped = false;
            for (id, i) in shared.instances.iter_mut() {
                if ids.contains(id.as_str()) || !i.alive() {
                    self.missed.remove(id);
                    continue;
                }
                let n = self.missed.entry(id.clone()).or_insert(0);
                *n += 1;
                note(
                    &self.log,
                    &format!(
                        "{id} is not listed by DescribeInstances ({n} in a row; the listing had {} instances)",
                        seen.len()
                    ),
                );
                if *n >= MISSED_LISTINGS {
                    note(
                        &self.log,
                        &format!("{id} is gone from the emulator: stopping it"),
                    );
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
        let view = balancer::observe(elb).await?;
        // A balancer's Elastic IPs are its stand-in's, not the forwarders'.
        let on_balancers = balancer::Balancers::addresses(&view);
        let holders: Vec<(Ipv4Addr, Option<String>)> = addresses
            .addresses()
            .iter()
            .filter(|a| {
                let owned_by_balancer = a.instance_id().is_none_or(str::is_empty)
                    && a.network_interface_id().is_some_and(|n| !n.is_empty());
                !owned_by_balancer
                    && !a
                        .public_ip()
                        .and_then(|ip| ip.parse().ok())
                        .is_some_and(|ip| on_balancers.contains(&ip))
            })
            .filter_map(|a| {
                let ip: Ipv4Addr = a.public_ip()?.parse().ok()?;
                let holder = a.instance_id().filter(|i| !i.is_empty()).map(String::from);
                Some((ip, holder))
            })
            .collect();
        self.forwarders.update(&holders);
        self.balancers.update(&view);
        Ok(())
    }

    /// A stand-in address no live instance or Elastic IP of this cloud uses, where
    /// nothing else on the machine listens on any of `ports` either.
    fn allocate_standin(&mut self, shared: &Shared, ports: &[u16]) -> Ipv4Addr {
        // Bounded: after one full round without an address free on the machine (say,
        // something listens on 0.0.0.0 on one of the ports), the next one this cloud
        // does not use is taken anyway, and the runner says so.
        let mut check_machine = true;
        for tried in 0u32.. {
            if tried == 0xFFFF {
                check_machine = false;
                note(
                    &self.log,
                    &format!(
                        "no stand-in address is free on the machine for ports {ports:?}: taking one anyway"
                    ),
                );
            }
            let n = self.next_standin;
            self.next_standin = if n >= 0xFFFE { 2 } else { n + 1 };
            let ip = Ipv4Addr::new(127, 77, (n >> 8) as u8, (n & 0xFF) as u8);
            let taken = shared
                .instances
                .values()
                .any(|i| i.standin == ip && i.alive())
                || shared.eips.contains_key(&ip);
            if !taken
                && (n & 0xFF) != 0
                && (n & 0xFF) != 255
                && (!check_machine || free_on(ip, ports))
            {
                return ip;
            }
        }
        unreachable!("the loop returns within two rounds")
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
            let mut ports = ctx.opts.eip_ports.clone();
            ports.extend(
                shared
                    .instances
                    .values()
                    .flat_map(|i| i.ports.iter().copied()),
            );
            ports.sort_unstable();
            ports.dedup();
            let standin = self.allocate_standin(&shared, &ports);
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
        note(
            &self.log,
            &format!("{} runs: booting it on {standin}", s.id),
        );
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
        // A private address is unique only within its VPC: two live instances of two
        // VPCs (two tests, two apps) may share one. Such an address names no single
        // instance, so it is left out of the map (a prober from outside the VPC could
        // not use it on AWS either).
        let mut shared_private = BTreeSet::new();
        for i in lock(&ctx.shared).instances.values().filter(|i| i.alive()) {
            for ip in [&i.public_ip, &i.private_ip].into_iter().flatten() {
                // An Elastic IP (loopback) is served by its own forwarder, and moto
                // leaves it on the instance it moved away from: never map it.
                if ip.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback()) {
                    continue;
                }
                let standin = i.standin.to_string();
                if let Some(other) = map.insert(ip.clone(), standin.clone())
                    && other != standin
                {
                    shared_private.insert(ip.clone());
                }
            }
        }
        for ip in &shared_private {
            map.remove(ip);
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

/// Whether no other process serves on `ip` on any of `ports` (only "address in use"
/// counts: a privileged port this process may not bind is not taken).
/// How many listings in a row must miss an instance before the runner takes it for
/// gone (at the default 200 ms poll: about 5 s).
const MISSED_LISTINGS: u32 = 25;

/// Appends a timestamped line to the runner's log (and logs it through `tracing`).
fn note(log: &Path, line: &str) {
    tracing::info!("local cloud: {line}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
        use std::io::Write as _;
        let _ = writeln!(f, "{stamp:.3} {line}");
    }
}

fn free_on(ip: Ipv4Addr, ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|p| match std::net::TcpListener::bind((ip, *p)) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        })
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

/// Reaps server processes that ended by themselves (called by the forwarders' tick).
pub(crate) fn reap(shared: &Mutex<Shared>) {
    let mut shared = lock(shared);
    let mut reaped = false;
    for i in shared.instances.values_mut() {
        if let Some(c) = i.server.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            // Its group is gone: a later kill of that number could hit a stranger.
            let pid = c.id();
            i.groups.retain(|g| *g != pid);
            i.server = None;
            reaped = true;
            if i.alive() {
                i.status = InstanceStatus::Exited(st.code());
            }
        }
    }
    if reaped {
        shared.sync_pgids();
    }
}
