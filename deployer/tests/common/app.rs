//! One app on the shared local cloud, as the release tests drive it: `init`, `apply`,
//! the model in the artifact bucket, releases published, then `deploy`/`rollback`
//! through the production probe path (the instances' addresses via the local cloud's
//! address map); and what an app leaves behind after `destroy`.

use std::net::IpAddr;

use aws_sdk_ec2::types::Filter;
use deployer::stack::Kind;
use deployer::state::Color;
use harness::cloud::LocalCloud;

use super::{Run, Setup, ec2_ids, publish_args, setup_with};

fn cloud() -> &'static LocalCloud {
    harness::cloud::shared()
}

/// An app (unique names, its own VPC) on [`harness::cloud::shared`].
pub struct CloudApp {
    pub s: Setup,
    /// Its `api_port` (a free port of this machine).
    pub port: u16,
}

impl CloudApp {
    /// `init`, `apply`, the promoted model fixture uploaded, and `releases` published
    /// with the workspace's server binary; `extra` are `deploy.toml` overrides
    /// (section or "", key, value) besides a free `api_port`.
    pub async fn new(extra: &[(&str, &str, toml::Value)], releases: &[&str]) -> CloudApp {
        let port = harness::free_port();
        let mut keys = vec![("", "api_port", toml::Value::Integer(port.into()))];
        keys.extend(extra.iter().cloned());
        let s = setup_with(cloud().moto(), &keys);
        let app = CloudApp { s, port };
        app.ok(&["init"]).await;
        app.ok(&["apply", "--auto-approve"]).await;
        let (model, model_version) = harness::artifact::promoted_dir();
        let s3 = app.s.clients().await.s3;
        harness::upload_dir(&s3, &app.s.cfg.artifacts.bucket, "models", model.path()).await;
        let server = harness::workspace_bin("server").unwrap_or_else(|e| panic!("{e}"));
        for r in releases {
            app.ok(&publish_args(r, &server, &model_version)).await;
        }
        app
    }

    /// Runs the deployer with `env` added, off the async runtime.
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.s.cmd(args);
        c.envs(env.iter().copied());
        tokio::task::spawn_blocking(move || Run::from(c.output().expect("running deployer")))
            .await
            .unwrap()
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[]).await
    }

    /// Runs the deployer and insists on success at the first try; on failure the
    /// message carries the instances' logs and the runner's.
    pub async fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args).await;
        assert_eq!(
            r.code,
            0,
            "deployer {args:?} failed:\n{}\n{}",
            r.all(),
            self.logs().await
        );
        r
    }

    /// `deploy` / `rollback` arguments: the production probe path through the map.
    pub fn release_args<'a>(&'a self, head: &[&'a str]) -> Vec<&'a str> {
        super::release_args(cloud().address_map_path(), head)
    }

    pub async fn state(&self) -> deployer::state::State {
        self.s.deployer().await.read_state().await.unwrap()
    }

    /// The Elastic IP's address (loopback in the local cloud) and the instance
    /// `DescribeAddresses` shows holding it.
    pub async fn eip(&self) -> (IpAddr, Option<String>) {
        let st = self.state().await;
        let alloc = &st.resources["aws_eip.api"].id;
        let (ip, holder) = deployer::release::eip_holder(&self.s.clients().await, alloc)
            .await
            .unwrap();
        let ip: IpAddr = ip.unwrap().parse().unwrap();
        assert!(
            ip.is_loopback(),
            "the emulator's Elastic IP {ip} is loopback"
        );
        (ip, holder)
    }

    /// The tails of the boot logs and journals of the app's instances (as the state
    /// lists them), then the runner's log.
    pub async fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(st) = self.s.deployer().await.read_state().await {
            for r in st.release.instances.values() {
                for (what, path) in [
                    ("boot log", cloud().boot_log(&r.instance_id)),
                    ("journal", cloud().journal(&r.instance_id)),
                ] {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    out.push_str(&format!("--- {what} of {}\n", r.instance_id));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out.push_str("--- the local cloud's runner\n");
        out.push_str(&std::fs::read_to_string(cloud().runner_log()).unwrap_or_default());
        out
    }
}

/// The ids of the app's resources of `kind` (found by their `app` tag: VPCs, subnets,
/// Elastic IPs, ...).
pub async fn tagged_ids(s: &Setup, kind: Kind) -> Vec<String> {
    let tag = Filter::builder().name("tag:app").values(&s.cfg.app).build();
    ec2_ids(&s.clients().await, kind, vec![tag])
        .await
        .unwrap_or_else(|| panic!("{kind:?} is not found by its tags"))
}

/// The name of each colour's target group and how many target groups carry it.
pub async fn target_groups_named(s: &Setup) -> Vec<(String, usize)> {
    let c = s.clients().await;
    let groups = c.elb.describe_target_groups().send().await.unwrap();
    [Color::Blue, Color::Green]
        .into_iter()
        .map(|color| {
            let name = deployer::stack::target_group_name(&s.cfg, color);
            let n = groups
                .target_groups()
                .iter()
                .filter(|g| g.target_group_name() == Some(name.as_str()))
                .count();
            (name, n)
        })
        .collect()
}

/// What the app of `s` left behind in the account: live instances, subnets, addresses,
/// VPCs, its IAM role and instance profile, and with `front = "nlb"` its balancer, target
/// groups and the balancer's interfaces (which linger after the balancer).
pub async fn leftovers(s: &Setup) -> Vec<String> {
    let c = s.clients().await;
    let mut left = Vec::new();
    let lb = deployer::stack::lb_name(&s.cfg);
    if let Ok(out) = c.elb.describe_load_balancers().names(&lb).send().await {
        for b in out.load_balancers() {
            left.push(format!("balancer {:?}", b.load_balancer_arn()));
        }
    }
    for (name, n) in target_groups_named(s).await {
        if n > 0 {
            left.push(format!("target group {name}"));
        }
    }
    let enis = c
        .ec2
        .describe_network_interfaces()
        .filters(
            Filter::builder()
                .name("description")
                .values(format!("ELB net/{lb}/*"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    for e in enis.network_interfaces() {
        left.push(format!("balancer interface {:?}", e.network_interface_id()));
    }
    for id in tagged_ids(s, Kind::Subnet).await {
        left.push(format!("subnet {id}"));
    }
    let tag = Filter::builder().name("tag:app").values(&s.cfg.app).build();
    let res = c
        .ec2
        .describe_instances()
        .filters(tag)
        .send()
        .await
        .unwrap();
    for i in res.reservations().iter().flat_map(|r| r.instances()) {
        let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
        if state != Some("terminated") {
            left.push(format!("instance {:?} ({state:?})", i.instance_id()));
        }
    }
    for id in tagged_ids(s, Kind::Eip).await {
        left.push(format!("address {id}"));
    }
    for id in tagged_ids(s, Kind::Vpc).await {
        left.push(format!("vpc {id}"));
    }
    let role = deployer::stack::role_name(&s.cfg);
    if c.iam.get_role().role_name(&role).send().await.is_ok() {
        left.push(format!("role {role}"));
    }
    let profile = deployer::stack::profile_name(&s.cfg);
    if c.iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .is_ok()
    {
        left.push(format!("instance profile {profile}"));
    }
    left
}
