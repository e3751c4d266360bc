//! `deployer init`: everything the later commands need before the first `apply`: the
//! state bucket and the artifacts bucket (each versioned, encrypted by default, every
//! public access blocked) and the lock table.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};

use crate::aws::{AwsError, Clients, code_of};
use crate::config::{Config, LockBackend};

/// What `init` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    pub bucket_created: bool,
    /// The artifacts bucket (releases, models) was created; `false` when it was there
    /// already or is the state bucket itself.
    pub artifacts_bucket_created: bool,
    pub table_created: bool,
}

/// Creates (or completes) the state bucket, the artifacts bucket and the lock table.
/// Idempotent: settings are enforced on buckets that already exist.
pub async fn init(clients: &Clients, cfg: &Config) -> Result<InitReport, AwsError> {
    let mut report = InitReport {
        bucket_created: private_bucket(clients, &cfg.region, &cfg.state.bucket).await?,
        ..InitReport::default()
    };
    if cfg.artifacts.bucket != cfg.state.bucket {
        report.artifacts_bucket_created =
            private_bucket(clients, &cfg.region, &cfg.artifacts.bucket).await?;
    }
    if cfg.lock.backend == LockBackend::Dynamodb {
        report.table_created = lock_table(clients, cfg).await?;
    }
    Ok(report)
}

/// Creates `bucket` if it is not there, then enforces: every public access blocked,
/// versioning on, default encryption. Returns whether it was created.
async fn private_bucket(clients: &Clients, region: &str, bucket: &str) -> Result<bool, AwsError> {
    let s3 = &clients.s3;
    let res = format!("s3://{bucket}");
    // HeadBucket first: in us-east-1 CreateBucket answers 200 for a bucket the caller
    // already owns, so its answer cannot tell "created" from "was there".
    let exists = match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => false,
        Err(e) => return Err(AwsError::new(&res, "HeadBucket", e)),
    };
    let mut created = false;
    if !exists {
        let mut create = s3.create_bucket().bucket(bucket);
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => created = true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
            Err(e) => return Err(AwsError::new(&res, "CreateBucket", e)),
        }
    }
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::new(&res, "PutPublicAccessBlock", e))?;
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::new(&res, "PutBucketVersioning", e))?;
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(|e| AwsError::other(&res, "PutBucketEncryption", e.to_string()))?;
    let encryption = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .map_err(|e| AwsError::other(&res, "PutBucketEncryption", e.to_string()))?;
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(encryption)
        .send()
        .await
        .map_err(|e| AwsError::new(&res, "PutBucketEncryption", e))?;
    Ok(created)
}

/// Creates the DynamoDB lock table if it is not there and waits until it is active.
/// Returns whether it was created.
async fn lock_table(clients: &Clients, cfg: &Config) -> Result<bool, AwsError> {
    let table = cfg.lock.table.clone().unwrap_or_default();
    let res = format!("dynamodb table {table}");
    let build = |e: aws_sdk_dynamodb::error::BuildError| {
        AwsError::other(&res, "CreateTable", e.to_string())
    };
    let created = clients
        .dynamodb
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("LockID")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("LockID")
                .key_type(KeyType::Hash)
                .build()
                .map_err(build)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    let table_created = match created {
        Ok(_) => true,
        Err(e) if code_of(&e) == Some("ResourceInUseException") => false,
        Err(e) => return Err(AwsError::new(&res, "CreateTable", e)),
    };
    // A new table is CREATING for a while; conditional puts before ACTIVE fail.
    const ACTIVE_WITHIN: Duration = Duration::from_secs(120);
    let start = std::time::Instant::now();
    loop {
        let d = clients
            .dynamodb
            .describe_table()
            .table_name(&table)
            .send()
            .await
            .map_err(|e| AwsError::new(&res, "DescribeTable", e))?;
        let status = d.table().and_then(|t| t.table_status()).cloned();
        if status == Some(TableStatus::Active) {
            return Ok(table_created);
        }
        if start.elapsed() > ACTIVE_WITHIN {
            return Err(AwsError::other(
                &res,
                "DescribeTable",
                format!(
                    "still {} after {}s",
                    status.as_ref().map_or("without a status", |s| s.as_str()),
                    ACTIVE_WITHIN.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
