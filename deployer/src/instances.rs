//! Instances: AMI resolution, launch (IMDSv2 required, encrypted root volume, tags,
//! user data), discovery by tags, termination. The blue/green release builds on these.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceStateName, InstanceType, LocationType,
    ResourceType, VolumeType,
};
use base64::Engine as _;

use crate::aws::{AwsError, Backoff, Clients, retry_while};
use crate::config::{AmiSelector, Config};
use crate::stack::{MANAGED_BY, tag_specification, tags_for};
use crate::state::Color;
use crate::target::{Arch, BinaryTarget};

/// A resolved machine image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ami {
    pub id: String,
    pub name: String,
    pub creation_date: String,
    /// The device of its root volume (`/dev/sda1`), where the encrypted root goes.
    pub root_device_name: String,
    /// Its CPU architecture (`None`: one we cannot run, such as `i386`).
    pub architecture: Option<Arch>,
}

/// The image to launch: the fixed id, or the newest (by creation date) available image
/// of `owner` whose name matches the filter.
pub async fn resolve_ami(clients: &Clients, selector: &AmiSelector) -> Result<Ami, AwsError> {
    let resource = "ami";
    let req = clients.ec2.describe_images();
    let req = match selector {
        AmiSelector::Id(id) => req.image_ids(id),
        AmiSelector::Newest { owner, name_filter } => req
            .owners(owner)
            .filters(Filter::builder().name("name").values(name_filter).build())
            .filters(Filter::builder().name("state").values("available").build()),
    };
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::new(resource, "DescribeImages", e))?;
    let newest = out
        .images()
        .iter()
        .filter(|i| i.image_id().is_some())
        .max_by(|a, b| {
            a.creation_date()
                .unwrap_or("")
                .cmp(b.creation_date().unwrap_or(""))
        });
    let Some(img) = newest else {
        return Err(AwsError::other(
            resource,
            "DescribeImages",
            match selector {
                AmiSelector::Id(id) => format!("no image {id}"),
                AmiSelector::Newest { owner, name_filter } => {
                    format!("no available image of owner {owner} matches {name_filter:?}")
                }
            },
        ));
    };
    Ok(Ami {
        id: img.image_id().unwrap_or_default().to_string(),
        name: img.name().unwrap_or_default().to_string(),
        creation_date: img.creation_date().unwrap_or_default().to_string(),
        root_device_name: img.root_device_name().unwrap_or("/dev/sda1").to_string(),
        architecture: img.architecture().and_then(|a| Arch::from_ec2(a.as_str())),
    })
}

/// The architectures `instance_type` runs (`DescribeInstanceTypes`).
pub async fn instance_type_architectures(
    clients: &Clients,
    instance_type: &str,
) -> Result<Vec<Arch>, AwsError> {
    let resource = format!("instance type {instance_type}");
    let out = clients
        .ec2
        .describe_instance_types()
        .instance_types(InstanceType::from(instance_type))
        .send()
        .await
        .map_err(|e| AwsError::new(&resource, "DescribeInstanceTypes", e))?;
    let Some(info) = out.instance_types().first() else {
        return Err(AwsError::other(
            &resource,
            "DescribeInstanceTypes",
            "EC2 does not know this instance type in this region".into(),
        ));
    };
    Ok(info
        .processor_info()
        .map(|p| p.supported_architectures())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| Arch::from_ec2(a.as_str()))
        .collect())
}

/// The availability zones of the region that offer `instance_type`, sorted
/// (`DescribeInstanceTypeOfferings`). Not every zone offers every type: a subnet in the
/// wrong one makes every launch fail with `Unsupported`.
pub async fn zones_offering(
    clients: &Clients,
    instance_type: &str,
) -> Result<Vec<String>, AwsError> {
    let resource = format!("instance type {instance_type}");
    let out = clients
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(
            Filter::builder()
                .name("instance-type")
                .values(instance_type)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::new(&resource, "DescribeInstanceTypeOfferings", e))?;
    let mut zones: Vec<String> = out
        .instance_type_offerings()
        .iter()
        .filter_map(|o| o.location().map(str::to_string))
        .collect();
    zones.sort();
    zones.dedup();
    Ok(zones)
}

/// Whether a binary built for `binary` runs on `ami` on an instance type that supports
/// `type_archs`; the error is one line naming what does not match.
pub fn check_runs(
    binary: &BinaryTarget,
    ami: &Ami,
    instance_type: &str,
    type_archs: &[Arch],
) -> Result<(), String> {
    match ami.architecture {
        Some(a) if a == binary.arch => {}
        Some(a) => {
            return Err(format!(
                "the server binary is built for {} but the image {} ({}) is {a}",
                binary.arch, ami.id, ami.name
            ));
        }
        None => {
            return Err(format!(
                "the image {} ({}) has an architecture the deployer cannot run",
                ami.id, ami.name
            ));
        }
    }
    if !type_archs.contains(&binary.arch) {
        let runs: Vec<&str> = type_archs.iter().map(|a| a.as_str()).collect();
        return Err(format!(
            "the server binary is built for {} but instance type {instance_type} runs {}",
            binary.arch,
            if runs.is_empty() {
                "neither x86_64 nor arm64".to_string()
            } else {
                runs.join(", ")
            }
        ));
    }
    Ok(())
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec<'a> {
    pub cfg: &'a Config,
    pub ami: &'a Ami,
    pub subnet_id: &'a str,
    pub security_group_id: &'a str,
    pub instance_profile: &'a str,
    /// The boot script (plain text; encoded here).
    pub user_data: &'a str,
    pub color: Color,
    pub release: &'a str,
}

/// How long an instance EC2 answered for moments ago may stay unknown to
/// `DescribeInstances`, and an Elastic IP move unseen by `DescribeAddresses`.
pub use crate::aws::EC2_PROPAGATION;

/// How long `RunInstances` is retried while EC2 does not yet see a new instance
/// profile (IAM changes reach EC2 within seconds, rarely a minute).
pub use crate::aws::IAM_PROPAGATION;

/// Whether a `RunInstances` error means "EC2 does not see the new instance profile (or
/// its role) yet": AWS answers `InvalidParameterValue` for that, as it does for real
/// mistakes, so the message tells them apart (as terraform-provider-aws does).
pub fn is_profile_not_yet_visible(e: &AwsError) -> bool {
    e.code == "InvalidParameterValue"
        && (e.message.contains("Invalid IAM Instance Profile")
            || e.message.contains("has no associated IAM Roles"))
}

/// Launches one instance: IMDSv2 required (`HttpTokens=required`, hop limit 1), an
/// encrypted gp3 root volume deleted with the instance, the instance profile, a public
/// address on its network interface (without one it has no route to S3 through the
/// internet gateway, and nothing can reach it), and the tags (app, managed-by, color,
/// release) on the instance and its volume. A profile created moments ago is retried
/// for up to [`IAM_PROPAGATION`].
pub async fn launch_instance(clients: &Clients, spec: &LaunchSpec<'_>) -> Result<String, AwsError> {
    launch_instance_within(clients, spec, IAM_PROPAGATION).await
}

/// [`launch_instance`] with the propagation bound given.
pub async fn launch_instance_within(
    clients: &Clients,
    spec: &LaunchSpec<'_>,
    iam_propagation: Duration,
) -> Result<String, AwsError> {
    let address = format!("aws_instance.{}", spec.color);
    let tags = tags_for(spec.cfg, &address, spec.color.as_str(), spec.release);
    let user_data = base64::engine::general_purpose::STANDARD.encode(spec.user_data);
    let bound = Backoff {
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(10),
        deadline: iam_propagation,
        log_retries: false,
    };
    let out = retry_while(bound, is_profile_not_yet_visible, || async {
        clients
            .ec2
            .run_instances()
            .image_id(&spec.ami.id)
            .instance_type(InstanceType::from(spec.cfg.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(spec.subnet_id)
                    .groups(spec.security_group_id)
                    .associate_public_ip_address(public_address())
                    .delete_on_termination(true)
                    .build(),
            )
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(spec.instance_profile)
                    .build(),
            )
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&spec.ami.root_device_name)
                    .ebs(
                        EbsBlockDevice::builder()
                            .encrypted(true)
                            .delete_on_termination(true)
                            .volume_type(VolumeType::Gp3)
                            .volume_size(spec.cfg.root_volume_gib)
                            .build(),
                    )
                    .build(),
            )
            .user_data(&user_data)
            .tag_specifications(tag_specification(ResourceType::Instance, &tags))
            .tag_specifications(tag_specification(ResourceType::Volume, &tags))
            .send()
            .await
            .map_err(|e| AwsError::new(&address, "RunInstances", e))
    })
    .await?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| {
            AwsError::other(&address, "RunInstances", "no instance in the answer".into())
        })
}

/// Test hook (feature `test-hooks` only): `DEPLOYER_FAULT=launch-without-public-address`
/// launches with no public address, as a subnet without one would.
#[cfg(feature = "test-hooks")]
fn public_address() -> bool {
    std::env::var("DEPLOYER_FAULT").as_deref() != Ok("launch-without-public-address")
}

#[cfg(not(feature = "test-hooks"))]
fn public_address() -> bool {
    true
}

/// A live (not terminated) instance of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    /// The `color` tag (`blue`, `green`, or whatever was found).
    pub color: String,
    pub release: String,
    pub state: String,
}

/// The app's instances that are not terminated, found by tags.
pub async fn find_instances(clients: &Clients, cfg: &Config) -> Result<Vec<Found>, AwsError> {
    let f = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let out = clients
        .ec2
        .describe_instances()
        .filters(f("tag:app", &cfg.app))
        .filters(f("tag:managed-by", MANAGED_BY))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::new("aws_instance", "DescribeInstances", e))?;
    let mut found = Vec::new();
    for r in out.reservations() {
        for i in r.instances() {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or("")
                    .to_string()
            };
            found.push(Found {
                id: i.instance_id().unwrap_or_default().to_string(),
                color: tag("color"),
                release: tag("release"),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// How long a termination is waited for before it is an error: an instance's
/// shutdown runs its stop hooks and can take minutes (terraform-provider-aws gives
/// `aws_instance` 20 min to delete; ours are small and stateless).
pub const TERMINATED_WITHIN: Duration = Duration::from_secs(600);

/// Terminates `id` and waits (up to `wait`) until EC2 reports it terminated (or no
/// longer knows it): the caller drops its record only after this returns. An instance
/// EC2 does not know is already gone.
pub async fn terminate(clients: &Clients, id: &str, wait: Duration) -> Result<(), AwsError> {
    terminate_launched(clients, id, None, wait).await
}

/// [`terminate`] for an instance launched at `launched_at`: while it is younger than
/// [`EC2_PROPAGATION`], `InvalidInstanceID.NotFound` means "not visible yet", not
/// "gone", and `TerminateInstances` is retried.
pub async fn terminate_launched(
    clients: &Clients,
    id: &str,
    launched_at: Option<chrono::DateTime<chrono::Utc>>,
    wait: Duration,
) -> Result<(), AwsError> {
    let address = format!("aws_instance ({id})");
    let young = || {
        launched_at.is_some_and(|t| {
            (chrono::Utc::now() - t)
                .to_std()
                .map_or(true, |age| age < EC2_PROPAGATION)
        })
    };
    let start = std::time::Instant::now();
    loop {
        match clients
            .ec2
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => break,
            Err(e) if crate::stack::is_not_found(crate::aws::code_of(&e)) => {
                if !young() {
                    return Ok(());
                }
                tracing::info!(
                    instance = id,
                    "EC2 does not show the new instance yet: retrying its termination"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(AwsError::new(&address, "TerminateInstances", e)),
        }
    }
    loop {
        let out = clients
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await;
        let state = match out {
            Ok(out) => out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.state().and_then(|s| s.name()).cloned()),
            // Accepted by TerminateInstances, then unknown: gone.
            Err(e) if crate::stack::is_not_found(crate::aws::code_of(&e)) => None,
            Err(e) => return Err(AwsError::new(&address, "DescribeInstances", e)),
        };
        if matches!(state, None | Some(InstanceStateName::Terminated)) {
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(AwsError::other(
                &address,
                "TerminateInstances",
                format!(
                    "still {} {}s after TerminateInstances",
                    state.as_ref().map_or("unknown", |s| s.as_str()),
                    wait.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ami(arch: Option<Arch>) -> Ami {
        Ami {
            id: "ami-1".into(),
            name: "ubuntu-noble-24.04-amd64-server-x".into(),
            creation_date: String::new(),
            root_device_name: "/dev/sda1".into(),
            architecture: arch,
        }
    }

    #[test]
    fn a_mismatch_is_named_in_one_line() {
        let x86 = BinaryTarget {
            arch: Arch::X86_64,
            interpreter: None,
        };
        assert!(check_runs(&x86, &ami(Some(Arch::X86_64)), "t3.micro", &[Arch::X86_64]).is_ok());
        let e = check_runs(&x86, &ami(Some(Arch::Arm64)), "t4g.micro", &[Arch::Arm64])
            .expect_err("arm64 image");
        assert!(
            e.contains("built for x86_64") && e.contains("ami-1") && e.contains("arm64"),
            "{e}"
        );
        let e = check_runs(&x86, &ami(Some(Arch::X86_64)), "t4g.micro", &[Arch::Arm64])
            .expect_err("arm64 type");
        assert!(e.contains("instance type t4g.micro runs arm64"), "{e}");
        assert!(!e.contains('\n'));
    }
}
