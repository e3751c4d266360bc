//! The stack on AWS as it really behaves: every test runs on the shared local cloud with
//! AWS's eventual consistency and refusals on (a new security group unknown for a
//! moment, a terminated instance's interfaces blocking deletes, `DescribeAddresses`
//! lagging `AssociateAddress`, no release of an associated address, no internet gateway
//! detach while addresses are mapped), and every command must succeed on its first run.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceNetworkInterfaceSpecification, InstanceType};
use common::{Setup, setup, setup_with};
use deployer::stack::Kind;

fn cloud_moto() -> &'static harness::Moto {
    harness::cloud::shared().moto()
}

/// The id of `address` in the state.
async fn state_id(s: &Setup, address: &str) -> String {
    let state = s.deployer().await.read_state().await.expect("state");
    state
        .resources
        .get(address)
        .unwrap_or_else(|| panic!("{address} in the state: {state:#?}"))
        .id
        .clone()
}

/// Polls `f` (every 200 ms, up to 30 s) until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{what}: 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Launches a bare instance (not the deployer's: no tags) with a public address into
/// the stack's subnet and security group; returns its id once EC2 shows it running.
async fn launch_bare_instance(s: &Setup) -> String {
    let d = s.deployer().await;
    let ami = deployer::instances::resolve_ami(&d.clients, &d.cfg.ami.selector())
        .await
        .expect("ami");
    let subnet = state_id(s, "aws_subnet.main").await;
    let sg = state_id(s, "aws_security_group.api").await;
    let out = d
        .clients
        .ec2
        .run_instances()
        .image_id(&ami.id)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&subnet)
                .groups(&sg)
                .associate_public_ip_address(true)
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    let id = out.instances()[0]
        .instance_id()
        .expect("instance id")
        .to_string();
    // A new instance id is unknown for a moment.
    let ec2 = &d.clients.ec2;
    eventually("the new instance visible", || async {
        let o = ec2
            .describe_instances()
            .instance_ids(&id)
            .send()
            .await
            .ok()?;
        let state = o.reservations().first()?.instances().first()?.state()?;
        (state.name()?.as_str() == "running").then_some(())
    })
    .await;
    id
}

/// The first `apply` from nothing succeeds at once: the security group's ingress is
/// authorized only once EC2 knows the new group (it failed with `InvalidGroup.NotFound`
/// on `AuthorizeSecurityGroupIngress`), every create is confirmed by a read, and the
/// next plan has nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn first_apply_from_empty_succeeds_on_its_first_run() {
    let s = setup(cloud_moto());
    s.ok(&["init"]);
    s.apply_whole_stack();
    // Every resource was recorded with the attributes read back, none with `{}`.
    let state = s.deployer().await.read_state().await.expect("state");
    for (addr, r) in &state.resources {
        assert!(
            !r.attributes.is_empty(),
            "{addr} recorded without attributes"
        );
    }
}

/// The S3 gateway endpoint is in the VPC, on the subnet's route table, after `apply`;
/// `destroy` removes it (and the route table after it).
#[tokio::test(flavor = "multi_thread")]
async fn s3_gateway_endpoint_is_on_the_route_table_after_apply_and_gone_after_destroy() {
    let s = setup(cloud_moto());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let vpce = state_id(&s, "aws_vpc_endpoint.s3").await;
    let vpc = state_id(&s, "aws_vpc.main").await;
    let rtb = state_id(&s, "aws_route_table.main").await;
    let c = s.clients().await;
    let out = c
        .ec2
        .describe_vpc_endpoints()
        .vpc_endpoint_ids(&vpce)
        .send()
        .await
        .expect("DescribeVpcEndpoints");
    let e = out.vpc_endpoints().first().expect("the endpoint");
    assert_eq!(e.vpc_id(), Some(vpc.as_str()));
    assert_eq!(
        e.service_name(),
        Some(format!("com.amazonaws.{}.s3", s.cfg.region).as_str())
    );
    assert_eq!(
        e.vpc_endpoint_type().map(|t| t.as_str()),
        Some("Gateway"),
        "{e:?}"
    );
    assert_eq!(e.route_table_ids(), std::slice::from_ref(&rtb));
    let tags: Vec<(&str, &str)> = e
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert!(
        tags.contains(&("deployer:address", "aws_vpc_endpoint.s3")),
        "{tags:?}"
    );
    assert!(tags.contains(&("app", s.cfg.app.as_str())), "{tags:?}");
    // Found again by its tags: a second apply changes nothing.
    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());

    s.ok(&["destroy", "--auto-approve"]);
    let left = c
        .ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("tag:app").values(&s.cfg.app).build())
        .send()
        .await
        .expect("DescribeVpcEndpoints");
    let live: Vec<_> = left
        .vpc_endpoints()
        .iter()
        .filter(|e| {
            !matches!(
                e.state().map(|st| st.as_str()),
                Some("deleted" | "Deleted" | "deleting" | "Deleting")
            )
        })
        .collect();
    assert!(live.is_empty(), "endpoints left: {live:?}");
    let state = s.deployer().await.read_state().await.expect("state");
    assert!(state.resources.is_empty(), "{state:#?}");
}

/// With no `availability_zone` configured, the subnet goes to the first zone (sorted)
/// that offers the instance type; EC2's own choice (`us-east-1a` here) does not offer
/// this one. A type no zone offers is refused naming it and the region.
#[tokio::test(flavor = "multi_thread")]
async fn subnet_is_in_the_first_zone_offering_the_instance_type() {
    // trn1.2xlarge is offered in some zones of us-east-1, not in us-east-1a.
    let ty = "trn1.2xlarge";
    let s = setup_with(
        cloud_moto(),
        &[("", "instance_type", toml::Value::String(ty.into()))],
    );
    let c = s.clients().await;
    let offering = deployer::instances::zones_offering(&c, ty)
        .await
        .expect("offerings");
    assert!(!offering.is_empty(), "{ty} is offered somewhere");
    assert!(
        !offering.iter().any(|z| z == "us-east-1a"),
        "{ty} must not be offered in us-east-1a for this test to mean anything: {offering:?}"
    );
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let subnet = state_id(&s, "aws_subnet.main").await;
    let out = c
        .ec2
        .describe_subnets()
        .subnet_ids(&subnet)
        .send()
        .await
        .expect("DescribeSubnets");
    let zone = out.subnets()[0].availability_zone().expect("a zone");
    assert_eq!(zone, offering[0], "offered in {offering:?}");

    let none = setup_with(
        cloud_moto(),
        &[(
            "",
            "instance_type",
            toml::Value::String("t3.nosuchsize".into()),
        )],
    );
    none.ok(&["init"]);
    let r = none.run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let last = r.last_stderr_line();
    assert!(
        last.contains("t3.nosuchsize")
            && last.contains("us-east-1")
            && last.contains("aws_subnet.main"),
        "one line naming the subnet, the type and the region: {}",
        r.all()
    );
}

/// `destroy` right after an instance in the subnet was terminated: its interfaces keep
/// the subnet and the security group busy, and its public address keeps the internet
/// gateway attached, for a few seconds (`DependencyViolation`). `destroy` retries them
/// (logging each retry with AWS's code) and succeeds on its first run.
#[tokio::test(flavor = "multi_thread")]
async fn destroy_right_after_a_termination_in_the_subnet_succeeds_on_its_first_run() {
    let s = setup(cloud_moto());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let id = launch_bare_instance(&s).await;
    let c = s.clients().await;
    c.ec2
        .terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("TerminateInstances");
    let started = Instant::now();
    let r = s.run(&["destroy", "--auto-approve"]);
    assert_eq!(r.code, 0, "destroy on its first run:\n{}", r.all());
    assert!(
        r.stderr.contains("DependencyViolation"),
        "the retries were logged with AWS's code:\n{}",
        r.all()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let state = s.deployer().await.read_state().await.expect("state");
    assert!(state.resources.is_empty(), "{state:#?}");
    let vpcs = c
        .ec2
        .describe_vpcs()
        .filters(Filter::builder().name("tag:app").values(&s.cfg.app).build())
        .send()
        .await
        .expect("vpcs");
    assert!(vpcs.vpcs().is_empty(), "{:?}", vpcs.vpcs());
}

/// Releasing an Elastic IP associated a moment ago: `DescribeAddresses` still shows it
/// free, AWS refuses the release (`InvalidIPAddress.InUse`); the delete disassociates
/// once the association shows, then releases.
#[tokio::test(flavor = "multi_thread")]
async fn an_elastic_ip_associated_a_moment_ago_is_disassociated_then_released() {
    let s = setup(cloud_moto());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let id = launch_bare_instance(&s).await;
    let d = s.deployer().await;
    let ec2 = &d.clients.ec2;
    let eip = state_id(&s, "aws_eip.api").await;
    ec2.associate_address()
        .allocation_id(&eip)
        .instance_id(&id)
        .send()
        .await
        .expect("AssociateAddress");
    d.stack()
        .delete(Kind::Eip, &eip)
        .await
        .expect("released on the first call");
    let left = ec2
        .describe_addresses()
        .filters(Filter::builder().name("tag:app").values(&s.cfg.app).build())
        .send()
        .await
        .expect("DescribeAddresses");
    assert!(left.addresses().is_empty(), "{:?}", left.addresses());
    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("TerminateInstances");
}
