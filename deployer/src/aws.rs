//! AWS clients and errors that name the resource, the action and the AWS error code.

use std::time::Duration;

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

/// The five service clients the deployer uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub iam: aws_sdk_iam::Client,
    /// Elastic Load Balancing v2: the balancer side of `front = "nlb"`.
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
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
            elb: aws_sdk_elasticloadbalancingv2::Client::new(sdk),
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

/// Whether an error code means "it is not there (any more)".
pub fn is_not_found(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.ends_with(".NotFound")
        || c.ends_with("NotFound")
        || c == "NoSuchEntity"
        || c == "Gateway.NotAttached"
        || c == "InvalidAssociationID.NotFound")
}

/// The answer of a call about `resource`, `None` when AWS says it is not there (any
/// more); any other error becomes an [`AwsError`] naming `resource` and `action`.
pub fn or_absent<T, E>(
    result: Result<T, E>,
    resource: &str,
    action: &'static str,
) -> Result<Option<T>, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e) if is_not_found(code_of(&e)) => Ok(None),
        Err(e) => Err(AwsError::new(resource, action, e)),
    }
}

/// How long and how often [`retry_while`] retries, and how loudly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry; each later wait doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// No attempt starts later than this after the first one.
    pub deadline: Duration,
    /// Each retry logged at info level (the resource, the action and AWS's code), for
    /// the waits an operator should see: a delete held by a dependency, a group not
    /// yet known. Otherwise at debug level.
    pub log_retries: bool,
}

impl Default for Backoff {
    /// 200 ms, 400 ms, ... then 5 s between attempts, for at most a minute: changes
    /// to IAM can take several seconds to be seen by EC2.
    fn default() -> Backoff {
        Backoff {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            log_retries: false,
        }
    }
}

impl Backoff {
    /// The wait after `delay`.
    pub fn next_delay(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_delay)
    }

    /// The same waits, each retry logged at info level (see `log_retries`).
    pub fn logged(self) -> Backoff {
        Backoff {
            log_retries: true,
            ..self
        }
    }
}

/// Runs `op` until it succeeds, or fails with an error `retryable` refuses,
/// or the next attempt would start after `bound.deadline`; then returns the last error.
///
/// For AWS's eventual consistency: a call that names something created a moment ago
/// (a role in a new instance profile, a new security group) can fail with a not-found
/// or invalid-parameter code for a few seconds. Only the codes that mean "not yet"
/// should be retried: `retryable` sees the whole error (some "not yet" answers share
/// their code with real mistakes and differ only in the message). Each retry is logged
/// at debug level, or at info level with [`Backoff::logged`]; after the bound, the
/// error says how long it was retried. For example, adding a role just created to an
/// instance profile:
/// `retry_while(Backoff::default(), |e| e.code == "NoSuchEntity", || add_role(..))`,
/// where `add_role` returns the call's future with its error mapped to [`AwsError`].
pub async fn retry_while<T, F, Fut>(
    bound: Backoff,
    retryable: impl Fn(&AwsError) -> bool,
    mut op: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = bound.first_delay;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut err = match op().await {
            Ok(out) => return Ok(out),
            Err(err) => err,
        };
        if !retryable(&err) {
            return Err(err);
        }
        if start.elapsed() + delay > bound.deadline {
            err.message = format!(
                "{} (still refused after {attempt} attempts in {:.0?}, the bound is {:?})",
                err.message,
                start.elapsed(),
                bound.deadline
            );
            return Err(err);
        }
        if bound.log_retries {
            tracing::info!(
                "{}: {} refused with {} ({}), retrying in {delay:.1?} (attempt {attempt})",
                err.resource,
                err.action,
                err.code,
                err.message
            );
        } else {
            tracing::debug!(
                resource = %err.resource,
                action = err.action,
                code = %err.code,
                attempt,
                ?delay,
                "not yet consistent, retrying"
            );
        }
        tokio::time::sleep(delay).await;
        delay = bound.next_delay(delay);
    }
}

/// How long EC2 may take to show what was just created (terraform-provider-aws's
/// `ec2PropagationTimeout`): a create is confirmed by reading it back within this.
pub const EC2_PROPAGATION: Duration = Duration::from_secs(2 * 60);

/// How long a delete that AWS refuses because something still depends on the resource
/// (`DependencyViolation`, `InvalidGroup.InUse`, `InvalidIPAddress.InUse`) is retried,
/// per resource, as terraform-provider-aws's delete timeouts: a terminated instance's
/// interfaces, or a public address it mapped, can hold a subnet, a security group or an
/// internet gateway for minutes on AWS.
pub mod delete_bound {
    use std::time::Duration;

    /// `aws_security_group`: 15 minutes.
    pub const SECURITY_GROUP: Duration = Duration::from_secs(15 * 60);
    /// `aws_subnet`: 20 minutes.
    pub const SUBNET: Duration = Duration::from_secs(20 * 60);
    /// `aws_internet_gateway` (detach and delete): 15 minutes.
    pub const INTERNET_GATEWAY: Duration = Duration::from_secs(15 * 60);
    /// `aws_vpc`: 5 minutes.
    pub const VPC: Duration = Duration::from_secs(5 * 60);
    /// `aws_eip`: 3 minutes.
    pub const EIP: Duration = Duration::from_secs(3 * 60);
    /// `aws_route_table`: 5 minutes (a gateway endpoint's routes go with the endpoint).
    pub const ROUTE_TABLE: Duration = Duration::from_secs(5 * 60);
    /// `aws_vpc_endpoint`: 10 minutes.
    pub const VPC_ENDPOINT: Duration = Duration::from_secs(10 * 60);
    /// `aws_lb`: 10 minutes for the delete, then up to 5 more until the balancer's
    /// interfaces ("ELB net/<name>/<id>") are gone.
    pub const LOAD_BALANCER: Duration = Duration::from_secs(10 * 60);
    pub const LOAD_BALANCER_INTERFACES: Duration = Duration::from_secs(5 * 60);
    /// `aws_lb_target_group`: `ResourceInUse` (still used by a listener being deleted)
    /// retried for 2 minutes.
    pub const TARGET_GROUP: Duration = Duration::from_secs(2 * 60);
}

/// How long a new balancer may stay `provisioning` before it is `active`
/// (terraform-provider-aws's `aws_lb` create timeout).
pub const LOAD_BALANCER_ACTIVE: Duration = Duration::from_secs(10 * 60);

impl Backoff {
    /// For a call naming an instance that EC2 (or ELB) does not show yet moments after
    /// `RunInstances`: 500 ms doubling up to 5 s, for at most [`EC2_PROPAGATION`].
    pub const INSTANCE_VISIBLE: Backoff = Backoff {
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(5),
        deadline: EC2_PROPAGATION,
        log_retries: false,
    };

    /// The default waits (200 ms doubling up to 5 s) for at most `deadline`.
    pub fn for_at_most(deadline: Duration) -> Backoff {
        Backoff {
            deadline,
            ..Backoff::default()
        }
    }
}

/// How long a call naming an IAM role or instance profile created a moment ago is
/// retried while IAM or EC2 does not see it yet: terraform-provider-aws's
/// `propagationTimeout` for IAM (changes usually show within seconds).
pub const IAM_PROPAGATION: Duration = Duration::from_secs(2 * 60);

/// Whether `err` is IAM's "no such role" about a role that may just not be visible yet.
pub fn role_not_yet_visible(err: &AwsError) -> bool {
    err.code == "NoSuchEntity"
}

/// Whether `err` carries one of `codes`.
pub fn has_code(err: &AwsError, codes: &[&str]) -> bool {
    codes.contains(&err.code.as_str())
}

/// Polls `op` until it returns `Some`, for at most `bound.deadline`; then fails with
/// an error naming `resource` and `action` (code `NotYetConsistent`, the message saying
/// it was still not `awaited` and for how long): for what AWS shows only after a
/// moment, such as a resource just created (`awaited`: "visible") or being deleted
/// ("gone"). Each new read is logged at info level.
pub async fn poll_until_some<T, F, Fut>(
    bound: Backoff,
    resource: &str,
    action: &'static str,
    awaited: &str,
    mut op: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, AwsError>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = bound.first_delay;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if let Some(out) = op().await? {
            return Ok(out);
        }
        if start.elapsed() + delay > bound.deadline {
            return Err(AwsError {
                resource: resource.to_string(),
                action,
                code: "NotYetConsistent".into(),
                message: format!(
                    "still not {awaited} after {attempt} reads in {:.0?} (the bound is {:?})",
                    start.elapsed(),
                    bound.deadline
                ),
            });
        }
        tracing::info!("{resource}: not {awaited} yet ({action}), reading again in {delay:.1?}");
        tokio::time::sleep(delay).await;
        delay = bound.next_delay(delay);
    }
}

#[cfg(test)]
mod tests;
