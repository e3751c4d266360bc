//! The resources the deployer owns: how each is wanted, read, found, created, updated
//! and deleted, in dependency order.
//!
//! Every EC2 resource is created with its tags in the same call (`TagSpecifications`),
//! among them `deployer:address`, so one created just before a crash is found again by
//! its tags; IAM resources have fixed names derived from the app and are found by name.
//!
//! # AWS's eventual consistency
//!
//! What AWS documents as eventually consistent is polled or retried, with a bound and an
//! error after it that names the resource, the action and AWS's code; each retry is
//! logged at info level. The bounds are terraform-provider-aws's (`crate::aws`):
//!
//! - **Creates** are confirmed by reading them back (`engine::apply` polls
//!   [`Stack::read`] for up to 2 minutes, EC2's propagation timeout) and recorded with
//!   what was read. The security group is read back inside its own create, before its
//!   ingress is authorized, and rule changes retry `InvalidGroup.NotFound`; the S3
//!   endpoint's create waits until it is `available`.
//! - **Deletes** retry while something still depends on the resource
//!   (`delete_while`): the security group (`DependencyViolation`,
//!   `InvalidGroup.InUse`, 15 min), the subnet (`DependencyViolation`, 20 min), the
//!   internet gateway's detach and delete (`DependencyViolation`, e.g. "mapped public
//!   address", 15 min), the route table (5 min) and the VPC (5 min). A terminated
//!   instance's interfaces and public address hold these for a while on AWS. The
//!   Elastic IP is disassociated (as `DescribeAddresses` shows it) and then released,
//!   again on `InvalidIPAddress.InUse` (3 min); the S3 endpoint's delete waits until it
//!   is gone (10 min).
//!
//! # Reading: each kind once per refresh
//!
//! A refresh (`plan::refresh`, which `plan`, `apply` and `destroy` start with) reads
//! through [`Stack::refreshing`]: a stack with a snapshot (`snapshot.rs`) that lists
//! each EC2 type once, by the stack's tags (`app`, `managed-by`), and remembers every
//! read by kind and id. Each resource's `read` and `find` are written once, for both:
//! `find_tagged!` and `describe_by_id!` answer from the snapshot's listing within a
//! refresh and ask AWS otherwise; a child reads through its parent's listing (the route
//! and the association through the route tables, the gateway attachment through the
//! gateways). An id the listing lacks (its tags changed by hand, or gone) is described
//! by id, as before. Within a refresh every AWS call holds one of
//! [`REFRESH_CONCURRENCY`] permits (`Stack::permit`), and the reads the state calls
//! for are all started at once, so a no-op plan sends one request per EC2 type and one
//! per IAM resource, in one round trip. Outside a refresh ([`Stack::new`], e.g. an
//! apply's create confirmation) every read is its own call.
//!
//! # Layout
//!
//! One file per resource (`vpc.rs`, `subnet.rs`, ... `eip.rs`) holds all of its
//! operations: a unit struct implementing the `Resource` trait below. This file keeps
//! the kinds ([`Kind`]), their order ([`STACK`], then [`NLB_STACK`]) and the dispatch ([`Stack`],
//! [`wanted`]). What several resources share has a small file of its own: `tags.rs`
//! (the managed tags, tag filters), `rules.rs` (security group rules as strings),
//! `policy.rs` (IAM policy documents), `snapshot.rs` (what one refresh has read).
//!
//! # Adding a resource
//!
//! 1. Write `stack/<module>.rs`: a unit struct `pub(super) struct <Variant>;`
//!    implementing `Resource`. Start from the closest existing one: `route_table.rs`
//!    for an EC2 resource found by its tags, `iam_role_policy.rs` for one with a fixed
//!    name, `route.rs` for one whose id is made of its parents'. Its `read` and `find`
//!    go through `find_tagged!` and `describe_by_id!` (an EC2 type new to the stack
//!    also gets its line in `listings!` in `snapshot.rs`); any other call they make
//!    holds `s.permit()`, so that a refresh keeps to its bound.
//! 2. Declare the module (`mod <module>;`) and add its line to `registry!` below, at
//!    its place in the dependency order: `<Variant> => <module>, "aws_<type>", "<name>";`.
//!    That line makes the variant `Kind::<Variant>`, the address `aws_<type>.<name>`,
//!    its place in [`STACK`] and the dispatch to the struct: `plan`, `apply` and
//!    `destroy` then handle it with nothing else to change. A resource only some
//!    configurations want goes in the registry's `[nlb]` block and says so in
//!    `Resource::only_with`.
//!
//! # Resources only some configurations want
//!
//! The balancer side ([`NLB_STACK`]: the second zone's subnet and its association, the
//! second Elastic IP, the two target groups, the balancer, its listener) exists only
//! with `front = "nlb"` (`Resource::only_with`, [`Kind::wanted_in`]). A refresh reads
//! such a kind when the configuration wants it or the state records it; the plan
//! creates it when wanted and absent, deletes it when present and unwanted, and says
//! nothing when absent and unwanted, so an `eip` stack's plans and requests are what
//! they were. The ELBv2 kinds have fixed names and are found by name; within a refresh
//! each ELBv2 type is described once (`elb_listings.rs`), the target groups'
//! attributes once per group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;

use crate::aws::{AwsError, Backoff, Clients, has_code, or_absent, retry_while};
use crate::config::{Config, Front};
use crate::state::Color;
use snapshot::Snapshot;

#[macro_use]
mod macros;

mod eip;
mod elb_listings;
mod iam_role;
mod iam_role_policy;
mod igw_attachment;
mod instance_profile;
mod internet_gateway;
mod listener;
mod load_balancer;
mod policy;
mod route;
mod route_table;
mod route_table_association;
mod rules;
mod security_group;
mod snapshot;
mod subnet;
mod tags;
mod target_group;
mod vpc;
mod vpc_endpoint;
mod want;

pub use crate::aws::is_not_found;
pub use iam_role::role_name;
pub use iam_role_policy::policy_name;
pub use instance_profile::profile_name;
pub use load_balancer::lb_name;
pub use policy::{artifact_read_policy, assume_role_policy, policy_json};
pub use rules::{parse_rule, rule_strings};
pub use security_group::{security_group_name, wanted_ingress};
pub use snapshot::REFRESH_CONCURRENCY;
pub use tags::{ADDRESS_TAG, MANAGED_BY, tag_specification, tags_for};
pub use target_group::target_group_name;
pub use vpc_endpoint::s3_service_name;
pub use want::{Actual, Attr, Want};
use want::{Change, str_value};

/// The registry: one line per resource, in dependency order (creation order; deletion
/// runs it backwards): `Variant => module, "type", "name";` says that the resources
/// of kind `Kind::Variant` have the address `type.name` and are handled by the unit
/// struct `module::Variant`. The first block is the stack every front has ([`STACK`]),
/// the second the balancer side of `front = "nlb"` ([`NLB_STACK`], after it in the
/// dependency order). It defines [`Kind`], both lists, [`EVERY_KIND`] and
/// `Kind::resource`.
macro_rules! registry {
    (
        $($kind:ident => $module:ident, $type_name:literal, $name:literal;)*
        [nlb]
        $($nkind:ident => $nmodule:ident, $ntype_name:literal, $nname:literal;)*
    ) => {
        /// A kind of resource.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind {
            $($kind,)*
            $($nkind,)*
        }

        /// Every resource of the shared stack, in dependency order (creation order;
        /// deletion runs it backwards): what `front = "eip"` (the default) has.
        pub const STACK: [(Kind, &str); [$($name),*].len()] = [$((Kind::$kind, $name),)*];

        /// The balancer side, wanted only with `front = "nlb"`, in dependency order
        /// (after [`STACK`]).
        pub const NLB_STACK: [(Kind, &str); [$($nname),*].len()] =
            [$((Kind::$nkind, $nname),)*];

        impl Kind {
            /// `aws_vpc`.
            pub fn type_name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $type_name,)*
                    $(Kind::$nkind => $ntype_name,)*
                }
            }

            /// What the deployer does with resources of this kind.
            fn resource(self) -> &'static dyn Resource {
                match self {
                    $(Kind::$kind => &$module::$kind,)*
                    $(Kind::$nkind => &$nmodule::$nkind,)*
                }
            }
        }
    };
}

registry! {
    Vpc => vpc, "aws_vpc", "main";
    Subnet => subnet, "aws_subnet", "main";
    InternetGateway => internet_gateway, "aws_internet_gateway", "main";
    IgwAttachment => igw_attachment, "aws_internet_gateway_attachment", "main";
    RouteTable => route_table, "aws_route_table", "main";
    Route => route, "aws_route", "default";
    RouteTableAssociation => route_table_association, "aws_route_table_association", "main";
    VpcEndpoint => vpc_endpoint, "aws_vpc_endpoint", "s3";
    SecurityGroup => security_group, "aws_security_group", "api";
    IamRole => iam_role, "aws_iam_role", "instance";
    IamRolePolicy => iam_role_policy, "aws_iam_role_policy", "artifact_read";
    InstanceProfile => instance_profile, "aws_iam_instance_profile", "instance";
    Eip => eip, "aws_eip", "api";
    [nlb]
    SubnetB => subnet, "aws_subnet", "b";
    RouteTableAssociationB => route_table_association, "aws_route_table_association", "b";
    EipB => eip, "aws_eip", "b";
    TargetGroupBlue => target_group, "aws_lb_target_group", "blue";
    TargetGroupGreen => target_group, "aws_lb_target_group", "green";
    LoadBalancer => load_balancer, "aws_lb", "api";
    Listener => listener, "aws_lb_listener", "api";
}

/// [`STACK`] then [`NLB_STACK`]: every kind, in dependency order (what a refresh
/// walks; the kinds a configuration does not want are skipped unless the state
/// records them).
pub const EVERY_KIND: [(Kind, &str); STACK.len() + NLB_STACK.len()] = {
    let mut out = [(Kind::Vpc, ""); STACK.len() + NLB_STACK.len()];
    let mut i = 0;
    while i < STACK.len() {
        out[i] = STACK[i];
        i += 1;
    }
    let mut j = 0;
    while j < NLB_STACK.len() {
        out[STACK.len() + j] = NLB_STACK[j];
        j += 1;
    }
    out
};

impl Kind {
    /// `aws_vpc.main`.
    pub fn address(self) -> String {
        let name = EVERY_KIND
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("main");
        format!("{}.{name}", self.type_name())
    }

    pub fn from_address(addr: &str) -> Option<Kind> {
        EVERY_KIND
            .iter()
            .map(|(k, _)| *k)
            .find(|k| k.address() == addr)
    }

    /// Whether `cfg` wants this kind at all (the balancer side exists only with
    /// `front = "nlb"`). One that exists and is not wanted is deleted by the plan.
    pub fn wanted_in(self, cfg: &Config) -> bool {
        self.resource().only_with().is_none_or(|f| f == cfg.front)
    }
}

/// What the deployer does with one kind of resource. One implementation per file of
/// this folder; [`Stack`] and [`wanted`] dispatch to them by [`Kind`].
#[async_trait]
trait Resource: Sync {
    /// The front it exists with; `None`: always.
    fn only_with(&self) -> Option<Front> {
        None
    }

    /// Its wanted attributes, given the ids of the parents that will still be there.
    fn wanted(&self, cfg: &Config, known: &Known) -> Vec<Want>;

    /// Its attributes as AWS has them; `None` when `id` no longer exists.
    async fn read(&self, s: &Stack<'_>, id: &str) -> Result<Option<Actual>, AwsError>;

    /// The ids that may be it (by tags, fixed name or parents), given the current ids
    /// of its parents; [`Stack::find`] keeps those that read back.
    async fn find(&self, s: &Stack<'_>, current: &Ids) -> Result<Vec<String>, AwsError>;

    /// Creates it under the parents in `ids`; returns its id.
    async fn create(&self, s: &Stack<'_>, ids: &Ids) -> Result<String, AwsError>;

    /// Brings one updatable attribute of `id` to its wanted value. Tags are updated by
    /// [`Stack::update`] for every kind; by default nothing else is updatable.
    async fn update(&self, _s: &Stack<'_>, _id: &str, change: &Change<'_>) -> Result<(), AwsError> {
        Err(change.not_in_place())
    }

    /// Deletes `id`; one already gone is not an error.
    async fn delete(&self, s: &Stack<'_>, id: &str) -> Result<(), AwsError>;
}

/// The ids of resources, by kind.
pub type Ids = BTreeMap<Kind, String>;

/// The ids of parents that will still be there (`None`: to be created).
pub type Known = BTreeMap<Kind, Option<String>>;

/// The id of `kind`'s parent `parent`, which `create` needs.
fn parent_id(ids: &Ids, kind: Kind, parent: Kind) -> Result<String, AwsError> {
    ids.get(&parent).cloned().ok_or_else(|| {
        AwsError::other(
            kind.address(),
            "Create",
            format!("its parent {} does not exist", parent.address()),
        )
    })
}

/// The id in the answer to `action`, which creates `kind`.
fn created_id(kind: Kind, action: &'static str, id: Option<&str>) -> Result<String, AwsError> {
    id.map(str::to_string)
        .ok_or_else(|| AwsError::other(kind.address(), action, "the answer carries no id".into()))
}

/// Runs `call`, a delete of `kind`, retried while AWS refuses it with one of `codes`
/// (something still depends on it: `DependencyViolation`, `InvalidGroup.InUse`), for at
/// most `bound`; each retry is logged at info level with AWS's code. One already gone
/// is not an error; after the bound the error names the resource, `action` and AWS's
/// code.
async fn delete_while<T, E, F, Fut>(
    kind: Kind,
    action: &'static str,
    codes: &[&str],
    bound: Duration,
    mut call: F,
) -> Result<(), AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: ProvideErrorMetadata + std::error::Error,
{
    let addr = kind.address();
    retry_while(
        Backoff::for_at_most(bound).logged(),
        |e| has_code(e, codes),
        || {
            let answer = call();
            let addr = &addr;
            async move { or_absent(answer.await, addr, action).map(|_| ()) }
        },
    )
    .await
}

/// The wanted attributes of `kind`, given the ids of the parents that will still be
/// there (`None`: to be created).
pub fn wanted(cfg: &Config, kind: Kind, known: &Known) -> Vec<Want> {
    kind.resource().wanted(cfg, known)
}

/// Talks to AWS about the stack's resources.
#[derive(Debug, Clone)]
pub struct Stack<'a> {
    pub cfg: &'a Config,
    pub clients: &'a Clients,
    /// Within a refresh: what it has read so far ([`Stack::refreshing`]).
    snapshot: Option<Arc<Snapshot>>,
    /// The live colour as the state records it (`state.release.eip_holder`): a new
    /// listener forwards to its target group ([`Stack::with_live`]; else blue).
    live: Option<Color>,
}

impl<'a> Stack<'a> {
    pub fn new(cfg: &'a Config, clients: &'a Clients) -> Stack<'a> {
        Stack {
            cfg,
            clients,
            snapshot: None,
            live: None,
        }
    }

    /// This stack, knowing the live colour (`state.release.eip_holder`).
    pub fn with_live(&self, live: Option<Color>) -> Stack<'a> {
        Stack {
            live,
            ..self.clone()
        }
    }

    /// The colour a new listener forwards to: the live one, else blue.
    fn live_color(&self) -> Color {
        self.live.unwrap_or(Color::Blue)
    }

    /// This stack for one refresh: its reads and finds come from one listing per EC2
    /// type (by the stack's tags) and each read is made once, its AWS calls at most
    /// [`REFRESH_CONCURRENCY`] at a time. Drop it when the refresh is done: it never
    /// reads again what it has read (creates are confirmed through [`Stack::new`]'s).
    pub fn refreshing(&self) -> Stack<'a> {
        Stack {
            snapshot: Some(Arc::new(Snapshot::new())),
            ..self.clone()
        }
    }

    fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    /// Within a refresh, a permit for one AWS call (held until dropped); otherwise
    /// nothing to wait for.
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.snapshot {
            Some(snap) => snap.permit().await,
            None => None,
        }
    }

    /// Reads the resource `id` of `kind`; `None` when it no longer exists. Within a
    /// refresh, each id is read once.
    pub async fn read(&self, kind: Kind, id: &str) -> Result<Option<Actual>, AwsError> {
        match self.snapshot() {
            Some(snap) => snap.read(kind, id, || kind.resource().read(self, id)).await,
            None => kind.resource().read(self, id).await,
        }
    }

    /// Finds every existing resource of `kind` by its tags (EC2) or its fixed name (IAM)
    /// or its parents (attachments, routes, associations), given the current ids of
    /// its parents.
    pub async fn find(&self, kind: Kind, current: &Ids) -> Result<Vec<String>, AwsError> {
        let ids = kind.resource().find(self, current).await?;
        // Keep only those that really exist. (Something created a moment before a crash
        // may be missing both from the tag listing and from a read; the create path
        // confirms every resource by reading it back before the apply goes on.)
        let mut found = Vec::new();
        for id in ids {
            if self.read(kind, &id).await?.is_some() {
                found.push(id);
            }
        }
        Ok(found)
    }

    /// Creates `kind` with `ids` of its parents; returns its id. The caller records the
    /// id in the state at once.
    pub async fn create(&self, kind: Kind, ids: &Ids) -> Result<String, AwsError> {
        kind.resource().create(self, ids).await
    }

    /// Brings the updatable attributes of an existing resource to what is wanted.
    pub async fn update(
        &self,
        kind: Kind,
        id: &str,
        ids: &Ids,
        actual: &Actual,
    ) -> Result<(), AwsError> {
        let address = kind.address();
        let known: Known = ids.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
        for want in wanted(self.cfg, kind, &known) {
            if want.force_new {
                continue;
            }
            let Attr::Known(value) = &want.value else {
                continue;
            };
            if actual.get(want.name) == Some(value) {
                continue;
            }
            if want.name == "tags" {
                tags::put(self, kind, id).await?;
                continue;
            }
            let change = Change {
                address: &address,
                attr: want.name,
                value,
                actual,
            };
            kind.resource().update(self, id, &change).await?;
        }
        Ok(())
    }

    /// Deletes resource `id` of `kind`; one already gone is not an error.
    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), AwsError> {
        kind.resource().delete(self, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for (k, _) in EVERY_KIND {
            assert_eq!(Kind::from_address(&k.address()), Some(k));
        }
    }
}
