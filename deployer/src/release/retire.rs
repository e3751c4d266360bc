//! `retire`: the colours whose rollback window is over are terminated.

use std::time::Duration;

use serde_json::json;

use super::Balancer;
use super::resource_id;
use crate::config::Front;
use crate::history::Entry;
use crate::instances;
use crate::stack::Kind;
use crate::state::{Color, InstanceRecord, State, StateStore};
use crate::{Deployer, Error, LockOptions};

impl Deployer {
    /// Terminates every colour whose rollback window is over. Returns their ids.
    pub async fn retire(&self, lock_timeout: Duration) -> Result<Vec<String>, Error> {
        let lock = LockOptions {
            enabled: true,
            timeout: lock_timeout,
        };
        let retired = self
            .locked("retire", lock, async |_| {
                let store = self.store();
                let mut state = store.read(&self.cfg.app).await?;
                if state.release.instances.is_empty() {
                    return Ok(Vec::new());
                }
                if self.cfg.front == Front::Nlb {
                    return self.retire_nlb(&store, &mut state).await;
                }
                let allocation = resource_id(&state, Kind::Eip)?;
                self.settle_eip_move(&store, &mut state, &allocation)
                    .await?;
                let due = due(&state);
                for (c, r) in &due {
                    let id = &r.instance_id;
                    tracing::info!(color = %c, instance = %id, "rollback window over: terminating");
                    self.check_not_holding(&allocation, id).await?;
                    instances::terminate(&self.clients, id, instances::TERMINATED_WITHIN).await?;
                    state.release.instances.remove(c);
                    store.write(&mut state).await?;
                }
                Ok(due.into_iter().map(|(_, r)| r.instance_id).collect())
            })
            .await?;
        if !retired.is_empty() {
            self.history()
                .record(Entry::new("retire", json!({ "instances": retired }), "ok"))
                .await;
        }
        Ok(retired)
    }

    /// `front = "nlb"`: each colour past its window (never one the listener sends
    /// traffic to) leaves its target group, drains for the group's deregistration
    /// delay, and its instances are terminated.
    async fn retire_nlb(
        &self,
        store: &StateStore,
        state: &mut State,
    ) -> Result<Vec<String>, Error> {
        let bal = Balancer::of(&self.clients, state)?;
        self.settle_weights(store, state, &bal).await?;
        let mut retired = Vec::new();
        for (c, r) in due(state) {
            let ids = r.ids();
            tracing::info!(color = %c, instances = ?ids, "rollback window over: draining, then terminating");
            self.check_not_live(&bal, c).await?;
            self.drain(&bal, c, &ids).await?;
            for id in ids {
                instances::terminate(&self.clients, &id, instances::TERMINATED_WITHIN).await?;
                state.release.drop_instance(&id);
                store.write(state).await?;
                retired.push(id);
            }
        }
        Ok(retired)
    }
}

/// The colours whose rollback window is over (never the live one), with their
/// instances.
fn due(state: &State) -> Vec<(Color, InstanceRecord)> {
    let now = chrono::Utc::now();
    state
        .release
        .instances
        .iter()
        .filter(|(c, r)| {
            Some(**c) != state.release.eip_holder && r.retire_after.is_some_and(|t| t <= now)
        })
        .map(|(c, r)| (*c, r.clone()))
        .collect()
}
