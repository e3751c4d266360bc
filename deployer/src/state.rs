//! The state: one JSON object in S3 with a serial and a lineage.
//!
//! ```json
//! { "format": 1, "serial": 12, "lineage": "3f9c…", "app": "churn-api",
//!   "resources": { "aws_vpc.main": { "id": "vpc-…", "attributes": { … } }, … },
//!   "release": { "eip_holder": "blue",
//!                "instances": { "blue": { "instance_id": "i-…", "release": "v12", … } } } }
//! ```
//!
//! `resources` holds the shared stack that `plan`/`apply`/`destroy` own, keyed by a
//! Terraform-style address. `release` holds the per-colour instances and which colour
//! holds the Elastic IP; the blue/green release (`deploy`) owns it, `destroy` removes
//! what it names.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::{AwsError, Clients};

pub const FORMAT: u32 = 1;

/// A colour of the blue/green pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    Blue,
    Green,
}

impl Color {
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Blue => "blue",
            Color::Green => "green",
        }
    }
    pub fn other(self) -> Color {
        match self {
            Color::Blue => Color::Green,
            Color::Green => Color::Blue,
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One managed resource as last recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// The AWS id (or name, for IAM).
    pub id: String,
    /// The attributes last read or written (for display and drift).
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

/// One colour's instances: with `front = "eip"` one (`instance_id`), with
/// `front = "nlb"` `instances_per_color` of them (`instance_id` first, then `more`),
/// all running the same release. A state written before `more` existed reads as a
/// colour of one, and a colour of one writes exactly the old shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// The colour's first instance (its only one with `front = "eip"`).
    pub instance_id: String,
    /// The release it runs (the `release` tag).
    pub release: String,
    pub ami: String,
    pub launched_at: chrono::DateTime<chrono::Utc>,
    /// The model version its release serves (from the release manifest).
    #[serde(default)]
    pub model_version: Option<String>,
    /// Set on the colour that lost the Elastic IP: after this it is terminated (the
    /// rollback window). Cleared when a rollback gives it the address back.
    #[serde(default)]
    pub retire_after: Option<chrono::DateTime<chrono::Utc>>,
    /// The colour's other instances (`front = "nlb"`), each written to the state as
    /// soon as `RunInstances` returns it, before anything waits on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<Member>,
}

/// One more instance of a colour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub instance_id: String,
    pub launched_at: chrono::DateTime<chrono::Utc>,
}

impl InstanceRecord {
    /// Every instance of the colour, the first one first.
    pub fn members(&self) -> Vec<Member> {
        let first = Member {
            instance_id: self.instance_id.clone(),
            launched_at: self.launched_at,
        };
        std::iter::once(first).chain(self.more.clone()).collect()
    }

    /// Every instance id of the colour, the first one first.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(self.instance_id.clone())
            .chain(self.more.iter().map(|m| m.instance_id.clone()))
            .collect()
    }

    /// Whether `id` is one of the colour's instances.
    pub fn has(&self, id: &str) -> bool {
        self.instance_id == id || self.more.iter().any(|m| m.instance_id == id)
    }

    /// Drops `id` from the colour; `false` when it was the last one (the colour is
    /// then empty and its record should go).
    pub fn remove(&mut self, id: &str) -> bool {
        if self.instance_id == id {
            if self.more.is_empty() {
                return false;
            }
            let next = self.more.remove(0);
            self.instance_id = next.instance_id;
            self.launched_at = next.launched_at;
        } else {
            self.more.retain(|m| m.instance_id != id);
        }
        true
    }
}

/// The blue/green part of the state (issue 7 drives it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    /// The colour whose instance holds the Elastic IP, if any. With `front = "nlb"`:
    /// the live colour, the one the listener forwards all traffic to.
    #[serde(default)]
    pub eip_holder: Option<Color>,
    #[serde(default)]
    pub instances: BTreeMap<Color, InstanceRecord>,
    /// The last deploy or rollback and how it ended.
    #[serde(default)]
    pub last: Option<ReleaseEvent>,
    /// An Elastic IP move begun and not yet confirmed: written before
    /// `AssociateAddress`, cleared once `DescribeAddresses` confirms where the address
    /// is. Found set, the last run stopped in between; the next one settles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip_moving: Option<EipMove>,
    /// `front = "nlb"`: a change of the listener's weights begun and not yet recorded,
    /// written before `ModifyListener`. Found set, the last run stopped in between;
    /// the next one reads the listener and settles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_moving: Option<WeightShift>,
}

impl ReleaseState {
    /// Forgets the instance `id` (terminated): its colour loses it, a colour left
    /// empty goes, and with no colour left nothing is live.
    pub fn drop_instance(&mut self, id: &str) {
        self.instances.retain(|_, r| !r.has(id) || r.remove(id));
        if self.instances.is_empty() {
            self.eip_holder = None;
        }
    }

    /// The colour `id` belongs to.
    pub fn color_of(&self, id: &str) -> Option<Color> {
        self.instances
            .iter()
            .find(|(_, r)| r.has(id))
            .map(|(c, _)| *c)
    }
}

/// The listener's weights on their way to `to` getting `percent` of new connections
/// (100: the whole shift; less: a canary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightShift {
    pub to: Color,
    pub percent: u8,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The Elastic IP on its way to `to`'s instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipMove {
    pub to: Color,
    pub instance_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// What the last release operation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    pub operation: ReleaseOperation,
    pub release: String,
    pub at: chrono::DateTime<chrono::Utc>,
    pub outcome: EventOutcome,
}

/// The release operations the state remembers (`"deploy"`, `"rollback"` in the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseOperation {
    Deploy,
    Rollback,
}

impl std::fmt::Display for ReleaseOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseOperation::Deploy => "deploy",
            ReleaseOperation::Rollback => "rollback",
        })
    }
}

/// How a release operation ended. In the JSON (and on display) it is the text the
/// state has always held: `ok`, or `failed: <why>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum EventOutcome {
    Ok,
    Failed(String),
}

const FAILED_PREFIX: &str = "failed: ";

impl std::fmt::Display for EventOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventOutcome::Ok => f.write_str("ok"),
            EventOutcome::Failed(why) => write!(f, "{FAILED_PREFIX}{why}"),
        }
    }
}

impl From<EventOutcome> for String {
    fn from(o: EventOutcome) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for EventOutcome {
    type Error = String;
    fn try_from(s: String) -> Result<EventOutcome, String> {
        if s == "ok" {
            return Ok(EventOutcome::Ok);
        }
        match s.strip_prefix(FAILED_PREFIX) {
            Some(why) => Ok(EventOutcome::Failed(why.to_string())),
            None => Err(format!(
                "outcome {s:?} is neither \"ok\" nor \"{FAILED_PREFIX}<why>\""
            )),
        }
    }
}

/// The whole state document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// Incremented on every write.
    pub serial: u64,
    /// Fixed when the state is first written; a plan made against another lineage is
    /// never applied. Empty until then.
    pub lineage: String,
    pub app: String,
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceState>,
    #[serde(default)]
    pub release: ReleaseState,
}

impl State {
    pub fn empty(app: &str) -> State {
        State {
            format: FORMAT,
            serial: 0,
            // Assigned by the first write, so that plans made against "no state yet"
            // still match the state when they are applied.
            lineage: String::new(),
            app: app.to_string(),
            resources: BTreeMap::new(),
            release: ReleaseState::default(),
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("s3://{bucket}/{key} is not a deployer state: {detail}")]
    Corrupt {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("s3://{bucket}/{key} belongs to app {found:?}, not {expected:?}: refusing to touch it")]
    WrongApp {
        bucket: String,
        key: String,
        found: String,
        expected: String,
    },
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
}

impl StateStore {
    pub fn new(clients: &Clients, bucket: &str, key: &str) -> StateStore {
        StateStore {
            s3: clients.s3.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Reads the state; a missing object is an empty state (serial 0, new lineage).
    pub async fn read(&self, app: &str) -> Result<State, StateError> {
        let got = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        let out = match got {
            Ok(o) => o,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(State::empty(app));
                }
                return Err(AwsError::new(self.url(), "GetObject", e).into());
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| AwsError::other(self.url(), "GetObject", e.to_string()))?
            .into_bytes();
        let state: State = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(StateError::Corrupt {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                detail: format!("format {} (this deployer reads {FORMAT})", state.format),
            });
        }
        if state.app != app {
            return Err(StateError::WrongApp {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                found: state.app,
                expected: app.to_string(),
            });
        }
        Ok(state)
    }

    /// Writes the state with its serial incremented (the caller holds the lock).
    pub async fn write(&self, state: &mut State) -> Result<(), StateError> {
        if state.lineage.is_empty() {
            state.lineage = random_id();
        }
        state.serial += 1;
        let body = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            detail: e.to_string(),
        })?;
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await;
        if let Err(e) = put {
            state.serial -= 1;
            return Err(AwsError::new(self.url(), "PutObject", e).into());
        }
        tracing::debug!(serial = state.serial, "state written");
        Ok(())
    }
}

/// 128 random-enough bits as hex, from the clock, the pid and a counter (lineages and
/// lock ids need uniqueness, not secrecy).
pub fn random_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d = h.finalize();
    let hex = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
