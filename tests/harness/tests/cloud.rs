//! The local cloud, on its real processes: each AWS behaviour seen through raw SDK
//! calls (each test fails on plain moto, where the first call succeeds at once), an
//! instance that boots its user data and serves on its stand-in address, one that
//! cannot download for want of a route, and an Elastic IP whose traffic follows
//! `AssociateAddress` after its delay.
//!
//! The instances run the real `server` binary from the target directory: `cargo test
//! --workspace` builds it; with `cargo test -p harness` alone, run
//! `cargo build -p server` first.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::allocate_address::AllocateAddressOutput;
use aws_sdk_ec2::operation::associate_address::builders::AssociateAddressFluentBuilder;
use aws_sdk_ec2::operation::create_tags::builders::CreateTagsFluentBuilder;
use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{Filter, InstanceNetworkInterfaceSpecification};
use harness::cloud::{AwsBehaviour, InstanceStatus, LocalCloud, LocalCloudOptions};
use sha2::Digest as _;

/// The instances' API port: one free port for this test binary.
fn api_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(harness::free_port)
}
const EIP_DELAY: Duration = Duration::from_millis(1500);

/// One local cloud for the tests of this binary, with the default (AWS-like) delays.
fn cloud() -> &'static LocalCloud {
    static CLOUD: OnceLock<LocalCloud> = OnceLock::new();
    CLOUD.get_or_init(|| {
        LocalCloud::start(LocalCloudOptions {
            eip_propagation: EIP_DELAY,
            ..LocalCloudOptions::default()
        })
        .unwrap()
    })
}

fn delays() -> AwsBehaviour {
    AwsBehaviour::aws_like()
}

async fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&cloud().moto().sdk_config().await)
}

fn ami() -> String {
    harness::amis()[0]["ami_id"].as_str().unwrap().to_string()
}

/// Retries `f` until it succeeds or `deadline` passes; returns the first error code
/// seen (if any) and how long success took.
async fn until_ok<T, E, F, Fut>(deadline: Duration, mut f: F) -> (Option<String>, Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let start = Instant::now();
    let mut first = None;
    loop {
        match f().await {
            Ok(v) => return (first, start.elapsed(), v),
            Err(e) => {
                if first.is_none() {
                    first = Some(format!(
                        "{}: {}",
                        e.code().unwrap_or("?"),
                        e.message().unwrap_or("")
                    ));
                }
                assert!(start.elapsed() < deadline, "still failing: {e:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_vpc(ec2: &aws_sdk_ec2::Client) -> (String, String) {
    // Each test's VPC gets a range of its own: moto hands out private addresses in
    // order, so same-range VPCs of tests running at once would give their instances
    // the same private address (which the address map then leaves out).
    let octet: u8 = rand::random_range(1..=250);
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("10.{octet}.0.0/16"))
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let subnet = subnet_in(ec2, &vpc, &format!("10.{octet}.1.0/24"), None).await;
    (vpc, subnet)
}

/// A new subnet `cidr` of `vpc`, in `zone` (else the region's choice); its id.
async fn subnet_in(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str, zone: Option<&str>) -> String {
    ec2.create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .set_availability_zone(zone.map(String::from))
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap()
}

/// A VPC whose subnet routes 0.0.0.0/0 to an internet gateway; returns (vpc, subnet,
/// route table, gateway).
async fn routed_network(ec2: &aws_sdk_ec2::Client) -> (String, String, String, String) {
    let (vpc, subnet) = new_vpc(ec2).await;
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .unwrap()
        .internet_gateway
        .unwrap()
        .internet_gateway_id
        .unwrap();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let rtb = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap();
    ec2.create_route()
        .route_table_id(&rtb)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    ec2.associate_route_table()
        .route_table_id(&rtb)
        .subnet_id(&subnet)
        .send()
        .await
        .unwrap();
    (vpc, subnet, rtb, igw)
}

/// Launches one instance in `subnet` (with a public address if `public`) and returns
/// its id, once the emulator lets it be seen.
async fn launch(
    ec2: &aws_sdk_ec2::Client,
    subnet: &str,
    public: bool,
    user_data: Option<&str>,
) -> String {
    use base64::Engine as _;
    let mut req = ec2
        .run_instances()
        .image_id(ami())
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(subnet)
                .associate_public_ip_address(public)
                .build(),
        );
    if let Some(u) = user_data {
        req = req.user_data(base64::engine::general_purpose::STANDARD.encode(u));
    }
    let out = req.send().await.unwrap();
    let id = out.instances()[0].instance_id().unwrap().to_string();
    until_ok(Duration::from_secs(30), || {
        ec2.describe_instances().instance_ids(&id).send()
    })
    .await;
    id
}

async fn terminate(ec2: &aws_sdk_ec2::Client, id: &str) {
    ec2.terminate_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

/// `RunInstances` of one instance of the first AMI; the caller adds the rest.
fn run_one(ec2: &aws_sdk_ec2::Client) -> RunInstancesFluentBuilder {
    ec2.run_instances()
        .image_id(ami())
        .min_count(1)
        .max_count(1)
}

/// A new security group in `vpc`; its id.
async fn new_security_group(
    ec2: &aws_sdk_ec2::Client,
    vpc: &str,
    name: &str,
    desc: &str,
) -> String {
    ec2.create_security_group()
        .group_name(name)
        .description(desc)
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap()
}

/// A new VPC Elastic IP address.
async fn allocate(ec2: &aws_sdk_ec2::Client) -> AllocateAddressOutput {
    ec2.allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap()
}

/// `AssociateAddress` of `alloc` with `instance`, moving it if `reassociate`.
fn associate(
    ec2: &aws_sdk_ec2::Client,
    alloc: &str,
    instance: &str,
    reassociate: bool,
) -> AssociateAddressFluentBuilder {
    ec2.associate_address()
        .allocation_id(alloc)
        .instance_id(instance)
        .set_allow_reassociation(reassociate.then_some(true))
}

async fn release(ec2: &aws_sdk_ec2::Client, alloc: &str) {
    ec2.release_address()
        .allocation_id(alloc)
        .send()
        .await
        .unwrap();
}

/// `CreateTags` of `k=v` on `id`.
fn tag(ec2: &aws_sdk_ec2::Client, id: &str) -> CreateTagsFluentBuilder {
    ec2.create_tags().resources(id).tags(
        aws_sdk_ec2::types::Tag::builder()
            .key("k")
            .value("v")
            .build(),
    )
}

/// Awaits a call that must fail with the error code `code`; its error.
async fn refused<T, E>(call: impl std::future::Future<Output = Result<T, E>>, code: &str) -> E
where
    T: std::fmt::Debug,
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let err = call.await.unwrap_err();
    assert_eq!(err.code(), Some(code), "{err:?}");
    err
}

// ---------------------------------------------------------------------------------------
// AWS's eventual consistency, through raw SDK calls
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_new_security_group_is_unknown_until_it_propagates() {
    let ec2 = ec2().await;
    let (vpc, _) = new_vpc(&ec2).await;
    let sg = new_security_group(&ec2, &vpc, &harness::unique("sg"), "local cloud test").await;
    refused(
        ec2.describe_security_groups().group_ids(&sg).send(),
        "InvalidGroup.NotFound",
    )
    .await;
    let (first, took, _) = until_ok(Duration::from_secs(30), || {
        ec2.authorize_security_group_ingress()
            .group_id(&sg)
            .ip_protocol("tcp")
            .from_port(8080)
            .to_port(8080)
            .cidr_ip("0.0.0.0/0")
            .send()
    })
    .await;
    let first = first.expect("AuthorizeSecurityGroupIngress succeeded at once");
    assert!(first.starts_with("InvalidGroup.NotFound"), "{first}");
    assert!(took >= delays().security_group / 2, "took {took:?}");
    ec2.describe_security_groups()
        .group_ids(&sg)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn run_instances_refuses_a_new_instance_profile_until_it_propagates() {
    let sdk = cloud().moto().sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let name = harness::unique("profile");
    iam.create_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
        .unwrap();
    let (first, took, out) = until_ok(Duration::from_secs(30), || {
        run_one(&ec2)
            .iam_instance_profile(
                aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                    .name(&name)
                    .build(),
            )
            .send()
    })
    .await;
    let first = first.expect("RunInstances accepted the new profile at once");
    assert_eq!(
        first,
        format!(
            "InvalidParameterValue: Value ({name}) for parameter iamInstanceProfile.name is \
             invalid. Invalid IAM Instance Profile name"
        )
    );
    assert!(took >= delays().instance_profile / 2, "took {took:?}");
    let id = out.instances()[0].instance_id().unwrap().to_string();
    until_ok(Duration::from_secs(30), || {
        ec2.terminate_instances().instance_ids(&id).send()
    })
    .await;
}

#[tokio::test]
async fn a_new_instance_is_unknown_until_it_propagates() {
    let ec2 = ec2().await;
    let out = run_one(&ec2).send().await.unwrap();
    let id = out.instances()[0].instance_id().unwrap().to_string();
    refused(
        ec2.describe_instances().instance_ids(&id).send(),
        "InvalidInstanceID.NotFound",
    )
    .await;
    refused(tag(&ec2, &id).send(), "InvalidInstanceID.NotFound").await;
    refused(
        ec2.describe_instance_attribute()
            .instance_id(&id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send(),
        "InvalidInstanceID.NotFound",
    )
    .await;
    let alloc = allocate(&ec2).await.allocation_id.unwrap();
    refused(
        associate(&ec2, &alloc, &id, false).send(),
        "InvalidInstanceID.NotFound",
    )
    .await;
    release(&ec2, &alloc).await;
    // Absent from listings too.
    let listed = ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-id").values(&id).build())
        .send()
        .await
        .unwrap();
    assert!(listed.reservations().is_empty(), "{listed:?}");
    let (_, took, _) = until_ok(Duration::from_secs(30), || {
        ec2.describe_instances().instance_ids(&id).send()
    })
    .await;
    assert!(took >= delays().instance / 2, "took {took:?}");
    tag(&ec2, &id).send().await.unwrap();
    terminate(&ec2, &id).await;
}

async fn holder(ec2: &aws_sdk_ec2::Client, alloc: &str) -> Option<String> {
    let out = ec2
        .describe_addresses()
        .allocation_ids(alloc)
        .send()
        .await
        .unwrap();
    out.addresses()[0]
        .instance_id()
        .filter(|i| !i.is_empty())
        .map(String::from)
}

#[tokio::test]
async fn describe_addresses_shows_the_previous_association_for_a_while() {
    let ec2 = ec2().await;
    let (_, subnet) = new_vpc(&ec2).await;
    let a = launch(&ec2, &subnet, false, None).await;
    let b = launch(&ec2, &subnet, false, None).await;
    let alloc = allocate(&ec2).await.allocation_id.unwrap();
    associate(&ec2, &alloc, &a, false).send().await.unwrap();
    assert_eq!(
        holder(&ec2, &alloc).await,
        None,
        "the association showed at once"
    );
    let start = Instant::now();
    while holder(&ec2, &alloc).await.as_deref() != Some(a.as_str()) {
        assert!(start.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    associate(&ec2, &alloc, &b, true).send().await.unwrap();
    let moved = Instant::now();
    assert_eq!(holder(&ec2, &alloc).await.as_deref(), Some(a.as_str()));
    while holder(&ec2, &alloc).await.as_deref() != Some(b.as_str()) {
        assert!(moved.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved.elapsed() >= delays().address / 2);

    // AWS refuses to release an associated address (moto alone allows it).
    refused(
        ec2.release_address().allocation_id(&alloc).send(),
        "InvalidIPAddress.InUse",
    )
    .await;
    ec2.disassociate_address()
        .association_id(
            ec2.describe_addresses()
                .allocation_ids(&alloc)
                .send()
                .await
                .unwrap()
                .addresses()[0]
                .association_id()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    release(&ec2, &alloc).await;
    terminate(&ec2, &a).await;
    terminate(&ec2, &b).await;
}

#[tokio::test]
async fn a_terminated_instance_blocks_deletes_for_a_while_and_mapped_addresses_block_the_gateway() {
    let ec2 = ec2().await;
    let (vpc, subnet, rtb, igw) = routed_network(&ec2).await;
    let sg = new_security_group(&ec2, &vpc, &harness::unique("sg"), "local cloud test").await;
    let (_, _, out) = until_ok(Duration::from_secs(30), || {
        run_one(&ec2)
            .subnet_id(&subnet)
            .security_group_ids(&sg)
            .send()
    })
    .await;
    let id = out.instances()[0].instance_id().unwrap().to_string();
    until_ok(Duration::from_secs(30), || {
        ec2.describe_instances().instance_ids(&id).send()
    })
    .await;
    let alloc = allocate(&ec2).await.allocation_id.unwrap();
    associate(&ec2, &alloc, &id, false).send().await.unwrap();
    // A mapped public address holds the gateway.
    let err = refused(
        ec2.detach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send(),
        "DependencyViolation",
    )
    .await;
    assert!(
        err.message().unwrap().contains("mapped public address"),
        "{err:?}"
    );
    // A live instance holds its security group.
    refused(
        ec2.delete_security_group().group_id(&sg).send(),
        "DependencyViolation",
    )
    .await;

    terminate(&ec2, &id).await;
    let terminated = Instant::now();
    // Terminating let go of the address; its interfaces linger for a while.
    refused(
        ec2.delete_security_group().group_id(&sg).send(),
        "DependencyViolation",
    )
    .await;
    refused(
        ec2.delete_subnet().subnet_id(&subnet).send(),
        "DependencyViolation",
    )
    .await;
    until_ok(Duration::from_secs(30), || {
        ec2.delete_security_group().group_id(&sg).send()
    })
    .await;
    until_ok(Duration::from_secs(30), || {
        ec2.delete_subnet().subnet_id(&subnet).send()
    })
    .await;
    until_ok(Duration::from_secs(30), || {
        ec2.detach_internet_gateway()
            .internet_gateway_id(&igw)
            .vpc_id(&vpc)
            .send()
    })
    .await;
    assert!(terminated.elapsed() >= delays().terminated_interfaces / 2);
    release(&ec2, &alloc).await;
    let _ = rtb;
}

#[tokio::test]
async fn plain_moto_has_none_of_these_delays() {
    // The control: the wrapper with every behaviour off is the forgiving emulator the
    // tests above would fail on.
    let moto = harness::Moto::start_aws_like(&AwsBehaviour::off()).unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let (vpc, _) = new_vpc(&ec2).await;
    let sg = new_security_group(&ec2, &vpc, "g", "d").await;
    ec2.describe_security_groups()
        .group_ids(&sg)
        .send()
        .await
        .unwrap();
    let out = run_one(&ec2).send().await.unwrap();
    let id = out.instances()[0].instance_id().unwrap();
    ec2.describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Instances that boot, and the Elastic IP
// ---------------------------------------------------------------------------------------

/// The server binary and a model in the emulator's S3, published once per test binary.
struct Published {
    bucket: String,
    model_version: String,
    server_url: String,
    server_sha256: String,
}

fn published() -> &'static Published {
    static P: OnceLock<Published> = OnceLock::new();
    P.get_or_init(|| {
        std::thread::spawn(|| tokio::runtime::Runtime::new().unwrap().block_on(publish()))
            .join()
            .unwrap()
    })
}

async fn publish() -> Published {
    let s3 = cloud().moto().s3_client().await;
    let bucket = harness::unique("artifacts");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let (model, model_version) = harness::artifact::promoted_dir();
    harness::upload_dir(&s3, &bucket, "models", model.path()).await;
    let server = harness::workspace_bin("server").unwrap_or_else(|e| panic!("{e}"));
    let server = std::fs::read(server).unwrap();
    let server_sha256 = hex::encode(sha2::Sha256::digest(&server));
    s3.put_object()
        .bucket(&bucket)
        .key("releases/test/server")
        .body(server.into())
        .send()
        .await
        .unwrap();
    let presigned = s3
        .get_object()
        .bucket(&bucket)
        .key("releases/test/server")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(3600))
                .unwrap(),
        )
        .await
        .unwrap();
    Published {
        bucket,
        model_version,
        server_url: presigned.uri().to_string(),
        server_sha256,
    }
}

/// `userdata/boot.sh` rendered as the deployer renders it (`render_user_data`).
fn user_data(release: &str) -> String {
    let p = published();
    let root = harness::repo_root().join("userdata");
    let boot = std::fs::read_to_string(root.join("boot.sh")).unwrap();
    let unit = std::fs::read_to_string(root.join("server.service")).unwrap();
    boot.replace("@SERVICE_UNIT@", unit.trim_end())
        .replace("@RELEASE@", release)
        .replace(
            "@MODEL_URI@",
            &format!("s3://{}/models@{}", p.bucket, p.model_version),
        )
        .replace("@API_PORT@", &api_port().to_string())
        .replace("@SERVER_URL@", &p.server_url)
        .replace("@SERVER_SHA256@", &p.server_sha256)
}

/// GET `path` on `ip:port`; (status, body).
fn get(ip: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    assert!(ip.is_loopback(), "only loopback is ever a target, not {ip}");
    let r =
        harness::http::get_at(SocketAddr::from((ip, port)), path, Duration::from_secs(7)).ok()?;
    Some((r.status, r.body))
}

/// [`wait_ready`] off the async runtime, with a minute to get there.
async fn ready_within_a_minute(ip: Ipv4Addr) -> bool {
    tokio::task::spawn_blocking(move || wait_ready(ip, Duration::from_secs(60)))
        .await
        .unwrap()
}

/// Waits (a minute at most) for `id` to finish booting; its status then.
async fn booted(id: &str) -> Option<InstanceStatus> {
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        cloud().wait_status(&id, Duration::from_secs(60), |s| {
            !matches!(s, InstanceStatus::Booting)
        })
    })
    .await
    .unwrap()
}

fn wait_ready(ip: Ipv4Addr, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some((200, _)) = get(ip, api_port(), "/readyz") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn release_of(ip: Ipv4Addr) -> Option<String> {
    let (code, body) = get(ip, api_port(), "/version")?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["release"].as_str().map(String::from)
}

/// Boots one instance with a public address in a routed subnet; its stand-in.
async fn boot_public(ec2: &aws_sdk_ec2::Client, subnet: &str, release: &str) -> (String, Ipv4Addr) {
    let ud = user_data(release);
    let id = launch(ec2, subnet, true, Some(&ud)).await;
    let c = cloud();
    let status = booted(&id).await;
    let log = std::fs::read_to_string(c.boot_log(&id)).unwrap_or_default();
    assert!(
        matches!(status, Some(InstanceStatus::Serving(_))),
        "{id}: {status:?}\n{log}"
    );
    let standin = c.standin_of(&id).unwrap();
    (id, standin)
}

fn address_map() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(cloud().address_map_path()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_a_public_address_boots_and_serves_until_terminated() {
    let ec2 = ec2().await;
    let (_, subnet, _, _) = routed_network(&ec2).await;
    let (id, standin) = boot_public(&ec2, &subnet, "r-public").await;
    assert_eq!(&standin.octets()[..2], &[127, 77]);
    let ready = ready_within_a_minute(standin).await;
    let journal = std::fs::read_to_string(cloud().journal(&id)).unwrap_or_default();
    assert!(ready, "{id} never became ready on {standin}:\n{journal}");
    let health = get(standin, api_port(), "/healthz").unwrap();
    assert_eq!(health.0, 200, "{health:?}");
    assert_eq!(release_of(standin).as_deref(), Some("r-public"));

    // The address map sends both of its emulator addresses to its stand-in.
    let d = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    let i = &d.reservations()[0].instances()[0];
    let public = i.public_ip_address().expect("a public address");
    let private = i.private_ip_address().unwrap();
    let map = address_map();
    assert_eq!(map[public], standin.to_string(), "{map}");
    assert_eq!(map[private], standin.to_string(), "{map}");
    let log = std::fs::read_to_string(cloud().boot_log(&id)).unwrap();
    assert!(log.contains("route to S3: public address"), "{log}");

    // Terminated: its server stops, its addresses leave the map.
    terminate(&ec2, &id).await;
    let status = tokio::task::spawn_blocking(move || {
        cloud().wait_status(&id, Duration::from_secs(30), |s| {
            *s == InstanceStatus::Stopped
        })
    })
    .await
    .unwrap();
    assert_eq!(status, Some(InstanceStatus::Stopped));
    assert!(
        TcpStream::connect_timeout(
            &SocketAddr::from((standin, api_port())),
            Duration::from_secs(1)
        )
        .is_err(),
        "the terminated instance's server still accepts connections"
    );
    let start = Instant::now();
    while address_map().get(public).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            address_map()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_route_to_s3_cannot_download_until_the_vpc_has_an_endpoint() {
    let ec2 = ec2().await;
    let (vpc, subnet, rtb, _) = routed_network(&ec2).await;
    let ud = user_data("r-private");
    let id = launch(&ec2, &subnet, false, Some(&ud)).await;
    let status = booted(&id).await;
    let log = std::fs::read_to_string(cloud().boot_log(&id)).unwrap();
    assert_eq!(status, Some(InstanceStatus::BootFailed(Some(28))), "{log}");
    assert!(log.contains("no public IPv4 address"), "{log}");
    assert!(log.contains("no route to S3"), "{log}");
    assert!(log.contains("Connection timed out"), "{log}");
    terminate(&ec2, &id).await;

    // An S3 gateway endpoint on its route table is a route: the same boot succeeds.
    ec2.create_vpc_endpoint()
        .vpc_id(&vpc)
        .service_name(format!("com.amazonaws.{}.s3", harness::REGION))
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Gateway)
        .route_table_ids(&rtb)
        .send()
        .await
        .unwrap();
    let id = launch(&ec2, &subnet, false, Some(&ud)).await;
    let status = booted(&id).await;
    let log = std::fs::read_to_string(cloud().boot_log(&id)).unwrap();
    assert!(
        matches!(status, Some(InstanceStatus::Serving(_))),
        "{status:?}\n{log}"
    );
    assert!(log.contains("S3 gateway endpoint"), "{log}");
    let standin = cloud().standin_of(&id).unwrap();
    let ready = ready_within_a_minute(standin).await;
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(cloud().journal(&id)).unwrap_or_default()
    );
    terminate(&ec2, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elastic_ip_serves_on_its_own_address_and_follows_a_move_after_its_delay() {
    let ec2 = ec2().await;
    let (_, subnet, _, _) = routed_network(&ec2).await;
    let (blue, blue_ip) = boot_public(&ec2, &subnet, "r-blue").await;
    let (green, green_ip) = boot_public(&ec2, &subnet, "r-green").await;
    for ip in [blue_ip, green_ip] {
        assert!(ready_within_a_minute(ip).await);
    }
    let eip = allocate(&ec2).await;
    let eip_ip: Ipv4Addr = eip.public_ip().unwrap().parse().unwrap();
    assert!(
        eip_ip.is_loopback(),
        "moto's Elastic IPs are loopback: {eip_ip}"
    );
    let alloc = eip.allocation_id().unwrap().to_string();
    associate(&ec2, &alloc, &blue, false).send().await.unwrap();
    let associated = Instant::now();
    let through_eip = move || release_of(eip_ip);
    let start = Instant::now();
    while tokio::task::spawn_blocking(through_eip)
        .await
        .unwrap()
        .as_deref()
        != Some("r-blue")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the EIP never served blue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        associated.elapsed() >= EIP_DELAY,
        "served before the propagation delay"
    );
    assert_eq!(cloud().eip_backend(eip_ip), Some(blue_ip));

    // A connection opened now stays with blue after the move, as on AWS.
    let mut held = TcpStream::connect((eip_ip, api_port())).unwrap();
    associate(&ec2, &alloc, &green, true).send().await.unwrap();
    let moved = Instant::now();
    let mut seen_blue_after_move = false;
    loop {
        let r = tokio::task::spawn_blocking(through_eip).await.unwrap();
        match r.as_deref() {
            Some("r-green") => break,
            Some("r-blue") => seen_blue_after_move = true,
            other => panic!("through the EIP during the move: {other:?}"),
        }
        assert!(
            moved.elapsed() < Duration::from_secs(30),
            "the EIP never moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_blue_after_move, "the move took effect at once");
    assert!(
        moved.elapsed() >= EIP_DELAY,
        "moved after {:?}",
        moved.elapsed()
    );
    write!(
        held,
        "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = String::new();
    held.read_to_string(&mut body).unwrap();
    assert!(body.contains("r-blue"), "{body}");

    terminate(&ec2, &blue).await;
    terminate(&ec2, &green).await;
}

// ---- Network Load Balancers ---------------------------------------------------------

async fn elb() -> aws_sdk_elasticloadbalancingv2::Client {
    aws_sdk_elasticloadbalancingv2::Client::new(&cloud().moto().sdk_config().await)
}

/// A unique name for a balancer or target group (at most 32 characters, no `_`).
fn elb_name(prefix: &str) -> String {
    harness::unique(prefix)
        .replace('_', "-")
        .chars()
        .take(32)
        .collect()
}

/// A subnet of its own in `zone` of `vpc`, routed through `rtb`.
async fn zone_subnet(
    ec2: &aws_sdk_ec2::Client,
    vpc: &str,
    rtb: &str,
    cidr: &str,
    zone: &str,
) -> String {
    let subnet = subnet_in(ec2, vpc, cidr, Some(zone)).await;
    ec2.associate_route_table()
        .route_table_id(rtb)
        .subnet_id(&subnet)
        .send()
        .await
        .unwrap();
    subnet
}

/// A TCP target group on the API port, health-checked by HTTP on `/readyz` every 5 s
/// (0.5 s in the local cloud), 2 checks in a row either way; its ARN.
async fn target_group(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    vpc: &str,
    name: &str,
) -> String {
    use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
    let arn = elb
        .create_target_group()
        .name(name)
        .protocol(ProtocolEnum::Tcp)
        .port(i32::from(api_port()))
        .vpc_id(vpc)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_path("/readyz")
        .health_check_interval_seconds(5)
        .health_check_timeout_seconds(2)
        .healthy_threshold_count(2)
        .unhealthy_threshold_count(2)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    elb.modify_target_group_attributes()
        .target_group_arn(&arn)
        .attributes(
            aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value("3")
                .build(),
        )
        .send()
        .await
        .unwrap();
    arn
}

/// A forward action over `groups` (ARN, weight).
fn forward(groups: &[(&str, i32)]) -> aws_sdk_elasticloadbalancingv2::types::Action {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple,
    };
    let mut cfg = ForwardActionConfig::builder();
    for (arn, w) in groups {
        cfg = cfg.target_groups(
            TargetGroupTuple::builder()
                .target_group_arn(*arn)
                .weight(*w)
                .build(),
        );
    }
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(cfg.build())
        .build()
}

/// `DescribeTargetHealth` of `tg`: (instance id, state).
async fn target_states(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tg: &str,
) -> Vec<(String, String)> {
    let out = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .unwrap();
    let mut v: Vec<(String, String)> = out
        .target_health_descriptions()
        .iter()
        .map(|d| {
            (
                d.target().unwrap().id().unwrap().to_string(),
                d.target_health()
                    .unwrap()
                    .state()
                    .unwrap()
                    .as_str()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits (30 s at most) until `DescribeTargetHealth` of `tg` reports `want`.
async fn wait_states(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tg: &str,
    want: &[(&str, &str)],
) {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    want.sort();
    let start = Instant::now();
    loop {
        let now = target_states(elb, tg).await;
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "target health of {tg}: {now:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The releases `n` requests through `ip` were answered by (`None`: a failed request).
async fn releases_through(ip: Ipv4Addr, n: usize) -> Vec<Option<String>> {
    tokio::task::spawn_blocking(move || (0..n).map(|_| release_of(ip)).collect())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_load_balancer_spreads_over_healthy_targets_by_its_weights() {
    use aws_sdk_elasticloadbalancingv2::types::{
        LoadBalancerTypeEnum, ProtocolEnum, SubnetMapping, TargetDescription,
    };
    let ec2 = ec2().await;
    let elb = elb().await;
    let (vpc, subnet_a, rtb, _) = routed_network(&ec2).await;
    let subnets = ec2
        .describe_subnets()
        .subnet_ids(&subnet_a)
        .send()
        .await
        .unwrap();
    let cidr_a = subnets.subnets()[0].cidr_block().unwrap();
    let cidr_b = cidr_a.replace(".1.0/24", ".2.0/24");
    let subnet_b = zone_subnet(&ec2, &vpc, &rtb, &cidr_b, "us-east-1b").await;
    let (eip_a, eip_b) = (allocate(&ec2).await, allocate(&ec2).await);
    let ips: Vec<Ipv4Addr> = [&eip_a, &eip_b]
        .iter()
        .map(|e| e.public_ip().unwrap().parse().unwrap())
        .collect();
    let mapping = |subnet: &str, e: &AllocateAddressOutput| {
        SubnetMapping::builder()
            .subnet_id(subnet)
            .allocation_id(e.allocation_id().unwrap())
            .build()
    };
    let lb = elb
        .create_load_balancer()
        .name(elb_name("nlb"))
        .r#type(LoadBalancerTypeEnum::Network)
        .subnet_mappings(mapping(&subnet_a, &eip_a))
        .subnet_mappings(mapping(&subnet_b, &eip_b))
        .send()
        .await
        .unwrap();
    let lb = &lb.load_balancers()[0];
    let lb_arn = lb.load_balancer_arn().unwrap().to_string();
    assert_eq!(lb.state().unwrap().code().unwrap().as_str(), "provisioning");
    // Its addresses are the Elastic IPs of its mappings, one per zone.
    let described = elb
        .describe_load_balancers()
        .load_balancer_arns(&lb_arn)
        .send()
        .await
        .unwrap();
    let mut listed: Vec<Ipv4Addr> = described.load_balancers()[0]
        .availability_zones()
        .iter()
        .flat_map(|z| z.load_balancer_addresses())
        .map(|a| a.ip_address().unwrap().parse().unwrap())
        .collect();
    listed.sort();
    let mut want_ips = ips.clone();
    want_ips.sort();
    assert_eq!(listed, want_ips);

    let (b1, _) = boot_public(&ec2, &subnet_a, "lb-b1").await;
    let (b2, b2_standin) = boot_public(&ec2, &subnet_b, "lb-b2").await;
    let (g1, _) = boot_public(&ec2, &subnet_a, "lb-g1").await;
    let blue = target_group(&elb, &vpc, &elb_name("blue")).await;
    let green = target_group(&elb, &vpc, &elb_name("green")).await;
    let register = |tg: &str, ids: &[&str]| {
        let mut req = elb.register_targets().target_group_arn(tg);
        for id in ids {
            req = req.targets(TargetDescription::builder().id(*id).build());
        }
        req.send()
    };
    register(&blue, &[&b1, &b2]).await.unwrap();
    register(&green, &[&g1]).await.unwrap();
    // Registered, not yet checked: `initial`, not moto's "healthy".
    assert!(
        target_states(&elb, &blue)
            .await
            .iter()
            .all(|(_, s)| s == "initial"),
        "{:?}",
        target_states(&elb, &blue).await
    );
    let listener = elb
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(ProtocolEnum::Tcp)
        .port(i32::from(api_port()))
        .default_actions(forward(&[(&blue, 1), (&green, 0)]))
        .send()
        .await
        .unwrap()
        .listeners()[0]
        .listener_arn()
        .unwrap()
        .to_string();
    wait_states(&elb, &blue, &[(&b1, "healthy"), (&b2, "healthy")]).await;
    wait_states(&elb, &green, &[(&g1, "healthy")]).await;

    // Once active, every address of the balancer spreads over blue's two targets only.
    let start = Instant::now();
    while cloud().balancer_route(ips[0], api_port()).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the balancer never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ip in &ips {
        let served = releases_through(*ip, 20).await;
        for r in ["lb-b1", "lb-b2"] {
            assert!(
                served.iter().any(|s| s.as_deref() == Some(r)),
                "{ip}: {served:?}"
            );
        }
        assert!(
            served
                .iter()
                .all(|s| matches!(s.as_deref(), Some("lb-b1" | "lb-b2"))),
            "{ip}: {served:?}"
        );
    }

    // The weights move to green: new connections follow after the propagation delay.
    elb.modify_listener()
        .listener_arn(&listener)
        .default_actions(forward(&[(&blue, 0), (&green, 1)]))
        .send()
        .await
        .unwrap();
    let moved = Instant::now();
    loop {
        let r = releases_through(ips[1], 1).await.remove(0);
        if r.as_deref() == Some("lb-g1") {
            break;
        }
        assert!(
            matches!(r.as_deref(), Some("lb-b1" | "lb-b2")),
            "during the shift: {r:?}"
        );
        assert!(
            moved.elapsed() < Duration::from_secs(30),
            "the weights never moved"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        moved.elapsed() >= Duration::from_millis(1000),
        "moved at once"
    );
    assert!(
        releases_through(ips[0], 10)
            .await
            .iter()
            .all(|r| r.as_deref() == Some("lb-g1"))
    );

    // Back to blue; one of its processes dies: once its checks fail, no request goes to it.
    elb.modify_listener()
        .listener_arn(&listener)
        .default_actions(forward(&[(&blue, 1), (&green, 0)]))
        .send()
        .await
        .unwrap();
    let Some(InstanceStatus::Serving(pid)) = cloud().status(&b2) else {
        panic!("{b2} does not serve: {:?}", cloud().status(&b2))
    };
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(
        get(b2_standin, api_port(), "/readyz").is_none(),
        "b2 still answers"
    );
    wait_states(&elb, &blue, &[(&b1, "healthy"), (&b2, "unhealthy")]).await;
    let start = Instant::now();
    loop {
        let served = releases_through(ips[0], 1).await.remove(0);
        if served.as_deref() == Some("lb-b1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "blue never came back: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = releases_through(ips[0], 20).await;
    assert!(
        served.iter().all(|r| r.as_deref() == Some("lb-b1")),
        "{served:?}"
    );

    // A deregistered target drains for the group's delay, then is gone.
    elb.deregister_targets()
        .target_group_arn(&blue)
        .targets(TargetDescription::builder().id(&b2).build())
        .send()
        .await
        .unwrap();
    assert_eq!(target_states(&elb, &blue).await, {
        let mut v = vec![
            (b1.clone(), "healthy".to_string()),
            (b2.clone(), "draining".to_string()),
        ];
        v.sort();
        v
    });
    wait_states(&elb, &blue, &[(&b1, "healthy")]).await;

    // Deleted, its interfaces linger: they hold the subnet and the addresses a while.
    elb.delete_load_balancer()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .unwrap();
    for id in [&b1, &b2, &g1] {
        terminate(&ec2, id).await;
    }
    let held = ec2
        .release_address()
        .allocation_id(eip_a.allocation_id().unwrap())
        .send()
        .await;
    assert_eq!(
        held.err()
            .and_then(|e| e.code().map(String::from))
            .as_deref(),
        Some("InvalidIPAddress.InUse")
    );
    let (_, took, _) = until_ok(Duration::from_secs(30), || {
        ec2.release_address()
            .allocation_id(eip_a.allocation_id().unwrap())
            .send()
    })
    .await;
    assert!(took >= Duration::from_secs(1), "released after {took:?}");
    release(&ec2, eip_b.allocation_id().unwrap()).await;
    for tg in [&blue, &green] {
        elb.delete_target_group()
            .target_group_arn(tg)
            .send()
            .await
            .unwrap();
    }
}
