//! What a refresh asks AWS, counted on the emulator's side (moto's request recorder):
//! a plan reads each kind of resource once (one listing per EC2 type by the stack's
//! tags, one read per IAM resource) besides the state read and the lock, and the
//! batched refresh sees exactly what the per-resource one sees, drift included. How
//! long it takes is the benchmark's business (`bench/plan`), not these tests'.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aws_sdk_ec2::types::ResourceType;
use common::{setup, setup_with};
use deployer::plan::{self, Action, Observed};
use deployer::stack::{Kind, Stack, tag_specification, tags_for};
use deployer::state::State;

/// An emulator of this file's own test: its recording holds only that test's requests.
fn private() -> &'static harness::Moto {
    static MOTO: OnceLock<harness::Moto> = OnceLock::new();
    MOTO.get_or_init(|| harness::Moto::start().expect("starting a private moto_server"))
}

/// The requests a refresh of the whole stack sends: one per EC2 type, one per IAM
/// resource.
const REFRESH: [&str; 10] = [
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeRouteTables",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeAddresses",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:GetInstanceProfile",
];

/// How many of each `service:Action` were recorded.
fn count(recorded: &[harness::Recorded]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in recorded {
        *by.entry(r.to_string()).or_insert(0) += 1;
    }
    by
}

/// Runs `args` with the recorder on; the run and its requests by type.
fn recorded(s: &common::Setup, args: &[&str]) -> (common::Run, BTreeMap<String, usize>) {
    s.moto.start_recording().expect("starting the recorder");
    let run = s.run(args);
    let reqs = s.moto.stop_recording().expect("the recording");
    (run, count(&reqs))
}

/// Each refresh request once, and besides them only the state read and the lock.
fn assert_one_per_type(what: &str, by: &BTreeMap<String, usize>) {
    for r in REFRESH {
        assert_eq!(by.get(r), Some(&1), "{what}: {r} once: {by:#?}");
    }
    let rest: BTreeMap<&str, usize> = by
        .iter()
        .filter(|(k, _)| !REFRESH.contains(&k.as_str()))
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        rest,
        BTreeMap::from([
            ("s3:GetObject", 1),
            ("dynamodb:PutItem", 1),
            ("dynamodb:DeleteItem", 1),
        ]),
        "{what}: besides the refresh, the state read and the lock (taken, released): {by:#?}"
    );
}

#[test]
fn a_plan_reads_each_kind_once_besides_the_state_and_the_lock() {
    // A lease long enough that the lock is not renewed during a plan (a renewal is one
    // more request, on a timer).
    let s = setup_with(private(), &[("lock", "lease_seconds", 60.into())]);
    s.ok(&["init"]);

    // Nothing exists yet: every listing and IAM read once, all of them empty.
    let (first, by) = recorded(&s, &["plan", "--detailed-exitcode"]);
    assert_eq!(first.code, 2, "changes → exit 2:\n{}", first.all());
    assert_one_per_type("the first plan", &by);

    s.apply_whole_stack();

    // The no-op plan: the same requests, each once.
    let (noop, by) = recorded(&s, &["plan", "--detailed-exitcode"]);
    assert_eq!(noop.code, 0, "no changes → exit 0:\n{}", noop.all());
    assert_one_per_type("a no-op plan", &by);
    let total: usize = by.values().sum();
    assert_eq!(total, REFRESH.len() + 3, "{by:#?}");

    // An apply starts with the same refresh: with nothing to do, the same requests.
    let (apply, by) = recorded(&s, &["apply", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert!(apply.stdout.contains("No changes."), "{}", apply.stdout);
    assert_one_per_type("a no-op apply", &by);
}

/// Both refreshes of `state`, which must agree; the batched one's.
async fn refresh_both(stack: &Stack<'_>, state: &State) -> Vec<Observed> {
    let batched = plan::refresh(stack, state).await.expect("refresh");
    let each = plan::refresh_per_resource(stack, state)
        .await
        .expect("per-resource refresh");
    assert_eq!(
        format!("{batched:#?}"),
        format!("{each:#?}"),
        "the batched refresh differs from the per-resource one"
    );
    batched
}

#[tokio::test(flavor = "multi_thread")]
async fn the_batched_refresh_sees_what_the_per_resource_refresh_sees_drift_included() {
    let s = setup(harness::moto());
    s.ok(&["init"]);
    s.apply_whole_stack();
    let d = s.deployer().await;
    let stack = d.stack();
    let state = d.read_state().await.expect("state");
    let observed = refresh_both(&stack, &state).await;
    assert!(
        observed
            .iter()
            .all(|o| o.actual.is_some() && !o.adopted && o.duplicates.is_empty()),
        "{observed:#?}"
    );

    // Drift by hand: the subnet loses its tags (so the tag listing misses it), the
    // default route is deleted, and a second security group carries the stack's tags.
    let ec2 = &d.clients.ec2;
    let id = |addr: &str| state.resources[addr].id.clone();
    let subnet = id("aws_subnet.main");
    let tag_keys = tags_for(&d.cfg, "aws_subnet.main", "shared", "none");
    ec2.delete_tags()
        .resources(&subnet)
        .set_tags(Some(
            tag_keys
                .iter()
                .map(|(k, _)| aws_sdk_ec2::types::Tag::builder().key(k).build())
                .collect(),
        ))
        .send()
        .await
        .expect("untag the subnet");
    let route = id("aws_route.default");
    let (rtb, dest) = route
        .split_once(':')
        .expect("route id is table:destination");
    ec2.delete_route()
        .route_table_id(rtb)
        .destination_cidr_block(dest)
        .send()
        .await
        .expect("delete the default route");
    let sg_tags = tags_for(&d.cfg, "aws_security_group.api", "shared", "none");
    let dup = ec2
        .create_security_group()
        .group_name(format!("{}-leaked", d.cfg.app))
        .description("a leak from an older crash")
        .vpc_id(id("aws_vpc.main"))
        .tag_specifications(tag_specification(ResourceType::SecurityGroup, &sg_tags))
        .send()
        .await
        .expect("a second tagged security group")
        .group_id()
        .expect("group id")
        .to_string();

    let observed = refresh_both(&stack, &state).await;
    let of = |k: Kind| observed.iter().find(|o| o.kind == k).expect("observed");
    assert_eq!(of(Kind::Subnet).id.as_deref(), Some(subnet.as_str()));
    assert!(of(Kind::Route).actual.is_none(), "{observed:#?}");
    assert_eq!(of(Kind::SecurityGroup).duplicates, vec![dup.clone()]);

    let p = plan::diff(&d.cfg, &state, &observed);
    let action = |addr: &str, id: Option<&str>| {
        p.changes
            .iter()
            .find(|c| c.address == addr && (id.is_none() || c.id.as_deref() == id))
            .map(|c| c.action)
    };
    assert_eq!(action("aws_subnet.main", None), Some(Action::Update));
    assert_eq!(action("aws_route.default", None), Some(Action::Create));
    assert_eq!(
        action("aws_security_group.api", Some(&dup)),
        Some(Action::Delete)
    );
}
