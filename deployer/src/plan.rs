//! Refresh (read what really exists), diff against the wanted stack, render the plan
//! (`plan/render.rs`).

mod notes;
mod render;

pub use render::{counts, render};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::AwsError;
use crate::config::Config;
use crate::instances;
use crate::stack::{Actual, Attr, EVERY_KIND, Ids, Kind, Stack, wanted};
use crate::state::State;

pub const PLAN_FORMAT: u32 = 1;

/// What a plan does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing (it may still be recorded in the state, see `Change::adopted`).
    NoOp,
    Create,
    Update,
    Replace,
    Delete,
}

/// `apply` converges the stack; `destroy` removes everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Apply,
    Destroy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    pub name: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The new value is known only once a parent is created.
    #[serde(default)]
    pub after_unknown: bool,
    #[serde(default)]
    pub forces_replacement: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// `aws_vpc.main`, `aws_instance.blue`.
    pub address: String,
    pub resource_type: String,
    pub action: Action,
    /// The existing resource's id (none for a create).
    pub id: Option<String>,
    /// Found by its tags or name, not (or not correctly) in the state: the state will
    /// record it.
    #[serde(default)]
    pub adopted: bool,
    /// Why, when it is not obvious (a duplicate found by tags, drift, ...).
    #[serde(default)]
    pub reason: Option<String>,
    pub attributes: Vec<AttrChange>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// Existing resources to record in the state.
    pub adopt: usize,
}

/// A plan, as printed, as `--json`, and as saved with `--out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub operation: Operation,
    pub app: String,
    /// The state it was made against; `apply FILE` refuses it if the state moved.
    pub state_serial: u64,
    pub state_lineage: String,
    /// SHA-256 of the configuration it was made with.
    pub config_digest: String,
    pub created: DateTime<Utc>,
    pub changes: Vec<Change>,
    pub summary: Summary,
    /// What the operator should know beyond the changes (a front switch: which fixed
    /// address stays, which is new).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        let s = self.summary;
        s.add + s.change + s.destroy + s.adopt > 0
    }

    /// The parts that must not differ between a saved plan and a fresh one.
    pub fn same_changes(&self, other: &Plan) -> bool {
        self.operation == other.operation && self.changes == other.changes
    }
}

/// One resource as found in AWS.
#[derive(Debug, Clone)]
pub struct Observed {
    pub kind: Kind,
    pub id: Option<String>,
    pub actual: Option<Actual>,
    /// Found by tags/name rather than through the state.
    pub adopted: bool,
    /// More of the same found by tags (a leak from an older crash or a manual copy).
    pub duplicates: Vec<String>,
}

/// Reads every resource of the stack: through the state's ids, else by tags or names.
///
/// One listing per EC2 type (by the stack's tags) and one read per IAM resource, at
/// most [`crate::stack::REFRESH_CONCURRENCY`] calls at a time ([`Stack::refreshing`]):
/// first every read the state's ids call for, all at once (`prefetch`); then each
/// resource in dependency order, as [`refresh_per_resource`] does, answered from what
/// was read. A resource the listing lacks (its tags changed by hand, or gone) is read
/// by its id, as before.
pub async fn refresh(stack: &Stack<'_>, state: &State) -> Result<Vec<Observed>, AwsError> {
    let stack = stack.refreshing();
    prefetch(&stack, state).await?;
    refresh_per_resource(&stack, state).await
}

/// Reads, all at once, what the refresh of `state` will ask for if nothing changed
/// since it was written: each resource by its id in the state, and what finding it
/// (by tags, name or parents, given the state's ids) returns. On a stack from
/// [`Stack::refreshing`], whose calls wait for a permit and whose reads are
/// remembered.
async fn prefetch(stack: &Stack<'_>, state: &State) -> Result<(), AwsError> {
    let ids: Ids = EVERY_KIND
        .iter()
        .filter(|(kind, _)| looked_at(stack.cfg, state, *kind))
        .filter_map(|(kind, _)| {
            let rs = state.resources.get(&kind.address())?;
            Some((*kind, rs.id.clone()))
        })
        .collect();
    let ids = &ids;
    let reads = EVERY_KIND
        .iter()
        .filter(|(kind, _)| looked_at(stack.cfg, state, *kind))
        .map(|(kind, _)| async move {
            if let Some(id) = ids.get(kind) {
                stack.read(*kind, id).await?;
            }
            stack.find(*kind, ids).await?;
            Ok::<(), AwsError>(())
        });
    // All at once on this task (the stack's permits bound the calls in flight); the
    // first error ends the prefetch.
    futures_util::future::try_join_all(reads).await.map(|_| ())
}

/// The refresh, resource after resource in dependency order: through the state's id,
/// else by tags or names; each read and find asks `stack`. On a plain [`Stack::new`]
/// every one of them is its own call, one after the other (about 35 for the whole
/// stack): the refresh as it was before [`refresh`] read each kind once, kept as the
/// benchmark's baseline and as what [`refresh`] must agree with.
pub async fn refresh_per_resource(
    stack: &Stack<'_>,
    state: &State,
) -> Result<Vec<Observed>, AwsError> {
    let mut current = Ids::new();
    let mut out = Vec::new();
    for (kind, _) in EVERY_KIND {
        if !looked_at(stack.cfg, state, kind) {
            continue;
        }
        let addr = kind.address();
        let mut id = None;
        let mut actual = None;
        if let Some(rs) = state.resources.get(&addr)
            && let Some(a) = stack.read(kind, &rs.id).await?
        {
            id = Some(rs.id.clone());
            actual = Some(a);
        }
        let found = stack.find(kind, &current).await?;
        let mut adopted = false;
        if id.is_none()
            && let Some(first) = found.first()
        {
            actual = stack.read(kind, first).await?;
            if actual.is_some() {
                id = Some(first.clone());
                adopted = true;
                tracing::info!(address = %addr, id = %first, "found by its tags, not in the state");
            }
        }
        let duplicates: Vec<String> = found
            .into_iter()
            .filter(|f| Some(f) != id.as_ref())
            .collect();
        if let Some(i) = &id {
            current.insert(kind, i.clone());
        }
        out.push(Observed {
            kind,
            id,
            actual,
            adopted,
            duplicates,
        });
    }
    Ok(out)
}

/// Whether a refresh reads `kind`: the configuration wants it, or the state records it
/// (the balancer side after a switch back to `front = "eip"`: found, it is deleted).
/// An `eip` stack never asks about the balancer's kinds: its refresh is what it was.
fn looked_at(cfg: &Config, state: &State, kind: Kind) -> bool {
    kind.wanted_in(cfg) || state.resources.contains_key(&kind.address())
}

/// SHA-256 of the configuration (a saved plan is only applied with the same one).
pub fn config_digest(cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(cfg).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn new_plan(cfg: &Config, state: &State, operation: Operation, changes: Vec<Change>) -> Plan {
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::NoOp => {}
            Action::Create => summary.add += 1,
            Action::Update => summary.change += 1,
            Action::Replace => {
                summary.add += 1;
                summary.destroy += 1;
            }
            Action::Delete => summary.destroy += 1,
        }
        if c.adopted && c.action != Action::Delete {
            summary.adopt += 1;
        }
    }
    Plan {
        format: PLAN_FORMAT,
        operation,
        app: cfg.app.clone(),
        state_serial: state.serial,
        state_lineage: state.lineage.clone(),
        config_digest: config_digest(cfg),
        created: Utc::now(),
        changes,
        summary,
        notes: Vec::new(),
    }
}

fn split_address(addr: &str) -> String {
    addr.split_once('.')
        .map(|(t, _)| t.to_string())
        .unwrap_or_else(|| addr.to_string())
}

/// The plan that brings the real resources to the configuration.
pub fn diff(cfg: &Config, state: &State, observed: &[Observed]) -> Plan {
    let mut known: BTreeMap<Kind, Option<String>> = BTreeMap::new();
    let mut changes = Vec::new();
    for obs in observed {
        let addr = obs.kind.address();
        if !obs.kind.wanted_in(cfg) {
            // Not wanted with this front: whatever exists of it goes.
            known.insert(obs.kind, None);
            for id in obs.id.iter().chain(obs.duplicates.iter()) {
                changes.push(Change {
                    address: addr.clone(),
                    resource_type: obs.kind.type_name().to_string(),
                    action: Action::Delete,
                    id: Some(id.clone()),
                    adopted: false,
                    reason: Some(format!(
                        "not wanted with front = \"{}\"",
                        cfg.front.as_str()
                    )),
                    attributes: vec![],
                });
            }
            continue;
        }
        let wants = wanted(cfg, obs.kind, &known);
        let (action, attributes) = match &obs.actual {
            None => (
                Action::Create,
                wants
                    .iter()
                    .map(|w| AttrChange {
                        name: w.name.to_string(),
                        before: None,
                        after: match &w.value {
                            Attr::Known(v) => Some(v.clone()),
                            Attr::Unknown => None,
                        },
                        after_unknown: w.value == Attr::Unknown,
                        forces_replacement: false,
                    })
                    .collect::<Vec<_>>(),
            ),
            Some(actual) => {
                let mut attrs = Vec::new();
                let mut replace = false;
                for w in &wants {
                    let before = actual.get(w.name).cloned();
                    let differs = match &w.value {
                        Attr::Known(v) => before.as_ref() != Some(v),
                        Attr::Unknown => true,
                    };
                    if differs {
                        let forces = w.forces_new(before.as_ref());
                        replace |= forces;
                        attrs.push(AttrChange {
                            name: w.name.to_string(),
                            before,
                            after: match &w.value {
                                Attr::Known(v) => Some(v.clone()),
                                Attr::Unknown => None,
                            },
                            after_unknown: w.value == Attr::Unknown,
                            forces_replacement: forces,
                        });
                    }
                }
                let action = if replace {
                    Action::Replace
                } else if attrs.is_empty() {
                    Action::NoOp
                } else {
                    Action::Update
                };
                (action, attrs)
            }
        };
        // A recorded id that differs from the one found also needs a state write.
        let recorded = state.resources.get(&addr).map(|r| r.id.clone());
        let adopted = obs.id.is_some() && (obs.adopted || recorded != obs.id);
        known.insert(
            obs.kind,
            match action {
                Action::Create | Action::Replace => None,
                _ => obs.id.clone(),
            },
        );
        changes.push(Change {
            address: addr.clone(),
            resource_type: obs.kind.type_name().to_string(),
            action,
            id: obs.id.clone(),
            adopted,
            reason: None,
            attributes,
        });
        for dup in &obs.duplicates {
            changes.push(Change {
                address: addr.clone(),
                resource_type: obs.kind.type_name().to_string(),
                action: Action::Delete,
                id: Some(dup.clone()),
                adopted: false,
                reason: Some("a duplicate found by its tags, not in the state".into()),
                attributes: vec![],
            });
        }
    }
    let notes = notes::front_switch(cfg, observed, &changes);
    let mut plan = new_plan(cfg, state, Operation::Apply, changes);
    plan.notes = notes;
    plan
}

/// The plan that removes everything the deployer owns, resources found by tags
/// included. Listed in dependency order like every plan; carried out backwards:
/// instances first, then the stack from the leaves to the VPC.
pub fn destroy_plan(
    cfg: &Config,
    state: &State,
    observed: &[Observed],
    instances: &[instances::Found],
) -> Plan {
    let mut changes = Vec::new();
    for obs in observed {
        let addr = obs.kind.address();
        for id in obs.id.iter().chain(obs.duplicates.iter()) {
            changes.push(Change {
                address: addr.clone(),
                resource_type: split_address(&addr),
                action: Action::Delete,
                id: Some(id.clone()),
                adopted: false,
                reason: None,
                attributes: vec![],
            });
        }
    }
    for inst in instances {
        changes.push(Change {
            address: format!("aws_instance.{}", inst.color),
            resource_type: "aws_instance".into(),
            action: Action::Delete,
            id: Some(inst.id.clone()),
            adopted: false,
            reason: None,
            attributes: vec![],
        });
    }
    new_plan(cfg, state, Operation::Destroy, changes)
}
