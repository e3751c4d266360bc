//! Helpers shared by the deployer's emulator tests.
#![allow(dead_code, clippy::unwrap_used)]

pub mod app;
pub mod github;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deployer::aws::Clients;
use deployer::config::Config;

/// A configuration of its own (unique app, buckets, table) for one test, written from
/// `deploy.example.toml` with only those names (and `extra` keys) overridden.
#[derive(Debug, Clone)]
pub struct Setup {
    pub moto: &'static harness::Moto,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub cfg: Config,
}

/// Sets `key` in `section` ("": the top level) of a configuration document.
fn set_key(doc: &mut toml::Table, section: &str, key: &str, v: toml::Value) {
    if section.is_empty() {
        doc.insert(key.into(), v);
    } else {
        doc.entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("section is a table")
            .insert(key.into(), v);
    }
}

impl Setup {
    /// Edits the configuration file as a user edits deploy.toml: `changes` are
    /// (section or "", key, TOML value). Returns the set-up with it loaded again.
    pub fn reconfigure(&self, changes: &[(&str, &str, toml::Value)]) -> Setup {
        let text = std::fs::read_to_string(&self.config_path).expect("config");
        let mut doc: toml::Table = toml::from_str(&text).expect("config parses");
        for (section, key, v) in changes {
            set_key(&mut doc, section, key, v.clone());
        }
        std::fs::write(
            &self.config_path,
            toml::to_string(&doc).expect("serialises"),
        )
        .expect("write");
        Setup {
            cfg: Config::load(&self.config_path).expect("edited config is valid"),
            ..self.clone()
        }
    }
}

/// `extra`: (section or "", key, TOML value) overrides.
pub fn setup_with(moto: &'static harness::Moto, extra: &[(&str, &str, toml::Value)]) -> Setup {
    let root = harness::repo_root();
    let text = std::fs::read_to_string(root.join("deploy.example.toml")).expect("example");
    let mut doc: toml::Table = toml::from_str(&text).expect("example parses");
    let app = harness::unique("app");
    doc.insert("app".into(), toml::Value::String(app.clone()));
    let set = set_key;
    set(
        &mut doc,
        "state",
        "bucket",
        toml::Value::String(format!("{app}-state")),
    );
    set(
        &mut doc,
        "lock",
        "table",
        toml::Value::String(format!("{app}-locks")),
    );
    set(
        &mut doc,
        "artifacts",
        "bucket",
        toml::Value::String(format!("{app}-artifacts")),
    );
    set(&mut doc, "lock", "lease_seconds", toml::Value::Integer(3));
    for (section, key, v) in extra {
        set(&mut doc, section, key, v.clone());
    }
    let dir = std::env::temp_dir().join(format!("deployer-test-{app}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config_path = dir.join("deploy.toml");
    std::fs::write(&config_path, toml::to_string(&doc).expect("serialises")).expect("write");
    let cfg = Config::load(&config_path).expect("test config is valid");
    Setup {
        moto,
        dir,
        config_path,
        cfg,
    }
}

pub fn setup(moto: &'static harness::Moto) -> Setup {
    setup_with(moto, &[])
}

impl Setup {
    /// The deployer binary, pointed at the emulator and this configuration.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deployer"));
        c.arg("--config").arg(&self.config_path).args(args);
        for (k, v) in self.moto.env() {
            c.env(k, v);
        }
        c.env("RUST_LOG", "info")
            .env_remove("DEPLOYER_FAULT")
            .env_remove("DEPLOYER_STEP_DELAY_MS")
            .env_remove("GITHUB_RUN_ID")
            .stdin(Stdio::null());
        c
    }

    /// Runs the deployer to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("running deployer");
        Run::from(out)
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "deployer {args:?} failed:\n{}", r.all());
        r
    }

    /// `apply --auto-approve` on an initialised, empty stack: insists that it adds the
    /// whole stack and that the next plan has nothing to do. Returns the apply's run.
    pub fn apply_whole_stack(&self) -> Run {
        let applied = self.ok(&["apply", "--auto-approve"]);
        assert!(
            applied
                .stdout
                .contains("Apply complete! Resources: 13 added, 0 changed, 0 destroyed"),
            "{}",
            applied.all()
        );
        let again = self.run(&["plan", "--detailed-exitcode"]);
        assert_eq!(again.code, 0, "no changes → exit 0:\n{}", again.all());
        assert!(again.stdout.contains("No changes."), "{}", again.stdout);
        applied
    }

    pub async fn clients(&self) -> Clients {
        Clients::from_sdk(&self.moto.sdk_config().await)
    }

    pub async fn deployer(&self) -> deployer::Deployer {
        deployer::Deployer::new(self.cfg.clone(), self.clients().await)
    }

    /// Kills an `apply` with SIGKILL at each fault point of `points` in turn (each run
    /// resumes the previous one), then insists that one more `apply` finishes.
    pub fn kill_applies_then_apply(&self, points: &[&str]) {
        for point in points {
            let run = self.start_until(
                &["apply", "--auto-approve", "--lock-timeout", "30s"],
                &[("DEPLOYER_FAULT", point)],
                "fault point",
            );
            assert!(run.log.contains(point), "{}", run.log);
            run.kill9();
        }
        let r = self.run(&["apply", "--auto-approve", "--lock-timeout", "30s"]);
        assert_eq!(r.code, 0, "after kills at {points:?}:\n{}", r.all());
    }

    /// Starts the deployer and returns once its stderr shows `marker` (e.g. a fault
    /// point), with the process still running.
    pub fn start_until(&self, args: &[&str], env: &[(&str, &str)], marker: &str) -> Running {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deployer");
        let err = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let start = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let hit = line.contains(marker);
                    seen.push_str(&line);
                    seen.push('\n');
                    if hit {
                        return Running { child, log: seen };
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!("deployer ended ({status:?}) before {marker:?}:\n{seen}");
                }
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("no {marker:?} within 120s:\n{seen}");
            }
        }
    }
}

/// A deployer process stopped at a fault point.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub log: String,
}

impl Running {
    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The last line of stderr (empty when there is none): where an error is told.
    pub fn last_stderr_line(&self) -> &str {
        self.stderr.trim().lines().last().unwrap_or_default()
    }

    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The spec of one instance launched into the applied stack as `state` records it (its
/// subnet, security group and instance profile), as release `v1`.
pub fn launch_spec<'a>(
    d: &'a deployer::Deployer,
    state: &'a deployer::state::State,
    ami: &'a deployer::instances::Ami,
    user_data: &'a str,
    color: deployer::state::Color,
) -> deployer::instances::LaunchSpec<'a> {
    deployer::instances::LaunchSpec {
        cfg: &d.cfg,
        ami,
        subnet_id: &state.resources["aws_subnet.main"].id,
        security_group_id: &state.resources["aws_security_group.api"].id,
        instance_profile: &state.resources["aws_iam_instance_profile.instance"].id,
        user_data,
        color,
        release: "v1",
    }
}

/// The instance `id` as `DescribeInstances` shows it, read again for up to 30 s while
/// the new id is unknown to it (as on AWS for a moment after the launch).
pub async fn described_instance(c: &Clients, id: &str) -> aws_sdk_ec2::types::Instance {
    let started = Instant::now();
    let out = loop {
        match c.ec2.describe_instances().instance_ids(id).send().await {
            Ok(out) => break out,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("not visible yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("describe {id}: {e:?}"),
        }
    };
    out.reservations()[0].instances()[0].clone()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The arguments of `publish`: `release` of the server binary `server` with the model
/// `model_version`.
pub fn publish_args<'a>(
    release: &'a str,
    server: &'a Path,
    model_version: &'a str,
) -> [&'a str; 7] {
    [
        "publish",
        "--release",
        release,
        "--server-binary",
        path_str(server),
        "--model-version",
        model_version,
    ]
}

/// The ids of the EC2 resources of `kind` that `filters` select (one `Describe*` call),
/// for the kinds found by their tags (VPC, subnet, gateway, route table, security
/// group, Elastic IP); `None` for the others.
pub async fn ec2_ids(
    c: &Clients,
    kind: deployer::stack::Kind,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> Option<Vec<String>> {
    use deployer::stack::Kind;
    macro_rules! ids {
        ($describe:ident, $list:ident, $id:ident) => {
            c.ec2
                .$describe()
                .set_filters(Some(filters))
                .send()
                .await
                .expect(stringify!($describe))
                .$list()
                .iter()
                .filter_map(|v| v.$id().map(String::from))
                .collect()
        };
    }
    Some(match kind {
        Kind::Vpc => ids!(describe_vpcs, vpcs, vpc_id),
        Kind::Subnet => ids!(describe_subnets, subnets, subnet_id),
        Kind::InternetGateway => ids!(
            describe_internet_gateways,
            internet_gateways,
            internet_gateway_id
        ),
        Kind::RouteTable => ids!(describe_route_tables, route_tables, route_table_id),
        Kind::SecurityGroup => ids!(describe_security_groups, security_groups, group_id),
        Kind::Eip => ids!(describe_addresses, addresses, allocation_id),
        _ => return None,
    })
}

/// Checks that the emulator holds exactly the resources the state names, one to one:
/// for every EC2 kind, the resources tagged with this app and the address are exactly
/// the one in the state; IAM resources exist under the state's names; the attachment,
/// the route and the association are the state's. Returns the state.
pub async fn assert_state_matches_emulator(s: &Setup) -> deployer::state::State {
    use aws_sdk_ec2::types::Filter;
    use deployer::stack::{ADDRESS_TAG, Kind, STACK};

    let d = s.deployer().await;
    let state = d.read_state().await.expect("state readable");
    let c = &d.clients;
    let f = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let app = &s.cfg.app;
    assert_eq!(state.resources.len(), STACK.len(), "state: {state:#?}");
    for (kind, _) in STACK {
        let addr = kind.address();
        let id = state
            .resources
            .get(&addr)
            .map(|r| r.id.clone())
            .expect(&addr);
        // The Elastic IP is looked up by the app's tag alone.
        let mut filters = vec![f("tag:app", app)];
        if kind != Kind::Eip {
            filters.push(f(&format!("tag:{ADDRESS_TAG}"), &addr));
        }
        let tagged = ec2_ids(c, kind, filters).await;
        if let Some(tagged) = tagged {
            assert_eq!(
                tagged,
                vec![id.clone()],
                "{addr}: tagged resources vs state"
            );
        }
        assert!(
            d.stack().read(kind, &id).await.expect("read").is_some(),
            "{addr} {id} in the state does not exist"
        );
    }
    // The VPCs of this app: one. The gateway attached to it only; one association.
    let vpc = &state.resources["aws_vpc.main"].id;
    let igw = &state.resources["aws_internet_gateway.main"].id;
    let gws = c
        .ec2
        .describe_internet_gateways()
        .internet_gateway_ids(igw)
        .send()
        .await
        .expect("igw");
    let attached: Vec<String> = gws
        .internet_gateways()
        .iter()
        .flat_map(|g| g.attachments())
        .filter_map(|a| a.vpc_id().map(String::from))
        .collect();
    assert_eq!(attached, vec![vpc.clone()]);
    let rtb = &state.resources["aws_route_table.main"].id;
    let tables = c
        .ec2
        .describe_route_tables()
        .route_table_ids(rtb)
        .send()
        .await
        .expect("rtb");
    let assocs: Vec<String> = tables
        .route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .filter(|a| a.main() != Some(true))
        .filter_map(|a| a.route_table_association_id().map(String::from))
        .collect();
    assert_eq!(
        assocs,
        vec![
            state.resources["aws_route_table_association.main"]
                .id
                .clone()
        ]
    );
    // Nothing else in this app's VPC that the deployer would have made twice.
    let sgs = c
        .ec2
        .describe_security_groups()
        .filters(f("vpc-id", vpc))
        .filters(f("group-name", &format!("{app}-api")))
        .send()
        .await
        .expect("sgs");
    assert_eq!(
        sgs.security_groups().len(),
        1,
        "security groups named {app}-api"
    );
    let subnets = c
        .ec2
        .describe_subnets()
        .filters(f("vpc-id", vpc))
        .send()
        .await
        .expect("subnets");
    assert_eq!(subnets.subnets().len(), 1, "subnets in the VPC");
    state
}

/// `(release, model_version)` from `GET /version` at `ip:port` (the model `""` when the
/// server reports none), `None` when the request fails or is not a 200. Loopback only.
pub fn version_at(ip: std::net::IpAddr, port: u16) -> Option<(String, String)> {
    assert!(ip.is_loopback(), "only loopback is ever a target, not {ip}");
    let addr = std::net::SocketAddr::new(ip, port);
    let r = harness::http::get_at(addr, "/version", Duration::from_secs(7)).ok()?;
    if r.status != 200 {
        return None;
    }
    let v = r.json().ok()?;
    Some((
        v["release"].as_str()?.to_string(),
        v["model_version"].as_str().unwrap_or_default().to_string(),
    ))
}

/// Waits until `ip:port` reports `release` on `/version` (and `model`, when given): the
/// Elastic IP's move takes a moment to reach traffic. Returns what it reported last,
/// which is the wanted pair unless `within` ran out first. Loopback only.
pub fn wait_version(
    ip: std::net::IpAddr,
    port: u16,
    release: &str,
    model: Option<&str>,
    within: Duration,
) -> Option<(String, String)> {
    let start = Instant::now();
    loop {
        let now = version_at(ip, port);
        let arrived = now
            .as_ref()
            .is_some_and(|(r, m)| r == release && model.is_none_or(|want| m == want));
        if arrived || start.elapsed() > within {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `ip:port` serves `release` (and `model`, when given) within 30 s.
pub fn assert_serving(ip: std::net::IpAddr, port: u16, release: &str, model: Option<&str>) {
    let now = wait_version(ip, port, release, model, Duration::from_secs(30));
    assert!(
        now.as_ref()
            .is_some_and(|(r, m)| r == release && model.is_none_or(|want| m == want)),
        "{ip}:{port} serves {now:?}, not {release} {model:?}, 30 s on"
    );
}

/// `deploy` / `rollback` arguments `head` followed by the production probe path through
/// the local cloud's address map (`address_map`), quick probes, and `--no-wait`.
pub fn release_args<'a>(address_map: &'a Path, head: &[&'a str]) -> Vec<&'a str> {
    let mut a = head.to_vec();
    a.extend([
        "--address-map",
        path_str(address_map),
        "--probe-interval",
        "200ms",
        "--health-deadline",
        "90s",
        "--no-wait",
    ]);
    a
}
