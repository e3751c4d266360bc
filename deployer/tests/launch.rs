//! Launching on an emulator that behaves like AWS: an instance profile created moments
//! ago is refused by `RunInstances` ("Invalid IAM Instance Profile name") until IAM
//! propagates, as deploy.yml's `apply` then `deploy` meets it; and an instance gets a
//! public address (without one it has no route to S3 and the health gate nothing to
//! probe).

mod common;

use std::time::{Duration, Instant};

use common::{described_instance, launch_spec, setup};
use deployer::instances;
use harness::cloud::AwsBehaviour;

#[tokio::test(flavor = "multi_thread")]
async fn a_launch_right_after_apply_waits_for_the_profile_and_gets_a_public_address() {
    let delay = Duration::from_secs(4);
    let aws = AwsBehaviour {
        instance_profile: delay,
        ..AwsBehaviour::off()
    };
    let moto: &'static harness::Moto = Box::leak(Box::new(
        harness::Moto::start_aws_like(&aws).expect("moto with AWS's profile propagation"),
    ));
    let s = setup(moto);
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let applied = Instant::now();
    let d = s.deployer().await;
    let state = d.read_state().await.expect("state");
    let ami = instances::resolve_ami(&d.clients, &d.cfg.ami.selector())
        .await
        .expect("resolve");
    let spec = launch_spec(
        &d,
        &state,
        &ami,
        "#!/bin/sh\necho hello\n",
        deployer::state::Color::Blue,
    );

    // Without the propagation wait, the launch fails the way AWS fails it: this is
    // what every deploy right after an apply met.
    let refused = instances::launch_instance_within(&d.clients, &spec, Duration::ZERO)
        .await
        .expect_err("a profile younger than the propagation delay is refused");
    assert!(
        refused.code == "InvalidParameterValue"
            && instances::is_profile_not_yet_visible(&refused)
            && refused.to_string().contains("RunInstances"),
        "{refused}"
    );

    // The real launch retries until EC2 sees the profile, then succeeds.
    let id = instances::launch_instance(&d.clients, &spec)
        .await
        .expect("launch once the profile has propagated");
    assert!(
        applied.elapsed() >= delay / 2,
        "it can only have succeeded after the profile propagated"
    );

    let inst = &described_instance(&d.clients, &id).await;
    let public = inst
        .public_ip_address()
        .expect("the instance has a public address");
    assert!(!public.is_empty());
    assert_eq!(
        inst.subnet_id(),
        Some(state.resources["aws_subnet.main"].id.as_str())
    );
    // The groups that filter its traffic are its interface's.
    let groups: Vec<&str> = inst
        .network_interfaces()
        .iter()
        .flat_map(|n| n.groups())
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(
        groups,
        vec![state.resources["aws_security_group.api"].id.as_str()]
    );
    instances::terminate(&d.clients, &id, Duration::from_secs(60))
        .await
        .expect("terminate");
}
