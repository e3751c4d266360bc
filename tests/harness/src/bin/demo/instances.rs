//! The local cloud's side of the demo: the instances' logs saved to the output folder,
//! the Elastic IP's address, and what `deployer destroy` left behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use harness::cloud::{InstanceStatus, LocalCloud};

use crate::procs::{http_with, run_cli_output};

/// The files of an instance worth keeping: its user data's output and the runner's
/// notes, its server's output, what its boot asked of systemctl.
const LOG_FILES: [&str; 3] = ["boot.log", "journal.log", "systemctl.calls"];

/// Copies every instance's logs from the local cloud's sandbox (removed when the cloud
/// stops) to `<out>/instances/<id>/`, now ([`SaveLogs::save`]) and once more when
/// dropped, so a failed demo keeps them too.
pub struct SaveLogs<'a> {
    cloud: &'a LocalCloud,
    out: PathBuf,
}

impl<'a> SaveLogs<'a> {
    pub fn new(cloud: &'a LocalCloud, out_dir: &Path) -> SaveLogs<'a> {
        SaveLogs {
            cloud,
            out: out_dir.join("instances"),
        }
    }

    /// Copies what there is; returns the copies' paths.
    pub fn save(&self) -> Vec<PathBuf> {
        let mut saved = Vec::new();
        let runner_log = self.cloud.runner_log();
        if runner_log.is_file() && std::fs::create_dir_all(&self.out).is_ok() {
            let dst = self.out.join("runner.log");
            if std::fs::copy(&runner_log, &dst).is_ok() {
                saved.push(dst);
            }
        }
        for id in instance_ids(self.cloud) {
            let from = self.cloud.boot_log(&id);
            let Some(from_dir) = from.parent() else {
                continue;
            };
            let to_dir = self.out.join(&id);
            for name in LOG_FILES {
                let src = from_dir.join(name);
                if !src.is_file() {
                    continue;
                }
                let dst = to_dir.join(name);
                if std::fs::create_dir_all(&to_dir).is_ok() && std::fs::copy(&src, &dst).is_ok() {
                    saved.push(dst);
                }
            }
        }
        saved
    }
}

impl Drop for SaveLogs<'_> {
    fn drop(&mut self) {
        self.save();
    }
}

/// Every instance the local cloud has taken on (running or not), by id.
pub fn instance_ids(cloud: &LocalCloud) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(cloud.sandbox().join("instances")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("i-"))
        .collect();
    ids.sort();
    ids
}

/// How many instances have booted and serve now.
pub fn serving(cloud: &LocalCloud) -> usize {
    instance_ids(cloud)
        .iter()
        .filter(|id| matches!(cloud.status(id), Some(InstanceStatus::Serving(_))))
        .count()
}

/// The Elastic IP's own address, as `deployer status --json` reports it. The local
/// cloud's emulator hands Elastic IPs out in 127.0.0.0/8 and listens on them.
pub fn eip_address(deployer: &Path, env: &[(&str, String)]) -> anyhow::Result<Ipv4Addr> {
    let out = run_cli_output(deployer, &["status", "--json"], env)?;
    let status: serde_json::Value =
        serde_json::from_str(&out).context("reading `deployer status --json`")?;
    let Some(ip) = status["eip_public_ip"].as_str() else {
        bail!("`deployer status --json` names no Elastic IP: {out}");
    };
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("the Elastic IP {ip:?} is not an IPv4 address"))?;
    if !ip.is_loopback() {
        bail!(
            "the Elastic IP {ip} is not a loopback address: the local cloud cannot stand in for it"
        );
    }
    Ok(ip)
}

/// IAM's `action` (a List call) on the emulator, and the `element` of each member. The
/// harness has no IAM client outside its tests: this is the query API over plain HTTP,
/// with a credential scope (unsigned: the emulator routes by it and checks no
/// signature).
fn iam_names(moto: &harness::Moto, action: &str, element: &str) -> anyhow::Result<Vec<String>> {
    let key = moto
        .env()
        .into_iter()
        .find(|(k, _)| *k == "AWS_ACCESS_KEY_ID")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={key}/20260101/{}/iam/aws4_request, SignedHeaders=host, Signature=0",
        harness::REGION
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], moto.port()));
    let (status, body) = http_with(
        addr,
        "GET",
        &format!("/?Action={action}&Version=2010-05-08&MaxItems=1000"),
        &[("Authorization", &auth)],
        "",
    )?;
    if status != 200 {
        bail!("IAM {action} answered {status}: {body}");
    }
    if body.contains("<IsTruncated>true</IsTruncated>") {
        bail!("IAM {action}: more than 1000 answers");
    }
    let (open, close) = (format!("<{element}>"), format!("</{element}>"));
    Ok(body
        .split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(name, _)| name.to_string()))
        .collect())
}

/// After `deployer destroy`: every instance not terminated, every Elastic IP, every VPC
/// but the default one, every internet gateway, and the app's IAM roles and instance
/// profiles. The account is the demo's own, so anything there is the app's. Fails
/// naming what is left; else returns the line that says nothing is.
pub async fn left_after_destroy(
    ec2: &aws_sdk_ec2::Client,
    moto: &harness::Moto,
    app: &str,
) -> anyhow::Result<String> {
    let mut left = Vec::new();
    let mut instances = 0;
    let mut pages = ec2.describe_instances().into_paginator().send();
    while let Some(page) = pages.next().await {
        for r in page.context("DescribeInstances")?.reservations() {
            for i in r.instances() {
                instances += 1;
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default();
                if state != "terminated" {
                    left.push(format!(
                        "instance {} ({state})",
                        i.instance_id().unwrap_or("?")
                    ));
                }
            }
        }
    }
    let addresses = ec2
        .describe_addresses()
        .send()
        .await
        .context("DescribeAddresses")?;
    for a in addresses.addresses() {
        left.push(format!(
            "Elastic IP {} ({})",
            a.public_ip().unwrap_or("?"),
            a.allocation_id().unwrap_or("?")
        ));
    }
    let vpcs = ec2.describe_vpcs().send().await.context("DescribeVpcs")?;
    for v in vpcs.vpcs().iter().filter(|v| v.is_default() != Some(true)) {
        left.push(format!("VPC {}", v.vpc_id().unwrap_or("?")));
    }
    let igws = ec2
        .describe_internet_gateways()
        .send()
        .await
        .context("DescribeInternetGateways")?;
    for g in igws.internet_gateways() {
        left.push(format!(
            "internet gateway {}",
            g.internet_gateway_id().unwrap_or("?")
        ));
    }
    for (action, element, what) in [
        ("ListRoles", "RoleName", "IAM role"),
        (
            "ListInstanceProfiles",
            "InstanceProfileName",
            "instance profile",
        ),
    ] {
        for name in iam_names(moto, action, element)? {
            if name.starts_with(app) {
                left.push(format!("{what} {name}"));
            }
        }
    }
    if !left.is_empty() {
        bail!(
            "`deployer destroy` left {} thing(s) of {app} behind: {}",
            left.len(),
            left.join(", ")
        );
    }
    Ok(format!(
        "nothing left of {app}: {instances} instance(s), all terminated; no Elastic IP, no VPC but the default, no internet gateway, no IAM role or instance profile\n"
    ))
}
