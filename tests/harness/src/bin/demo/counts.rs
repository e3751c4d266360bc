//! What the demo counts before and after its second pass: table rows, model versions,
//! releases, running instances and the servers the local cloud booted on them, and how
//! the two compare.

use std::collections::BTreeMap;

use anyhow::Context as _;

/// What a re-run must leave as it found it (or move by exactly one).
#[derive(Debug, Clone)]
pub struct Snapshot {
    tables: BTreeMap<&'static str, u64>,
    model_versions: usize,
    releases: usize,
    running_instances: usize,
    /// Instances whose user data booted a server that serves now (the local cloud).
    serving_instances: usize,
}

pub const COUNTED_TABLES: [&str; 6] = [
    "customer_activity",
    "customer_profiles",
    "labels",
    "sales",
    "monthly_sales",
    "feature_store",
];

/// Every key under `prefix` in `bucket`.
pub async fn keys(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
    }
    Ok(out)
}

pub async fn get_text(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<String> {
    let o = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("reading s3://{bucket}/{key}"))?;
    let b = o.body.collect().await?.into_bytes();
    Ok(String::from_utf8_lossy(&b).into_owned())
}

pub async fn snapshot(
    pg: &harness::PgCluster,
    s3: &aws_sdk_s3::Client,
    ec2: &aws_sdk_ec2::Client,
    artifacts_bucket: &str,
    cloud: &harness::cloud::LocalCloud,
) -> anyhow::Result<Snapshot> {
    let mut tables = BTreeMap::new();
    for t in COUNTED_TABLES {
        let n = pg.psql("ml", &format!("SELECT count(*) FROM {t}"))?;
        tables.insert(
            t,
            n.trim()
                .parse()
                .with_context(|| format!("count of {t}: {n:?}"))?,
        );
    }
    let manifests = |keys: Vec<String>| {
        keys.iter()
            .filter(|k| k.ends_with("/manifest.json"))
            .count()
    };
    let model_versions = manifests(keys(s3, artifacts_bucket, "models/").await?);
    let releases = manifests(keys(s3, artifacts_bucket, "releases/").await?);
    let described = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        )
        .send()
        .await
        .context("DescribeInstances")?;
    let running_instances = described
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    Ok(Snapshot {
        tables,
        model_versions,
        releases,
        running_instances,
        serving_instances: crate::instances::serving(cloud),
    })
}

/// Both snapshots side by side, and what is wrong with the second, if anything.
pub fn compare(before: &Snapshot, after: &Snapshot) -> (String, Vec<String>) {
    let mut table = format!(
        "  {:<28} {:>10} {:>10}  {}\n",
        "", "first run", "re-run", "expected"
    );
    let mut wrong = Vec::new();
    let mut row = |name: &str, a: u64, b: u64, want: u64, how: &str| {
        let mark = if b == want { "ok" } else { "WRONG" };
        table.push_str(&format!("  {name:<28} {a:>10} {b:>10}  {how} ({mark})\n"));
        if b != want {
            wrong.push(format!("{name} {a} -> {b}, expected {want}"));
        }
    };
    for (t, a) in &before.tables {
        let b = after.tables.get(t).copied().unwrap_or(0);
        row(&format!("rows in {t}"), *a, b, *a, "equal");
    }
    let (a, b) = (before.model_versions as u64, after.model_versions as u64);
    row("model versions (models/)", a, b, a + 1, "+1");
    let (a, b) = (before.releases as u64, after.releases as u64);
    row("releases (releases/)", a, b, a + 1, "+1");
    let (a, b) = (
        before.running_instances as u64,
        after.running_instances as u64,
    );
    row("EC2 instances running", a, b, a, "equal");
    let (a, b) = (
        before.serving_instances as u64,
        after.serving_instances as u64,
    );
    row("instances booted and serving", a, b, a, "equal");
    (table, wrong)
}
