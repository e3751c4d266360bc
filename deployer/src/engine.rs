//! Carrying out a plan: deletions in reverse dependency order, then creations and
//! updates in dependency order, the state written after every single change.
//!
//! Crash safety: a resource is written to the state the moment its create call
//! returns; if the process dies in between, the next refresh finds it by its tags
//! (EC2), its fixed name (IAM) or its parents (attachment, route, association) and
//! adopts it instead of creating a second one.
//!
//! Reading: [`observe`] is the refresh (`plan::refresh`: each kind read once, the
//! reads at the same time, from one snapshot dropped after it); everything `apply`
//! reads itself goes to AWS, one call per read.
//!
//! Eventual consistency: a create is confirmed by reading it back, polled for up to
//! [`CREATE_CONFIRMATION`] (AWS can briefly answer "not found" for what it just created),
//! and recorded with the attributes read. A resource that never reads back within the
//! bound is recorded with its id (no attributes), and the apply fails naming it.

use std::time::Duration;

use crate::Error;
use crate::aws::{Backoff, Clients, EC2_PROPAGATION, poll_until_some};
use crate::instances;
use crate::lock::LockGuard;
use crate::plan::{Action, Observed, Plan};
use crate::stack::{Ids, Kind, Stack};
use crate::state::{ResourceState, State, StateStore};

/// Test hook (feature `test-hooks` only): with `DEPLOYER_FAULT=<point>` the process
/// stops at that point (to be killed by the test), e.g. `after-create:aws_subnet.main`.
#[cfg(feature = "test-hooks")]
pub async fn fault_point(point: &str) {
    if std::env::var("DEPLOYER_FAULT").as_deref() == Ok(point) {
        tracing::error!("fault point {point} reached: pausing until killed");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Without the `test-hooks` feature the environment is not read: nothing happens.
#[cfg(not(feature = "test-hooks"))]
pub async fn fault_point(_point: &str) {}

/// Test hook (feature `test-hooks` only): `DEPLOYER_STEP_DELAY_MS` slows every step
/// down (to widen race windows).
#[cfg(feature = "test-hooks")]
async fn step_delay() {
    if let Some(ms) = std::env::var("DEPLOYER_STEP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

#[cfg(not(feature = "test-hooks"))]
async fn step_delay() {}

/// How long a create is read back before it counts as failed: terraform-provider-aws's
/// EC2 propagation timeout.
pub const CREATE_CONFIRMATION: Duration = EC2_PROPAGATION;

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub changed: usize,
    pub destroyed: usize,
    pub adopted: usize,
}

/// Applies `plan` (made from `observed` against `state`) under `guard`.
pub async fn apply(
    stack: &Stack<'_>,
    store: &StateStore,
    guard: &LockGuard,
    state: &mut State,
    plan: &Plan,
    observed: &[Observed],
) -> Result<Applied, Error> {
    let mut done = Applied::default();
    // A new listener (`front = "nlb"`) forwards to the live colour.
    let stack = &stack.with_live(state.release.eip_holder);
    let mut ids: Ids = observed
        .iter()
        .filter(|o| o.actual.is_some())
        .filter_map(|o| o.id.clone().map(|id| (o.kind, id)))
        .collect();

    // 0. Record what was found by tags (and forget what no longer exists).
    let mut dirty = false;
    for obs in observed {
        let addr = obs.kind.address();
        match (&obs.id, &obs.actual) {
            (Some(id), Some(actual)) => {
                let rec = ResourceState {
                    id: id.clone(),
                    attributes: actual.clone(),
                };
                if state.resources.get(&addr) != Some(&rec) {
                    if state.resources.get(&addr).map(|r| &r.id) != Some(id) {
                        done.adopted += 1;
                    }
                    state.resources.insert(addr, rec);
                    dirty = true;
                }
            }
            _ => {
                if state.resources.remove(&addr).is_some() {
                    tracing::warn!(address = %addr, "gone from AWS: dropped from the state");
                    dirty = true;
                }
            }
        }
    }
    if dirty {
        guard.check()?;
        store.write(state).await?;
    }

    // 1. Deletions (of replaced and removed resources), dependents first.
    for change in plan.changes.iter().rev() {
        if !matches!(change.action, Action::Replace | Action::Delete) {
            continue;
        }
        let Some(id) = change.id.clone() else {
            continue;
        };
        guard.check()?;
        step_delay().await;
        fault_point(&format!("before-delete:{}", change.address)).await;
        tracing::info!("{}: destroying... [id={id}]", change.address);
        if change.resource_type == "aws_instance" {
            instances::terminate(stack.clients, &id, instances::TERMINATED_WITHIN).await?;
            state.release.drop_instance(&id);
        } else if let Some(kind) = Kind::from_address(&change.address) {
            stack.delete(kind, &id).await?;
            if ids.get(&kind) == Some(&id) {
                ids.remove(&kind);
            }
        }
        if state.resources.get(&change.address).map(|r| &r.id) == Some(&id) {
            state.resources.remove(&change.address);
        }
        store.write(state).await?;
        fault_point(&format!("after-delete:{}", change.address)).await;
        tracing::info!("{}: destruction complete", change.address);
        done.destroyed += 1;
    }

    // 2. Creations and updates, parents first.
    for change in &plan.changes {
        let Some(kind) = Kind::from_address(&change.address) else {
            continue;
        };
        match change.action {
            Action::Create | Action::Replace => {
                guard.check()?;
                step_delay().await;
                fault_point(&format!("before-create:{}", change.address)).await;
                tracing::info!("{}: creating...", change.address);
                let id = stack.create(kind, &ids).await?;
                fault_point(&format!("after-create:{}", change.address)).await;
                // Confirmed by reading it back: a first read can miss it.
                let confirmed = poll_until_some(
                    Backoff::for_at_most(CREATE_CONFIRMATION),
                    &change.address,
                    "ReadAfterCreate",
                    "visible",
                    || stack.read(kind, &id),
                )
                .await;
                ids.insert(kind, id.clone());
                state.resources.insert(
                    change.address.clone(),
                    ResourceState {
                        id: id.clone(),
                        attributes: confirmed.as_ref().cloned().unwrap_or_default(),
                    },
                );
                store.write(state).await?;
                // Recorded either way (it exists, or will): then fail if it never showed.
                confirmed?;
                fault_point(&format!("after-record:{}", change.address)).await;
                tracing::info!("{}: creation complete [id={id}]", change.address);
                done.added += 1;
            }
            Action::Update => {
                let Some(id) = ids.get(&kind).cloned() else {
                    continue;
                };
                guard.check()?;
                step_delay().await;
                tracing::info!("{}: modifying... [id={id}]", change.address);
                let actual = stack.read(kind, &id).await?.unwrap_or_default();
                stack.update(kind, &id, &ids, &actual).await?;
                let attributes = stack.read(kind, &id).await?.unwrap_or_default();
                state.resources.insert(
                    change.address.clone(),
                    ResourceState {
                        id: id.clone(),
                        attributes,
                    },
                );
                store.write(state).await?;
                tracing::info!("{}: modifications complete [id={id}]", change.address);
                done.changed += 1;
            }
            Action::NoOp | Action::Delete => {}
        }
    }
    Ok(done)
}

/// Reads everything real that `state` and the stack's tags and names point at, for
/// `plan`, `apply` and `destroy`: one request per EC2 type and per IAM resource when
/// nothing drifted (`plan::refresh`).
pub async fn observe(stack: &Stack<'_>, state: &State) -> Result<Vec<Observed>, Error> {
    Ok(crate::plan::refresh(stack, state).await?)
}

/// The instances `destroy` removes: those in the state and those found by tags.
pub async fn instances_to_destroy(
    clients: &Clients,
    stack: &Stack<'_>,
    state: &State,
) -> Result<Vec<instances::Found>, Error> {
    let mut found = instances::find_instances(clients, stack.cfg).await?;
    for (color, rec) in &state.release.instances {
        for id in rec.ids() {
            if found.iter().any(|f| f.id == id) {
                continue;
            }
            found.push(instances::Found {
                id,
                color: color.to_string(),
                release: rec.release.clone(),
                state: "unknown".into(),
            });
        }
    }
    Ok(found)
}
