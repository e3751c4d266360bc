//! `apply` killed with SIGKILL at several points, then run again: the emulator's
//! resources match the state one to one, nothing leaked or duplicated. And after
//! `destroy`, nothing tagged by the deployer is left (in an emulator of its own). All on
//! the emulator with AWS's eventual consistency and refusals on.

mod common;

use aws_sdk_ec2::types::Filter;
use common::{Setup, assert_state_matches_emulator, ec2_ids, launch_spec, setup};
use deployer::stack::Kind;

/// The emulator with AWS's delays on (the shared local cloud's).
fn cloud() -> &'static harness::Moto {
    harness::cloud::shared().moto()
}

/// On a new, initialised stack: kills an apply at each of `points` in turn (each run
/// resumes the previous one), then lets one finish.
async fn crash_and_converge(points: &[&str]) {
    let s = &setup(cloud());
    s.ok(&["init"]);
    s.kill_applies_then_apply(points);
    assert_state_matches_emulator(s).await;
    let plan = s.run(&["plan", "--detailed-exitcode", "--lock-timeout", "30s"]);
    assert_eq!(plan.code, 0, "converged after {points:?}:\n{}", plan.all());
}

// The worst window: the resource exists in AWS, the state does not know it yet.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_create_and_state_write_ec2_resources() {
    crash_and_converge(&[
        "after-create:aws_vpc.main",
        "after-create:aws_subnet.main",
        "after-create:aws_internet_gateway.main",
        "after-create:aws_internet_gateway_attachment.main",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_create_and_state_write_routes_and_security_group() {
    crash_and_converge(&[
        "after-create:aws_route_table.main",
        "after-create:aws_route.default",
        "after-create:aws_route_table_association.main",
        "after-create:aws_vpc_endpoint.s3",
        "after-create:aws_security_group.api",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_create_and_state_write_iam_and_eip() {
    crash_and_converge(&[
        "after-create:aws_iam_role.instance",
        "after-create:aws_iam_role_policy.artifact_read",
        "after-create:aws_iam_instance_profile.instance",
        "after-create:aws_eip.api",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_before_creates_and_after_state_writes() {
    crash_and_converge(&[
        "before-create:aws_vpc.main",
        "after-record:aws_vpc.main",
        "before-create:aws_route.default",
        "after-record:aws_security_group.api",
        "before-create:aws_eip.api",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_destroy_then_destroy_again_leaves_nothing() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let run = s.start_until(
        &["destroy", "--auto-approve"],
        &[(
            "DEPLOYER_FAULT",
            "after-delete:aws_route_table_association.main",
        )],
        "fault point",
    );
    run.kill9();
    let r = s.run(&["destroy", "--auto-approve", "--lock-timeout", "30s"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_nothing_tagged_for_app(&s).await;
}

async fn assert_nothing_tagged_for_app(s: &Setup) {
    let c = s.clients().await;
    let f = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let app = s.cfg.app.as_str();
    for kind in [
        Kind::Vpc,
        Kind::Subnet,
        Kind::InternetGateway,
        Kind::RouteTable,
        Kind::SecurityGroup,
    ] {
        let left = ec2_ids(&c, kind, vec![f("tag:app", app)]).await;
        assert_eq!(left, Some(vec![]), "{kind:?} tagged for the app");
    }
    assert!(
        c.ec2
            .describe_vpc_endpoints()
            .filters(f("tag:app", app))
            .send()
            .await
            .expect("endpoints")
            .vpc_endpoints()
            .iter()
            .all(deleted)
    );
    let left = ec2_ids(&c, Kind::Eip, vec![f("tag:app", app)]).await;
    assert_eq!(left, Some(vec![]), "Elastic IPs tagged for the app");
    assert!(
        c.iam
            .get_role()
            .role_name(format!("{app}-instance"))
            .send()
            .await
            .is_err()
    );
    assert!(
        c.iam
            .get_instance_profile()
            .instance_profile_name(format!("{app}-instance"))
            .send()
            .await
            .is_err()
    );
    let state = s.deployer().await.read_state().await.expect("state");
    assert!(state.resources.is_empty(), "{state:#?}");
}

/// Whether the EC2 resource `id` still exists (instances: not terminated).
async fn exists(c: &deployer::aws::Clients, id: &str) -> bool {
    let e = &c.ec2;
    // `$describe` of `id` (by `$ids`) lists it in `$list`.
    macro_rules! listed {
        ($describe:ident, $ids:ident, $list:ident) => {
            e.$describe()
                .$ids(id)
                .send()
                .await
                .is_ok_and(|o| !o.$list().is_empty())
        };
    }
    let prefix = id.split('-').next().unwrap_or("");
    match prefix {
        "i" => e
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .is_ok_and(|o| {
                o.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .any(|i| {
                        i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated")
                    })
            }),
        "vpc" => listed!(describe_vpcs, vpc_ids, vpcs),
        "subnet" => listed!(describe_subnets, subnet_ids, subnets),
        "igw" => listed!(
            describe_internet_gateways,
            internet_gateway_ids,
            internet_gateways
        ),
        "rtb" => listed!(describe_route_tables, route_table_ids, route_tables),
        "sg" => listed!(describe_security_groups, group_ids, security_groups),
        "vpce" => e
            .describe_vpc_endpoints()
            .vpc_endpoint_ids(id)
            .send()
            .await
            .is_ok_and(|o| o.vpc_endpoints().iter().any(|v| !deleted(v))),
        "eipalloc" => listed!(describe_addresses, allocation_ids, addresses),
        "vol" => listed!(describe_volumes, volume_ids, volumes),
        _ => true,
    }
}

/// Whether the endpoint's state is `deleted` (moto lists deleted endpoints).
fn deleted(v: &aws_sdk_ec2::types::VpcEndpoint) -> bool {
    v.state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .as_deref()
        == Some("deleted")
}

/// In an emulator of its own: after `destroy`, no resource carries the deployer's
/// tags (instances terminated), and the IAM role and profile are gone.
#[tokio::test(flavor = "multi_thread")]
async fn after_destroy_nothing_tagged_by_the_deployer_is_left() {
    let private: &'static harness::Moto = Box::leak(Box::new(
        harness::Moto::start_aws_like(&harness::cloud::AwsBehaviour::aws_like()).expect("moto"),
    ));
    let s = setup(private);
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let d = s.deployer().await;
    let state = d.read_state().await.expect("state");
    let ami = deployer::instances::resolve_ami(&d.clients, &d.cfg.ami.selector())
        .await
        .expect("ami");
    for color in [deployer::state::Color::Blue, deployer::state::Color::Green] {
        deployer::instances::launch_instance(
            &d.clients,
            &launch_spec(&d, &state, &ami, "#!/bin/sh\n", color),
        )
        .await
        .expect("launch");
    }
    // These launches are not in the state (the test made them, not a deploy), and new
    // instance ids are missing from listings for a moment: wait until both are listed,
    // as `destroy` finds them by their tags.
    let started = std::time::Instant::now();
    while deployer::instances::find_instances(&d.clients, &d.cfg)
        .await
        .expect("find")
        .len()
        < 2
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let c = &d.clients;
    let tagged = || async {
        let out = c
            .ec2
            .describe_tags()
            .filters(Filter::builder().name("key").values("managed-by").build())
            .send()
            .await
            .expect("describe tags");
        let mut left = Vec::new();
        for t in out.tags() {
            let id = t.resource_id().unwrap_or_default().to_string();
            // moto keeps the tags of deleted resources: count only what still exists.
            if !exists(c, &id).await {
                continue;
            }
            left.push(format!("{:?} {id}", t.resource_type()));
        }
        left
    };
    assert!(
        tagged().await.len() >= 8,
        "tagged before destroy: {:?}",
        tagged().await
    );

    let plan = s.ok(&["plan", "--destroy"]);
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 0 to change, 15 to destroy."),
        "{}",
        plan.stdout
    );
    let r = s.ok(&["destroy", "--auto-approve"]);
    assert!(
        r.stdout
            .contains("Destroy complete! Resources: 15 destroyed."),
        "{}",
        r.all()
    );

    assert_eq!(
        tagged().await,
        Vec::<String>::new(),
        "nothing tagged by the deployer is left"
    );
    let roles = c.iam.list_roles().send().await.expect("roles");
    assert!(roles.roles().is_empty(), "{:?}", roles.roles());
    let profiles = c
        .iam
        .list_instance_profiles()
        .send()
        .await
        .expect("profiles");
    assert!(profiles.instance_profiles().is_empty());
    let eips = c.ec2.describe_addresses().send().await.expect("addresses");
    assert!(eips.addresses().is_empty());
    assert_nothing_tagged_for_app(&s).await;
    // And a plan now wants the whole stack again.
    let again = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 2);
}
