//! `front = "nlb"`: the balancer side of the stack (issue 16), in plans like every
//! other resource. `apply` builds the second zone's subnet, the second Elastic IP, the
//! two target groups, the balancer holding both addresses and its listener; a no-op
//! plan after it is empty (the listener's weights are the release's: no drift) and
//! reads each type once; switching an `eip` stack keeps its Elastic IP's address, now
//! on the balancer; `destroy` leaves nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
};
use common::app::{CloudApp, leftovers, tagged_ids, target_groups_named};
use common::{Setup, setup_with};
use deployer::stack::Kind;

/// An emulator of this file's own (its recording holds only this file's requests):
/// the local cloud's moto (balancers holding their mappings' Elastic IPs), its delays
/// off.
fn private() -> &'static harness::Moto {
    static MOTO: OnceLock<harness::Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        harness::Moto::start_aws_like(&harness::cloud::AwsBehaviour::off())
            .expect("starting a private moto")
    })
}

fn nlb() -> (&'static str, &'static str, toml::Value) {
    ("", "front", toml::Value::String("nlb".into()))
}

/// The refresh of a whole `nlb` stack: one request per EC2 and ELBv2 type, one per IAM
/// resource, and the two groups' attributes (ELBv2 has no batch for them).
const REFRESH: [(&str, usize); 15] = [
    ("ec2:DescribeVpcs", 1),
    ("ec2:DescribeSubnets", 1),
    ("ec2:DescribeInternetGateways", 1),
    ("ec2:DescribeRouteTables", 1),
    ("ec2:DescribeVpcEndpoints", 1),
    ("ec2:DescribeSecurityGroups", 1),
    ("ec2:DescribeAddresses", 1),
    ("iam:GetRole", 1),
    ("iam:GetRolePolicy", 1),
    ("iam:GetInstanceProfile", 1),
    ("elasticloadbalancing:DescribeLoadBalancers", 1),
    ("elasticloadbalancing:DescribeTargetGroups", 1),
    ("elasticloadbalancing:DescribeListeners", 1),
    ("elasticloadbalancing:DescribeTargetGroupAttributes", 2),
    // Besides the refresh: the state read and the lock (taken, released).
    ("s3:GetObject", 1),
];

/// What `front = "nlb"` adds to the stack.
const BALANCER_SIDE: [&str; 7] = [
    "aws_subnet.b",
    "aws_route_table_association.b",
    "aws_eip.b",
    "aws_lb_target_group.blue",
    "aws_lb_target_group.green",
    "aws_lb.api",
    "aws_lb_listener.api",
];

fn id(state: &deployer::state::State, addr: &str) -> String {
    state
        .resources
        .get(addr)
        .unwrap_or_else(|| panic!("{addr} in the state: {state:#?}"))
        .id
        .clone()
}

/// The balancer's (subnet, allocation id) mappings and its public addresses.
async fn mappings(s: &Setup, lb: &str) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let c = s.clients().await;
    let out = c
        .elb
        .describe_load_balancers()
        .load_balancer_arns(lb)
        .send()
        .await
        .unwrap();
    let lb = &out.load_balancers()[0];
    let mut maps = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for z in lb.availability_zones() {
        for a in z.load_balancer_addresses() {
            maps.insert((
                z.subnet_id().unwrap().to_string(),
                a.allocation_id().unwrap().to_string(),
            ));
            ips.insert(a.ip_address().unwrap().to_string());
        }
    }
    (maps, ips)
}

async fn public_ip(s: &Setup, alloc: &str) -> String {
    let c = s.clients().await;
    let out = c
        .ec2
        .describe_addresses()
        .allocation_ids(alloc)
        .send()
        .await
        .unwrap();
    out.addresses()[0].public_ip().unwrap().to_string()
}

/// The listener's forward weights by target group ARN.
async fn weights(s: &Setup, listener: &str) -> BTreeMap<String, i32> {
    let c = s.clients().await;
    let out = c
        .elb
        .describe_listeners()
        .listener_arns(listener)
        .send()
        .await
        .unwrap();
    let l = &out.listeners()[0];
    l.default_actions()
        .iter()
        .filter_map(|a| a.forward_config())
        .flat_map(|f| f.target_groups())
        .map(|t| {
            (
                t.target_group_arn().unwrap().to_string(),
                t.weight().unwrap_or(1),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_builds_the_balancer_and_a_no_op_plan_after_it_is_empty_and_reads_each_type_once() {
    let s = setup_with(private(), &[nlb(), ("lock", "lease_seconds", 60.into())]);
    s.ok(&["init"]);
    let plan = s.ok(&["plan"]);
    for addr in BALANCER_SIDE {
        assert!(
            plan.stdout.contains(&format!("# {addr} will be created")),
            "{addr}:\n{}",
            plan.stdout
        );
    }
    let applied = s.ok(&["apply", "--auto-approve"]);
    assert!(
        applied
            .stdout
            .contains("Apply complete! Resources: 20 added, 0 changed, 0 destroyed"),
        "{}",
        applied.all()
    );
    let state = s.deployer().await.read_state().await.unwrap();
    let c = s.clients().await;

    // The balancer: network, internet-facing, active, one mapping per zone holding the
    // deployer's two Elastic IPs; both addresses listed.
    let lb = id(&state, "aws_lb.api");
    let out = c
        .elb
        .describe_load_balancers()
        .load_balancer_arns(&lb)
        .send()
        .await
        .unwrap();
    let described = &out.load_balancers()[0];
    assert_eq!(described.r#type().unwrap().as_str(), "network");
    assert_eq!(described.scheme().unwrap().as_str(), "internet-facing");
    assert_eq!(
        described.state().unwrap().code().unwrap().as_str(),
        "active"
    );
    let (maps, ips) = mappings(&s, &lb).await;
    let want: BTreeSet<(String, String)> = [
        (id(&state, "aws_subnet.main"), id(&state, "aws_eip.api")),
        (id(&state, "aws_subnet.b"), id(&state, "aws_eip.b")),
    ]
    .into();
    assert_eq!(maps, want);
    let want_ips: BTreeSet<String> = [
        public_ip(&s, &id(&state, "aws_eip.api")).await,
        public_ip(&s, &id(&state, "aws_eip.b")).await,
    ]
    .into();
    assert_eq!(ips, want_ips);
    // Two zones.
    let subnets = c
        .ec2
        .describe_subnets()
        .subnet_ids(id(&state, "aws_subnet.main"))
        .subnet_ids(id(&state, "aws_subnet.b"))
        .send()
        .await
        .unwrap();
    let zones: BTreeSet<&str> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(zones.len(), 2, "{zones:?}");

    // The groups: TCP on the API port, HTTP checks of /readyz as configured, draining.
    let blue = id(&state, "aws_lb_target_group.blue");
    let green = id(&state, "aws_lb_target_group.green");
    let groups = c
        .elb
        .describe_target_groups()
        .target_group_arns(&blue)
        .target_group_arns(&green)
        .send()
        .await
        .unwrap();
    assert_eq!(groups.target_groups().len(), 2);
    for g in groups.target_groups() {
        assert_eq!(g.protocol().unwrap().as_str(), "TCP");
        assert_eq!(g.port(), Some(i32::from(s.cfg.api_port)));
        assert_eq!(g.health_check_protocol().unwrap().as_str(), "HTTP");
        assert_eq!(g.health_check_path(), Some("/readyz"));
        assert_eq!(g.health_check_interval_seconds(), Some(10));
        assert_eq!(g.healthy_threshold_count(), Some(3));
        assert_eq!(g.unhealthy_threshold_count(), Some(3));
        let attrs = c
            .elb
            .describe_target_group_attributes()
            .target_group_arn(g.target_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        let delay = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value());
        assert_eq!(delay, Some("30"));
    }

    // The listener: TCP on the API port, everything to blue (nothing is live yet).
    let listener = id(&state, "aws_lb_listener.api");
    assert_eq!(
        weights(&s, &listener).await,
        BTreeMap::from([(blue.clone(), 1), (green.clone(), 0)])
    );

    // A no-op plan: nothing to do, each type read once.
    s.moto.start_recording().unwrap();
    let noop = s.run(&["plan", "--detailed-exitcode"]);
    let reqs = s.moto.stop_recording().unwrap();
    assert_eq!(noop.code, 0, "no changes → exit 0:\n{}", noop.all());
    assert!(noop.stdout.contains("No changes."), "{}", noop.stdout);
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reqs {
        *by.entry(r.to_string()).or_insert(0) += 1;
    }
    let mut want: BTreeMap<String, usize> =
        REFRESH.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    want.insert("dynamodb:PutItem".into(), 1);
    want.insert("dynamodb:DeleteItem".into(), 1);
    assert_eq!(by, want, "a no-op plan's requests by type");

    // The release moves the weights (here by hand, as `ModifyListener` does): the
    // plan shows no drift.
    let forward = |b: i32, g: i32| {
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(&blue)
                            .weight(b)
                            .build(),
                    )
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(&green)
                            .weight(g)
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    c.elb
        .modify_listener()
        .listener_arn(&listener)
        .default_actions(forward(0, 1))
        .send()
        .await
        .unwrap();
    let after = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(after.code, 0, "weights are not drift:\n{}", after.all());
    assert_eq!(
        weights(&s, &listener).await,
        BTreeMap::from([(blue, 0), (green, 1)])
    );
}

/// A balancer's mapping cannot change its subnet or address in place (AWS refuses):
/// moving the second zone's subnet plans the balancer's replacement, "forces
/// replacement" on its mappings, and the apply replaces it (and what hangs off it) in
/// dependency order: the new balancer maps the new subnet with the same Elastic IP,
/// the old one is gone, and the next plan is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_second_subnet_replaces_the_balancer() {
    let s = setup_with(private(), &[nlb()]);
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let before = s.deployer().await.read_state().await.unwrap();

    let s = s.reconfigure(&[("nlb", "subnet_b_cidr", "10.42.3.0/24".into())]);

    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    for addr in ["aws_subnet.b", "aws_lb.api"] {
        assert!(
            plan.stdout.contains(&format!("# {addr} must be replaced")),
            "{addr}:\n{}",
            plan.stdout
        );
    }
    assert!(
        plan.stdout
            .contains("-> (known after apply) # forces replacement"),
        "{}",
        plan.stdout
    );
    s.ok(&["apply", "--auto-approve"]);
    let after = s.deployer().await.read_state().await.unwrap();
    let lb = id(&after, "aws_lb.api");
    assert_ne!(lb, id(&before, "aws_lb.api"), "a new balancer");
    assert_ne!(id(&after, "aws_subnet.b"), id(&before, "aws_subnet.b"));
    assert_eq!(id(&after, "aws_eip.b"), id(&before, "aws_eip.b"));
    let (maps, _) = mappings(&s, &lb).await;
    let want: BTreeSet<(String, String)> = [
        (id(&after, "aws_subnet.main"), id(&after, "aws_eip.api")),
        (id(&after, "aws_subnet.b"), id(&after, "aws_eip.b")),
    ]
    .into();
    assert_eq!(maps, want);
    let c = s.clients().await;
    let old = c
        .elb
        .describe_load_balancers()
        .load_balancer_arns(id(&before, "aws_lb.api"))
        .send()
        .await;
    assert!(
        old.map(|o| o.load_balancers().is_empty()).unwrap_or(true),
        "the old balancer is deleted"
    );
    let again = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{}", again.all());
    s.ok(&["destroy", "--auto-approve"]);
}

/// Rewrites `app`'s configuration with `front` set to `front`.
fn with_front(app: &CloudApp, front: &str) -> CloudApp {
    CloudApp {
        s: app.s.reconfigure(&[("", "front", front.into())]),
        port: app.port,
    }
}

/// An `eip` stack whose live instance (blue, release r1) holds the Elastic IP switches
/// to `nlb`: the plan says the address stays, the apply moves it onto the balancer once
/// the live instance is healthy behind it, and the address serves r1 through the
/// balancer. Then `destroy` leaves nothing, the balancer's lingering interfaces
/// waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_nlb_keeps_the_elastic_ip_on_the_balancer_and_destroy_leaves_nothing() {
    let app = CloudApp::new(
        &[
            ("nlb", "health_check_interval_seconds", 5.into()),
            ("nlb", "healthy_threshold", 2.into()),
            ("nlb", "deregistration_delay_seconds", 1.into()),
        ],
        &["r1"],
    )
    .await;
    let (s, port) = (&app.s, app.port);
    let r = app
        .run(&app.release_args(&["deploy", "--release", "r1"]))
        .await;
    assert_eq!(r.code, 0, "deploy r1 (eip):\n{}", r.all());
    let state = app.state().await;
    let eip = id(&state, "aws_eip.api");
    let ip = public_ip(s, &eip).await;
    let ip_addr: std::net::IpAddr = ip.parse().unwrap();
    common::assert_serving(ip_addr, port, "r1", None);

    // The switch: the plan creates the balancer side and says the address stays.
    let n = with_front(&app, "nlb");
    let plan = n.s.ok(&["plan"]);
    assert!(
        plan.stdout.contains("# aws_lb.api will be created"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("the fixed address {ip} (aws_eip.api) stays")),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains("aws_eip.api will be"),
        "{}",
        plan.stdout
    );
    let applied = n.run(&["apply", "--auto-approve"]).await;
    assert_eq!(applied.code, 0, "the switch:\n{}", applied.all());
    let state = n.state().await;
    assert_eq!(id(&state, "aws_eip.api"), eip, "the same Elastic IP");
    let lb = id(&state, "aws_lb.api");
    let (maps, ips) = mappings(&n.s, &lb).await;
    assert!(
        maps.contains(&(id(&state, "aws_subnet.main"), eip.clone())),
        "{maps:?}"
    );
    assert!(ips.contains(&ip), "the balancer holds {ip}: {ips:?}");
    // The live instance is registered in blue's group; the address serves r1 through
    // the balancer.
    let blue = id(&state, "aws_lb_target_group.blue");
    let health =
        n.s.clients()
            .await
            .elb
            .describe_target_health()
            .target_group_arn(&blue)
            .send()
            .await
            .unwrap();
    assert_eq!(health.target_health_descriptions().len(), 1, "{health:?}");
    common::assert_serving(ip_addr, port, "r1", None);
    let again = n.s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "after the switch:\n{}", again.all());

    // Going back to eip: the plan deletes the balancer side and says the address stays
    // only because aws_eip.api survives.
    let e = with_front(&n, "eip");
    let back = e.s.ok(&["plan"]);
    for addr in BALANCER_SIDE {
        assert!(
            back.stdout.contains(&format!(
                "# {addr} will be destroyed (not wanted with front = \"eip\")"
            )),
            "{addr}:\n{}",
            back.stdout
        );
    }
    assert!(
        back.stdout.contains(&format!(
            "The fixed address stays {ip} only because aws_eip.api survives"
        )),
        "{}",
        back.stdout
    );
    assert!(
        !back.stdout.contains("aws_eip.api will be"),
        "{}",
        back.stdout
    );

    // destroy (with front = "eip": the state still records the balancer side): the
    // balancer's interfaces linger and hold the subnets and addresses; the delete waits
    // them out and nothing is left.
    let destroyed = e.run(&["destroy", "--auto-approve"]).await;
    assert_eq!(destroyed.code, 0, "destroy:\n{}", destroyed.all());
    let left = leftovers(&n.s).await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Killed between a create and its state write, for each kind of the balancer side in
/// turn: the next apply finds each one (by tags, or by name for ELBv2) instead of
/// making a second, and converges.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_create_and_state_write_the_balancer_side_is_adopted_not_doubled() {
    let s = setup_with(private(), &[nlb()]);
    s.ok(&["init"]);
    s.kill_applies_then_apply(&[
        "after-create:aws_subnet.b",
        "after-create:aws_eip.b",
        "after-create:aws_lb_target_group.blue",
        "after-create:aws_lb.api",
        "after-create:aws_lb_listener.api",
    ]);
    let plan = s.run(&["plan", "--detailed-exitcode", "--lock-timeout", "30s"]);
    assert_eq!(plan.code, 0, "converged:\n{}", plan.all());

    // One of each.
    let c = s.clients().await;
    let lbs = c
        .elb
        .describe_load_balancers()
        .names(deployer::stack::lb_name(&s.cfg))
        .send()
        .await
        .unwrap();
    assert_eq!(lbs.load_balancers().len(), 1);
    let lb = lbs.load_balancers()[0].load_balancer_arn().unwrap();
    let listeners = c
        .elb
        .describe_listeners()
        .load_balancer_arn(lb)
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    for (name, n) in target_groups_named(&s).await {
        assert_eq!(n, 1, "{name}");
    }
    let subnets = tagged_ids(&s, Kind::Subnet).await;
    assert_eq!(subnets.len(), 2);
    let addrs = tagged_ids(&s, Kind::Eip).await;
    assert_eq!(addrs.len(), 2);
    let state = s.deployer().await.read_state().await.unwrap();
    assert_eq!(id(&state, "aws_lb.api"), lb);
}
