//! Refresh (read what really exists), diff against the wanted stack, render the plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::task::Poll;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::AwsError;
use crate::config::Config;
use crate::instances;
use crate::stack::{Actual, Attr, Ids, Kind, STACK, Stack, wanted};
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
    let ids: Ids = STACK
        .iter()
        .filter_map(|(kind, _)| {
            let rs = state.resources.get(&kind.address())?;
            Some((*kind, rs.id.clone()))
        })
        .collect();
    let ids = &ids;
    let reads = STACK.iter().map(|(kind, _)| {
        Box::pin(async move {
            if let Some(id) = ids.get(kind) {
                stack.read(*kind, id).await?;
            }
            stack.find(*kind, ids).await?;
            Ok(())
        }) as Pin<Box<dyn Future<Output = Result<(), AwsError>> + Send + '_>>
    });
    join_all(reads.collect()).await.into_iter().collect()
}

/// Runs `futures` at the same time on this task; their results in their order.
async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut running: Vec<_> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = running.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in running.iter_mut().zip(done.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
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
    for (kind, _) in STACK {
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
                        replace |= w.force_new;
                        attrs.push(AttrChange {
                            name: w.name.to_string(),
                            before,
                            after: match &w.value {
                                Attr::Known(v) => Some(v.clone()),
                                Attr::Unknown => None,
                            },
                            after_unknown: w.value == Attr::Unknown,
                            forces_replacement: w.force_new,
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
    new_plan(cfg, state, Operation::Apply, changes)
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

fn show(v: &Option<Value>, unknown: bool) -> String {
    if unknown {
        return "(known after apply)".into();
    }
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// The plan in Terraform's words.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let visible: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp || c.adopted)
        .collect();
    if visible.is_empty() {
        out.push_str("No changes. The infrastructure matches the configuration.\n");
        return out;
    }
    out.push_str("Resource actions are indicated with the following symbols:\n");
    out.push_str(
        "  + create\n  ~ update in-place\n-/+ destroy and then create replacement\n  - destroy\n\n",
    );
    out.push_str("deployer will perform the following actions:\n\n");
    for c in visible {
        let (kind, name) = c
            .address
            .split_once('.')
            .unwrap_or((c.resource_type.as_str(), ""));
        let (headline, sym) = match c.action {
            Action::Create => ("will be created", "  +"),
            Action::Update => ("will be updated in-place", "  ~"),
            Action::Replace => ("must be replaced", "-/+"),
            Action::Delete => ("will be destroyed", "  -"),
            Action::NoOp => ("", "   "),
        };
        if c.action == Action::NoOp {
            let _ = writeln!(
                out,
                "  # {} ({}) was found by its tags and will be recorded in the state\n",
                c.address,
                c.id.as_deref().unwrap_or("?")
            );
            continue;
        }
        let _ = write!(out, "  # {} {headline}", c.address);
        if let Some(r) = &c.reason {
            let _ = write!(out, " ({r})");
        } else if c.adopted {
            out.push_str(" (found by its tags; it will be recorded in the state)");
        }
        out.push('\n');
        let _ = writeln!(out, "{sym} resource \"{kind}\" \"{name}\" {{");
        let width = c
            .attributes
            .iter()
            .map(|a| a.name.len())
            .chain(std::iter::once(2))
            .max()
            .unwrap_or(2);
        match c.action {
            Action::Create => {
                let _ = writeln!(out, "      + {:width$} = (known after apply)", "id");
                for a in &c.attributes {
                    let _ = writeln!(
                        out,
                        "      + {:width$} = {}",
                        a.name,
                        show(&a.after, a.after_unknown)
                    );
                }
            }
            Action::Delete => {
                let _ = writeln!(
                    out,
                    "      - {:width$} = {}",
                    "id",
                    show(&c.id.clone().map(Value::String), false)
                );
            }
            Action::Update | Action::Replace => {
                let _ = writeln!(
                    out,
                    "        {:width$} = {}",
                    "id",
                    show(&c.id.clone().map(Value::String), false)
                );
                for a in &c.attributes {
                    let _ = writeln!(
                        out,
                        "      ~ {:width$} = {} -> {}{}",
                        a.name,
                        show(&a.before, false),
                        show(&a.after, a.after_unknown),
                        if a.forces_replacement {
                            " # forces replacement"
                        } else {
                            ""
                        }
                    );
                }
            }
            Action::NoOp => {}
        }
        out.push_str("    }\n\n");
    }
    let s = plan.summary;
    let _ = write!(
        out,
        "Plan: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    );
    if s.adopt > 0 {
        let _ = write!(out, " {} found by tags, to record in the state.", s.adopt);
    }
    out.push('\n');
    out
}
