//! Helpers shared by the deployer's emulator tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deployer::aws::Clients;
use deployer::config::Config;

/// A configuration of its own (unique app, buckets, table) for one test, written from
/// `deploy.example.toml` with only those names (and `extra` keys) overridden.
#[derive(Debug)]
pub struct Setup {
    pub moto: &'static harness::Moto,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub cfg: Config,
}

/// `extra`: (section or "", key, TOML value) overrides.
pub fn setup_with(moto: &'static harness::Moto, extra: &[(&str, &str, toml::Value)]) -> Setup {
    let root = harness::repo_root();
    let text = std::fs::read_to_string(root.join("deploy.example.toml")).expect("example");
    let mut doc: toml::Table = toml::from_str(&text).expect("example parses");
    let app = harness::unique("app");
    doc.insert("app".into(), toml::Value::String(app.clone()));
    let set = |doc: &mut toml::Table, section: &str, key: &str, v: toml::Value| {
        if section.is_empty() {
            doc.insert(key.into(), v);
        } else {
            doc.entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("section is a table")
                .insert(key.into(), v);
        }
    };
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

    pub async fn clients(&self) -> Clients {
        Clients::from_sdk(&self.moto.sdk_config().await)
    }

    pub async fn deployer(&self) -> deployer::Deployer {
        deployer::Deployer::new(self.cfg.clone(), self.clients().await)
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
    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
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
        let tagged: Option<Vec<String>> = match kind {
            Kind::Vpc => Some(
                c.ec2
                    .describe_vpcs()
                    .filters(f("tag:app", app))
                    .filters(f(&format!("tag:{ADDRESS_TAG}"), &addr))
                    .send()
                    .await
                    .expect("describe")
                    .vpcs()
                    .iter()
                    .filter_map(|v| v.vpc_id().map(String::from))
                    .collect(),
            ),
            Kind::Subnet => Some(
                c.ec2
                    .describe_subnets()
                    .filters(f("tag:app", app))
                    .filters(f(&format!("tag:{ADDRESS_TAG}"), &addr))
                    .send()
                    .await
                    .expect("describe")
                    .subnets()
                    .iter()
                    .filter_map(|v| v.subnet_id().map(String::from))
                    .collect(),
            ),
            Kind::InternetGateway => Some(
                c.ec2
                    .describe_internet_gateways()
                    .filters(f("tag:app", app))
                    .filters(f(&format!("tag:{ADDRESS_TAG}"), &addr))
                    .send()
                    .await
                    .expect("describe")
                    .internet_gateways()
                    .iter()
                    .filter_map(|v| v.internet_gateway_id().map(String::from))
                    .collect(),
            ),
            Kind::RouteTable => Some(
                c.ec2
                    .describe_route_tables()
                    .filters(f("tag:app", app))
                    .filters(f(&format!("tag:{ADDRESS_TAG}"), &addr))
                    .send()
                    .await
                    .expect("describe")
                    .route_tables()
                    .iter()
                    .filter_map(|v| v.route_table_id().map(String::from))
                    .collect(),
            ),
            Kind::SecurityGroup => Some(
                c.ec2
                    .describe_security_groups()
                    .filters(f("tag:app", app))
                    .filters(f(&format!("tag:{ADDRESS_TAG}"), &addr))
                    .send()
                    .await
                    .expect("describe")
                    .security_groups()
                    .iter()
                    .filter_map(|v| v.group_id().map(String::from))
                    .collect(),
            ),
            Kind::Eip => Some(
                c.ec2
                    .describe_addresses()
                    .filters(f("tag:app", app))
                    .send()
                    .await
                    .expect("describe")
                    .addresses()
                    .iter()
                    .filter_map(|v| v.allocation_id().map(String::from))
                    .collect(),
            ),
            _ => None,
        };
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
