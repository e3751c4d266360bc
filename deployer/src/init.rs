//! `deployer init`: the state bucket (versioned, encrypted, private) and the lock table.

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
    pub table_created: bool,
}

/// Creates (or completes) the state bucket and the lock table. Idempotent.
pub async fn init(clients: &Clients, cfg: &Config) -> Result<InitReport, AwsError> {
    let s3 = &clients.s3;
    let bucket = &cfg.state.bucket;
    let res = format!("s3://{bucket}");
    let mut report = InitReport::default();

    let mut create = s3.create_bucket().bucket(bucket);
    if cfg.region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(cfg.region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => report.bucket_created = true,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(AwsError::new(&res, "CreateBucket", e)),
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

    if cfg.lock.backend == LockBackend::Dynamodb {
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
        match created {
            Ok(_) => report.table_created = true,
            Err(e) if code_of(&e) == Some("ResourceInUseException") => {}
            Err(e) => return Err(AwsError::new(&res, "CreateTable", e)),
        }
        for _ in 0..120 {
            let d = clients
                .dynamodb
                .describe_table()
                .table_name(&table)
                .send()
                .await
                .map_err(|e| AwsError::new(&res, "DescribeTable", e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(report)
}
