//! Blue/green releases: `deploy`, `rollback`, `status`, and retiring the old colour
//! after the rollback window.
//!
//! deploy: idle colour ← new instance → running → health gate (readiness + version
//! report the expected release and model, within a deadline) → guarded Elastic IP move
//! (DescribeAddresses must show it where the state says; AssociateAddress with
//! AllowReassociation=true) → verify through the fixed address → keep the old colour
//! until `retire_after`, then terminate it. Any failure before the move terminates the
//! new instance and leaves the old one holding the address.
//!
//! * this file — the types, the options, the errors, the cutover bookkeeping and the
//!   verification through the front both share;
//! * [`eip`](self::eip) — the Elastic IP steps deploy and rollback share (holder,
//!   guard, move, settling an interrupted move);
//! * [`deploy`](self::deploy) — `deploy` step by step, `retire`, the plan's cutover preview;
//! * [`model`](self::model) — `deploy --model`: the model-only release, under the lock;
//! * [`rollback`](self::rollback) — `rollback`;
//! * [`status`](self::status) — `status` and its rendering;
//! * [`userdata`](self::userdata) — the boot script and the values that go into it.

mod balancer;
pub mod canary;
mod deploy;
mod eip;
mod model;
mod nlb;
mod preview;
mod retire;
mod rollback;
mod status;
mod userdata;

use std::net::IpAddr;
use std::time::Duration;

use aws_sdk_ec2::types::InstanceStateName;

use crate::aws::{AwsError, Clients};
use crate::config::Front;
use crate::health::{self, Endpoints, ProbeError};
use crate::history::History;
use crate::publish::PublishError;
use crate::stack::Kind;
use crate::state::{
    Color, EventOutcome, InstanceRecord, ReleaseEvent, ReleaseOperation, ReleaseState, State,
};
use crate::{Deployer, Error};

pub use balancer::{Balancer, TargetHealth, describe_weights, share};
pub use eip::eip_holder;
pub use model::DeployTarget;
pub use preview::{cutover_preview, cutover_preview_nlb};
pub use status::{ColorStatus, Status};
pub use userdata::{BOOT_TEMPLATE, BootValues, UNIT_TEMPLATE, render_user_data};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{0} is not in the state: run `deployer apply` first")]
    NoStack(String),
    #[error(
        "the Elastic IP {allocation} is attached to {actual}, but the state says {expected}: it was moved outside the deployer; refusing to move it"
    )]
    EipMoved {
        allocation: String,
        expected: String,
        actual: String,
    },
    #[error("release {release} abandoned on {color} ({instance}): {why}; {kept}")]
    Abandoned {
        release: String,
        color: Color,
        instance: String,
        why: String,
        kept: String,
    },
    #[error(
        "release {release} took the Elastic IP but does not answer through the fixed address: {why}; run `deployer rollback`"
    )]
    NotVerified { release: String, why: ProbeError },
    #[error(
        "release {release} took the Elastic IP but does not answer through the fixed address: the Elastic IP has no public address; run `deployer rollback`"
    )]
    NoPublicAddress { release: String },
    #[error("release {release} cannot run on this stack: {why}")]
    WontRun { release: String, why: String },
    #[error(
        "no colour holds the Elastic IP, so there is no running server to serve model {model} with: deploy a release first (or name one with --release)"
    )]
    NothingRunning { model: String },
    #[error("nothing to roll back to: {0}")]
    NoRollback(String),
    #[error("instance {id} did not reach running: {why}")]
    NotRunning { id: String, why: String },
    #[error(
        "refusing to terminate {instance}: DescribeAddresses shows it holding the Elastic IP {allocation}, which the state does not expect; run `deployer status` and move the address first"
    )]
    HoldsEip {
        instance: String,
        allocation: String,
    },
    #[error("{what} {value:?} cannot go into user data")]
    BadValue { what: &'static str, value: String },
    #[error(
        "the listener aws_lb_listener.api forwards {actual}, but the state says all to {expected}: its weights were changed outside the deployer; refusing to shift them"
    )]
    WeightsMoved { expected: Color, actual: String },
    #[error(
        "refusing to terminate the {color} colour: the listener aws_lb_listener.api still sends it traffic ({weights})"
    )]
    ColorLive { color: Color, weights: String },
    #[error(
        "canary rolled back: {errors} of {requests} requests on the {percent}% canary answered 5xx during the {soak_seconds}s soak ({rate:.1}%, above the {max:.1}% allowed)"
    )]
    CanaryRolledBack {
        percent: u8,
        errors: u64,
        requests: u64,
        soak_seconds: u64,
        rate: f64,
        max: f64,
    },
    #[error("--canary needs front = \"nlb\" in deploy.toml: one Elastic IP cannot split traffic")]
    CanaryNeedsNlb,
    #[error(
        "the {color} target group did not report every instance healthy within {deadline}s: {states}"
    )]
    TargetsUnhealthy {
        color: Color,
        deadline: u64,
        states: String,
    },
}

/// How a release operation runs.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub endpoints: Endpoints,
    /// How long the new colour has to become healthy (also: through the fixed address).
    pub health_deadline: Duration,
    pub probe_interval: Duration,
    /// How long the old colour stays alive for a rollback.
    pub rollback_window: Duration,
    /// Wait out the window and terminate the old colour before returning.
    pub wait_window: bool,
    pub lock_timeout: Duration,
    /// How long presigned download URLs in user data stay valid.
    pub url_lifetime: Duration,
    /// `--canary P%` (`front = "nlb"`): the share of new connections the new colour
    /// gets for `[canary] soak_seconds` before all of them; `None`: all at once.
    pub canary: Option<u8>,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            endpoints: Endpoints::default(),
            health_deadline: Duration::from_secs(300),
            probe_interval: Duration::from_secs(2),
            rollback_window: Duration::from_secs(600),
            wait_window: true,
            lock_timeout: Duration::ZERO,
            url_lifetime: Duration::from_secs(900),
            canary: None,
        }
    }
}

/// What a deploy or rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub release: String,
    pub color: Color,
    pub instance_id: String,
    /// The colour that held the address before, kept for the window.
    pub previous: Option<(Color, String)>,
    /// Terminated after the window (when waited for).
    pub retired: Vec<String>,
}

/// One instance as DescribeInstances shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Its state (`InstanceStateName::Unknown("")` if EC2 reported none).
    pub state: InstanceStateName,
    pub public_ip: Option<IpAddr>,
    /// Why it is in that state, as EC2 says (`Client.InstanceInitiatedShutdown: ...`).
    pub reason: Option<String>,
}

impl Described {
    pub fn is_running(&self) -> bool {
        self.state == InstanceStateName::Running
    }
}

/// The front's Elastic IPs in the state: `aws_eip.api` (the one with `front = "eip"`),
/// then the balancer's second one in zone b.
const ADDRESSES: &[&str] = &["aws_eip.api", "aws_eip.b"];

fn resource_id(state: &State, kind: Kind) -> Result<String, ReleaseError> {
    let addr = kind.address();
    state
        .resources
        .get(&addr)
        .map(|r| r.id.clone())
        .ok_or(ReleaseError::NoStack(addr))
}

/// State and public IP of one instance (`None`: gone).
pub async fn describe(clients: &Clients, id: &str) -> Result<Option<Described>, AwsError> {
    let res = clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await;
    let out = match res {
        Ok(o) => o,
        Err(e) if crate::stack::is_not_found(crate::aws::code_of(&e)) => return Ok(None),
        Err(e) => {
            return Err(AwsError::new(
                format!("aws_instance ({id})"),
                "DescribeInstances",
                e,
            ));
        }
    };
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .map(|i| Described {
            state: i
                .state()
                .and_then(|s| s.name())
                .cloned()
                .unwrap_or_else(|| InstanceStateName::from("")),
            public_ip: i.public_ip_address().and_then(|p| p.parse().ok()),
            reason: i.state_reason().map(|r| {
                format!(
                    "{}: {}",
                    r.code().unwrap_or("no code"),
                    r.message().unwrap_or("no message")
                )
            }),
        }))
}

/// The audit log's outcome text for a failure.
fn failed(why: &str) -> String {
    format!("failed: {why}")
}

/// The error of a release that took the traffic and does not answer through the
/// front (the Elastic IP or the balancer).
fn not_verified(release: &str) -> impl FnOnce(ProbeError) -> ReleaseError + '_ {
    move |why| ReleaseError::NotVerified {
        release: release.into(),
        why,
    }
}

/// A cutover's bookkeeping, once the traffic is on `to` (the Elastic IP moved to it, or
/// every new connection shifted to it) and its intent cleared by the caller: `to` is
/// live and not retired, the colour live before (`from`) is kept for `window` (the way
/// back), and the `operation` of `release` is the last event. Returns `from` and its
/// instances, if it had any. The caller writes the state.
fn record_cutover(
    state: &mut ReleaseState,
    operation: ReleaseOperation,
    release: &str,
    from: Option<Color>,
    to: Color,
    window: Duration,
) -> Option<(Color, InstanceRecord)> {
    let now = chrono::Utc::now();
    state.eip_holder = Some(to);
    if let Some(r) = state.instances.get_mut(&to) {
        r.retire_after = None;
    }
    let previous = from.and_then(|c| state.instances.get_mut(&c).map(|r| (c, r)));
    let previous = previous.map(|(c, r)| {
        r.retire_after = Some(now + window);
        (c, r.clone())
    });
    state.last = Some(ReleaseEvent {
        operation,
        release: release.into(),
        at: now,
        outcome: EventOutcome::Ok,
    });
    previous
}

impl Deployer {
    pub fn history(&self) -> History {
        History::new(&self.clients, &self.cfg.state.bucket, &self.cfg.state.key)
    }

    /// After a cutover: the service answers with `release` (and `model`) through the
    /// front: the fixed endpoint if one is given (locally), else each of the front's
    /// Elastic IPs on the API port, by its own address (in production, and in the local
    /// cloud, an address map given, whose Elastic IPs are loopback addresses that carry
    /// traffic): `aws_eip.api`, and with `front = "nlb"` the balancer's `aws_eip.b`.
    async fn verify_front(
        &self,
        state: &State,
        release: &str,
        model: Option<&str>,
        opts: &ReleaseOptions,
    ) -> Result<(), Error> {
        let (front, addresses) = match self.cfg.front {
            Front::Eip => ("the Elastic IP", &ADDRESSES[..1]),
            Front::Nlb => ("the balancer", ADDRESSES),
        };
        let mut targets = Vec::new();
        if let Some(f) = opts.endpoints.fixed {
            targets.push(f);
        } else if opts.endpoints.reaches_instances() {
            for addr in addresses {
                let Some(r) = state.resources.get(*addr) else {
                    continue;
                };
                targets.push(self.eip_target(&r.id, release, opts).await?);
            }
        } else {
            tracing::warn!(
                "no fixed endpoint given (--fixed-endpoint): not verifying through {front}"
            );
        }
        for t in targets {
            health::gate(t, release, model, opts.health_deadline, opts.probe_interval)
                .await
                .map_err(not_verified(release))?;
            tracing::info!(target = %t, "verified through {front}");
        }
        Ok(())
    }
}
