//! AWS clients and errors that name the resource, the action and the AWS error code.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{resource}: {action} failed: {code}: {message}")]
pub struct AwsError {
    /// The resource it was about (`aws_vpc.main`, `s3://bucket/key`, ...).
    pub resource: String,
    /// The API action (`CreateVpc`).
    pub action: &'static str,
    /// The AWS error code (`InvalidVpcID.NotFound`), or the kind of client-side failure.
    pub code: String,
    pub message: String,
}

impl AwsError {
    /// Wraps an SDK error.
    pub fn new<E>(resource: impl Into<String>, action: &'static str, err: E) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        let code = err.code().map(str::to_string);
        let message = err.message().map(str::to_string);
        AwsError {
            resource: resource.into(),
            action,
            code: code.unwrap_or_else(|| "ClientError".into()),
            message: message.unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
        }
    }

    /// An error detected by the deployer itself about an AWS answer.
    pub fn other(resource: impl Into<String>, action: &'static str, message: String) -> AwsError {
        AwsError {
            resource: resource.into(),
            action,
            code: "UnexpectedResponse".into(),
            message,
        }
    }
}

/// The error code of an SDK error, if the service sent one.
pub fn code_of<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}

/// The four service clients the deployer uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
}

impl Clients {
    /// Builds clients from an SDK configuration. When an endpoint URL is configured (an
    /// emulator), S3 uses path-style addressing.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Clients {
        let mut s3 = aws_sdk_s3::config::Builder::from(sdk);
        if sdk.endpoint_url().is_some() {
            s3 = s3.force_path_style(true);
        }
        Clients {
            ec2: aws_sdk_ec2::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            iam: aws_sdk_iam::Client::new(sdk),
        }
    }

    /// Loads the standard AWS configuration chain (environment, profile, instance
    /// role; `AWS_ENDPOINT_URL` included) for `region`.
    pub async fn load(region: &str) -> Clients {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .load()
            .await;
        Clients::from_sdk(&sdk)
    }
}
