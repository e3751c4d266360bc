//! plan / apply / drift / saved plans / security properties / instance launch, against
//! the emulator (AMI validation on, the realistic AMI list) of the shared local cloud:
//! AWS's eventual consistency and refusals on, so every command must succeed on its
//! first run as it would on AWS.

mod common;

use aws_sdk_ec2::types::{HttpTokensState, IpPermission, IpRange};
use common::{
    Setup, assert_state_matches_emulator, described_instance, launch_spec, path_str, setup,
    setup_with,
};
use deployer::stack::{Kind, STACK};

/// The emulator with AWS's delays on (the shared local cloud's).
fn cloud() -> &'static harness::Moto {
    harness::cloud::shared().moto()
}

fn all_addresses() -> Vec<String> {
    STACK.iter().map(|(k, _)| k.address()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_on_empty_state_lists_every_resource_then_apply_then_no_changes() {
    let s = setup(cloud());
    s.ok(&["init"]);

    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "changes → exit 2:\n{}", plan.all());
    for addr in all_addresses() {
        assert!(
            plan.stdout.contains(&format!("# {addr} will be created")),
            "{addr} missing from the plan:\n{}",
            plan.stdout
        );
    }
    for said in [
        "+ resource \"aws_vpc\" \"main\" {",
        "Plan: 13 to add, 0 to change, 0 to destroy.",
    ] {
        assert!(plan.stdout.contains(said), "{}", plan.stdout);
    }

    let json = s.ok(&["plan", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan --json is JSON");
    assert_eq!(v["summary"]["add"], 13);
    assert_eq!(v["operation"], "apply");
    let changes = v["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 13);
    assert!(changes.iter().all(|c| c["action"] == "create"));

    // Without a terminal and without --auto-approve, apply refuses.
    let refused = s.run(&["apply"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("--auto-approve"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.last_stderr_line().starts_with("error: "),
        "{}",
        refused.all()
    );

    s.apply_whole_stack();

    let state = assert_state_matches_emulator(&s).await;
    assert!(
        state.serial >= 13,
        "one write per created resource at least: {}",
        state.serial
    );
    assert!(!state.lineage.is_empty());
    assert_eq!(state.release.eip_holder, None);

    // The state bucket: versioned, encrypted, private.
    let c = s.clients().await;
    // (moto 5.2 answers GetBucketVersioning with a root element the SDK rejects; the
    // object versions below show versioning is on.)
    let pab =
        c.s3.get_public_access_block()
            .bucket(&s.cfg.state.bucket)
            .send()
            .await
            .expect("pab");
    let pab = pab.public_access_block_configuration().expect("configured");
    assert_eq!(
        (
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let enc =
        c.s3.get_bucket_encryption()
            .bucket(&s.cfg.state.bucket)
            .send()
            .await
            .expect("encryption");
    assert!(enc.server_side_encryption_configuration().is_some());
    // The state is kept in versions: one per write.
    let versions =
        c.s3.list_object_versions()
            .bucket(&s.cfg.state.bucket)
            .prefix(&s.cfg.state.key)
            .send()
            .await
            .expect("versions");
    assert!(
        versions.versions().len() >= 13,
        "{}",
        versions.versions().len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hand_made_ingress_rule_is_drift_and_apply_removes_it() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let state = s.deployer().await.read_state().await.expect("state");
    let sg = state.resources["aws_security_group.api"].id.clone();

    let c = s.clients().await;
    c.ec2
        .authorize_security_group_ingress()
        .group_id(&sg)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .expect("hand-made rule");

    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("# aws_security_group.api will be updated in-place"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("~ resource \"aws_security_group\" \"api\""),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("tcp/22-22 from 0.0.0.0/0"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );

    // A saved plan made now goes stale once the state moves.
    let saved = s.dir.join("drift.plan.json");
    s.ok(&["plan", "--out", path_str(&saved)]);
    let text = std::fs::read_to_string(&saved).expect("saved plan");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["state_serial"], state.serial);

    let fixed = s.ok(&["apply", "--auto-approve"]);
    assert!(
        fixed.stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{}",
        fixed.all()
    );
    let rules = ingress(&s, &sg).await;
    assert_eq!(rules, vec!["tcp/8080-8080 from 0.0.0.0/0".to_string()]);
    let after = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(after.code, 0, "{}", after.all());

    let stale = s.run(&["apply", path_str(&saved)]);
    assert_eq!(stale.code, 1, "{}", stale.all());
    assert!(stale.stderr.contains("the state moved"), "{}", stale.stderr);
    assert!(
        stale.stderr.contains(&format!("serial {}", state.serial)),
        "{}",
        stale.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_plan_applies_when_nothing_moved() {
    let s = setup(cloud());
    s.ok(&["init"]);
    let saved = s.dir.join("first.plan.json");
    let p = s.run(&["plan", "--out", path_str(&saved), "--detailed-exitcode"]);
    assert_eq!(p.code, 2, "{}", p.all());
    assert!(p.stdout.contains("state serial 0"), "{}", p.stdout);
    let applied = s.ok(&["apply", path_str(&saved)]);
    assert!(applied.stdout.contains("13 added"), "{}", applied.all());
    assert_state_matches_emulator(&s).await;
    // The same file again: the state moved (serial 0 → 13+).
    let again = s.run(&["apply", path_str(&saved)]);
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(again.stderr.contains("the state moved"), "{}", again.stderr);
}

async fn ingress(s: &Setup, sg: &str) -> Vec<String> {
    let c = s.clients().await;
    let out = c
        .ec2
        .describe_security_groups()
        .group_ids(sg)
        .send()
        .await
        .expect("sg");
    let mut rules: Vec<String> = out
        .security_groups()
        .iter()
        .flat_map(|g| g.ip_permissions())
        .flat_map(deployer::stack::rule_strings)
        .collect();
    rules.sort();
    rules
}

#[tokio::test(flavor = "multi_thread")]
async fn security_group_admits_only_the_api_port_and_ssh_only_from_its_cidr() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let state = s.deployer().await.read_state().await.expect("state");
    let sg = state.resources["aws_security_group.api"].id.clone();
    assert_eq!(
        ingress(&s, &sg).await,
        vec!["tcp/8080-8080 from 0.0.0.0/0".to_string()]
    );

    // Turning SSH on (same app, state and names) is an in-place update, from that CIDR only.
    let s = s.reconfigure(&[("", "ssh_cidr", "203.0.113.7/32".into())]);
    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("Plan: 0 to add, 1 to change, 0 to destroy."),
        "{}",
        plan.stdout
    );
    s.ok(&["apply", "--auto-approve"]);
    assert_eq!(
        ingress(&s, &sg).await,
        vec![
            "tcp/22-22 from 203.0.113.7/32".to_string(),
            "tcp/8080-8080 from 0.0.0.0/0".to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_profile_policy_names_only_the_artifact_prefixes() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let c = s.clients().await;
    let role = format!("{}-instance", s.cfg.app);
    let policies = c
        .iam
        .list_role_policies()
        .role_name(&role)
        .send()
        .await
        .expect("list");
    assert_eq!(
        policies.policy_names(),
        [format!("{}-artifact-read", s.cfg.app)]
    );
    let attached = c
        .iam
        .list_attached_role_policies()
        .role_name(&role)
        .send()
        .await
        .expect("attached");
    assert!(
        attached.attached_policies().is_empty(),
        "no managed policies"
    );
    let doc = c
        .iam
        .get_role_policy()
        .role_name(&role)
        .policy_name(format!("{}-artifact-read", s.cfg.app))
        .send()
        .await
        .expect("policy");
    let policy = deployer::stack::policy_json(doc.policy_document());
    let stmts = policy["Statement"].as_array().expect("statements");
    assert_eq!(stmts.len(), 1, "{policy}");
    assert_eq!(stmts[0]["Effect"], "Allow");
    assert_eq!(stmts[0]["Action"], "s3:GetObject");
    let b = &s.cfg.artifacts.bucket;
    assert_eq!(
        stmts[0]["Resource"],
        serde_json::json!([
            format!("arn:aws:s3:::{b}/releases/*"),
            format!("arn:aws:s3:::{b}/models/*")
        ])
    );
    assert!(
        !policy.to_string().contains("\"*\""),
        "no wildcard resource or action: {policy}"
    );
    let profile = c
        .iam
        .get_instance_profile()
        .instance_profile_name(format!("{}-instance", s.cfg.app))
        .send()
        .await
        .expect("profile");
    let roles: Vec<&str> = profile
        .instance_profile()
        .expect("profile")
        .roles()
        .iter()
        .map(|r| r.role_name())
        .collect();
    assert_eq!(roles, vec![role.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn launched_instances_require_imdsv2_and_have_an_encrypted_root_volume() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let d = s.deployer().await;
    let state = d.read_state().await.expect("state");

    // The newest Canonical noble image of the realistic list, by creation date.
    let amis = harness::amis();
    let newest = amis
        .as_array()
        .expect("list")
        .iter()
        .filter(|a| {
            a["owner_id"] == "099720109477"
                && a["name"].as_str().is_some_and(|n| {
                    n.starts_with("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-")
                })
        })
        .max_by_key(|a| a["creation_date"].as_str().unwrap_or("").to_string())
        .expect("a noble image");
    let ami = deployer::instances::resolve_ami(&d.clients, &d.cfg.ami.selector())
        .await
        .expect("resolve");
    assert_eq!(ami.id, newest["ami_id"].as_str().expect("id"));

    // An unknown image is refused (AMI validation on), with the action and the code.
    let bad = deployer::instances::resolve_ami(
        &d.clients,
        &deployer::config::AmiSelector::Id("ami-00000000000000000".into()),
    )
    .await
    .expect_err("unknown AMI");
    assert!(bad.to_string().contains("DescribeImages"), "{bad}");

    let id = deployer::instances::launch_instance(
        &d.clients,
        &launch_spec(
            &d,
            &state,
            &ami,
            "#!/bin/sh\necho hello\n",
            deployer::state::Color::Blue,
        ),
    )
    .await
    .expect("launch");

    // A new instance id is unknown to DescribeInstances for a moment: read until shown.
    let inst = described_instance(&d.clients, &id).await;
    assert_eq!(
        inst.metadata_options().and_then(|m| m.http_tokens()),
        Some(&HttpTokensState::Required)
    );
    assert_eq!(inst.image_id(), Some(ami.id.as_str()));
    let tag = |k: &str| {
        inst.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(String::from)
    };
    assert_eq!(tag("app"), Some(s.cfg.app.clone()));
    assert_eq!(tag("managed-by"), Some("deployer".into()));
    assert_eq!(tag("color"), Some("blue".into()));
    assert_eq!(tag("release"), Some("v1".into()));
    let root = inst
        .block_device_mappings()
        .iter()
        .find(|b| b.device_name() == Some(ami.root_device_name.as_str()))
        .and_then(|b| b.ebs())
        .and_then(|e| e.volume_id())
        .expect("a root volume")
        .to_string();
    let vols = d
        .clients
        .ec2
        .describe_volumes()
        .volume_ids(&root)
        .send()
        .await
        .expect("volumes");
    assert_eq!(
        vols.volumes()[0].encrypted(),
        Some(true),
        "root volume encrypted"
    );
    let attr = d
        .clients
        .ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("user data");
    assert!(
        attr.user_data().and_then(|u| u.value()).is_some(),
        "user data set"
    );

    // The instance is not part of the shared stack: plan still says no changes.
    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    // destroy removes it too (it is tagged).
    let destroy_plan = s.ok(&["plan", "--destroy"]);
    assert!(
        destroy_plan
            .stdout
            .contains("# aws_instance.blue will be destroyed"),
        "{}",
        destroy_plan.stdout
    );
    s.ok(&["destroy", "--auto-approve"]);
    let found = deployer::instances::find_instances(&d.clients, &d.cfg)
        .await
        .expect("find");
    assert!(found.is_empty(), "{found:?}");
    let _ = Kind::Vpc;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_config_is_refused_naming_line_and_key() {
    let s = setup_with(cloud(), &[]);
    let mut text = std::fs::read_to_string(&s.config_path).expect("cfg");
    text = text.replace("api_port = 8080", "api_port = 70000");
    std::fs::write(&s.config_path, &text).expect("write");
    let line = text
        .lines()
        .position(|l| l.starts_with("api_port"))
        .expect("line")
        + 1;
    let r = s.run(&["plan"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("line {line}, key `api_port`")),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one clear line: {}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_errors_name_the_resource_the_action_and_the_code() {
    // No `init`: the lock table and the state bucket do not exist.
    let s = setup(cloud());
    let r = s.run(&["plan"]);
    assert_eq!(r.code, 1, "{}", r.all());
    let last = r.last_stderr_line();
    assert!(last.starts_with("error: plan: "), "{last}");
    assert!(
        last.contains(&format!(
            "table {}",
            s.cfg.lock.table.clone().unwrap_or_default()
        )),
        "{last}"
    );
    assert!(
        last.contains("PutItem failed: ResourceNotFoundException"),
        "{last}"
    );

    // With S3 locking, the missing bucket is named with the action and the code.
    let s = setup_with(
        cloud(),
        &[("lock", "backend", toml::Value::String("s3".into()))],
    );
    let r = s.run(&["plan", "--no-lock"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "s3://{}/{}: GetObject failed: NoSuchBucket",
            s.cfg.state.bucket, s.cfg.state.key
        )),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_vpc_cidr_replaces_the_network_in_dependency_order() {
    let s = setup(cloud());
    s.ok(&["init"]);
    s.ok(&["apply", "--auto-approve"]);
    let before = s.deployer().await.read_state().await.expect("state");

    let s = s.reconfigure(&[
        ("", "vpc_cidr", "10.77.0.0/16".into()),
        ("", "subnet_cidr", "10.77.1.0/24".into()),
    ]);

    let plan = s.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    let out = &plan.stdout;
    assert!(out.contains("# aws_vpc.main must be replaced"), "{out}");
    assert!(out.contains("-/+ resource \"aws_vpc\" \"main\" {"), "{out}");
    assert!(
        out.contains("~ cidr_block = \"10.42.0.0/16\" -> \"10.77.0.0/16\" # forces replacement"),
        "{out}"
    );
    assert!(
        out.contains("-> (known after apply) # forces replacement"),
        "{out}"
    );
    // VPC, subnet, attachment, route table, route, association, S3 endpoint,
    // security group.
    assert!(
        out.contains("Plan: 8 to add, 0 to change, 8 to destroy."),
        "{out}"
    );

    let r = s.ok(&["apply", "--auto-approve"]);
    assert!(
        r.stdout.contains("8 added, 0 changed, 8 destroyed"),
        "{}",
        r.all()
    );
    let after = assert_state_matches_emulator(&s).await;
    assert_ne!(
        after.resources["aws_vpc.main"].id,
        before.resources["aws_vpc.main"].id
    );
    assert_eq!(
        after.resources["aws_eip.api"].id,
        before.resources["aws_eip.api"].id
    );
    assert_eq!(after.lineage, before.lineage);
    let old_vpc = &before.resources["aws_vpc.main"].id;
    let c = s.clients().await;
    assert!(
        c.ec2.describe_vpcs().vpc_ids(old_vpc).send().await.is_err(),
        "old VPC deleted"
    );
    assert_eq!(s.run(&["plan", "--detailed-exitcode"]).code, 0);
}

/// `apply` in a terminal asks, and only `yes` goes ahead (a pseudo-terminal through
/// util-linux `script`).
#[tokio::test(flavor = "multi_thread")]
async fn apply_in_a_terminal_asks_and_only_yes_applies() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let s = setup(cloud());
    s.ok(&["init"]);
    let in_tty = |answer: &str| {
        let inner = format!(
            "{} --config {} apply",
            env!("CARGO_BIN_EXE_deployer"),
            path_str(&s.config_path)
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &inner, "/dev/null"]);
        for (k, v) in s.moto.env() {
            c.env(k, v);
        }
        c.env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("script");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{answer}\n").as_bytes())
                .expect("answer");
        }
        common::Run::from(child.wait_with_output().expect("wait"))
    };
    let no = in_tty("no");
    assert!(no.stdout.contains("Enter a value:"), "{}", no.all());
    assert!(no.stdout.contains("apply cancelled"), "{}", no.all());
    let state = s.deployer().await.read_state().await.expect("state");
    assert!(state.resources.is_empty(), "nothing applied after `no`");

    let yes = in_tty("yes");
    assert!(
        yes.stdout.contains("Apply complete! Resources: 13 added"),
        "{}",
        yes.all()
    );
    assert_state_matches_emulator(&s).await;
}
