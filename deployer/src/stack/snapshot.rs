//! What one refresh has read from AWS: one listing per EC2 type, filtered by the
//! stack's tags (`app`, `managed-by`), and every resource read, remembered by kind and
//! id. [`Stack::refreshing`] gives a stack that reads through one; `plan::refresh`
//! makes one per refresh and drops it after, so nothing read in one refresh is reused
//! by the next or by `engine::apply` (a create is still confirmed by real reads).
//!
//! Every AWS call made through it holds one of [`REFRESH_CONCURRENCY`] permits, so
//! reads that do not depend on each other run at the same time without tripping AWS's
//! request throttling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::{
    Address, InternetGateway, RouteTable, SecurityGroup, Subnet, Vpc, VpcEndpoint,
};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

use super::{Actual, Kind, Stack, tags};
use crate::aws::AwsError;

/// How many AWS calls one refresh makes at once: Terraform's default parallelism. EC2
/// throttles describe calls per account and region with a token bucket (bursts of 100,
/// refilled at 20 a second) and a refresh spends 7 of them; the SDK retries a
/// throttled call with backoff. Enough for the ten calls of today's refresh to go in
/// one round trip.
pub const REFRESH_CONCURRENCY: usize = 10;

/// One listing per EC2 type: `field: Type => describe_call, "Action"`. Each field is a
/// method of [`Snapshot`] returning the stack's resources of that type, listed once.
macro_rules! listings {
    ($($list:ident: $ty:ty => $describe:ident, $action:literal;)*) => {
        /// What one refresh has read (see the module's documentation).
        #[derive(Debug)]
        pub(crate) struct Snapshot {
            $($list: OnceCell<Vec<$ty>>,)*
            /// Reads by kind and id (`None`: it does not exist).
            reads: Mutex<HashMap<(Kind, String), Arc<OnceCell<Option<Actual>>>>>,
            permits: Semaphore,
            /// The balancer side's listings (`front = "nlb"`).
            pub(super) elb: super::elb_listings::ElbListings,
        }

        impl Snapshot {
            pub(crate) fn new() -> Snapshot {
                Snapshot {
                    $($list: OnceCell::new(),)*
                    reads: Mutex::new(HashMap::new()),
                    permits: Semaphore::new(REFRESH_CONCURRENCY),
                    elb: Default::default(),
                }
            }

            $(
                #[doc = concat!("The stack's resources in `", $action, "` (one call per refresh, by the stack's tags); errors name `kind`, the resource that asked.")]
                pub(crate) async fn $list(&self, s: &Stack<'_>, kind: Kind) -> Result<&[$ty], AwsError> {
                    let listed = self
                        .$list
                        .get_or_try_init(|| async {
                            let _permit = self.permit().await;
                            let out = s
                                .clients
                                .ec2
                                .$describe()
                                .set_filters(Some(tags::stack_filters(s.cfg)))
                                .send()
                                .await
                                .map_err(|e| AwsError::new(kind.address(), $action, e))?;
                            Ok::<_, AwsError>(out.$list.unwrap_or_default())
                        })
                        .await?;
                    Ok(listed.as_slice())
                }
            )*
        }
    };
}

listings! {
    vpcs: Vpc => describe_vpcs, "DescribeVpcs";
    subnets: Subnet => describe_subnets, "DescribeSubnets";
    internet_gateways: InternetGateway => describe_internet_gateways, "DescribeInternetGateways";
    route_tables: RouteTable => describe_route_tables, "DescribeRouteTables";
    vpc_endpoints: VpcEndpoint => describe_vpc_endpoints, "DescribeVpcEndpoints";
    security_groups: SecurityGroup => describe_security_groups, "DescribeSecurityGroups";
    addresses: Address => describe_addresses, "DescribeAddresses";
}

impl Snapshot {
    /// A permit for one AWS call.
    pub(crate) async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        // The semaphore is never closed.
        self.permits.acquire().await.ok()
    }

    /// The read of `id` of `kind`: made by `read` the first time, remembered after
    /// (concurrent askers wait for the one read in flight).
    pub(crate) async fn read<F, Fut>(
        &self,
        kind: Kind,
        id: &str,
        read: F,
    ) -> Result<Option<Actual>, AwsError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Actual>, AwsError>>,
    {
        let cell = {
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            reads.entry((kind, id.to_string())).or_default().clone()
        };
        Ok(cell.get_or_try_init(read).await?.clone())
    }
}
