//! `rollback`: the address back to the previous colour if it is alive and healthy,
//! else a redeploy of the previous release.

use serde_json::json;

use super::Balancer;
use super::nlb::wait_targets_healthy;
use super::{Deployed, ReleaseError, ReleaseOptions, describe, failed, resource_id};
use crate::config::Front;
use crate::health;
use crate::history::Entry;
use crate::stack::Kind;
use crate::state::{EventOutcome, ReleaseEvent, ReleaseOperation};
use crate::{Deployer, Error, LockOptions};

/// What the locked part decided.
enum Next {
    Done(Deployed),
    /// The previous colour is not usable: deploy its release again (release, why).
    Redeploy(String, String),
}

impl Deployer {
    /// `rollback`: the address back to the previous colour if it is alive and healthy,
    /// else a redeploy of the previous release.
    pub async fn rollback(&self, opts: &ReleaseOptions) -> Result<Deployed, Error> {
        let lock = LockOptions {
            enabled: true,
            timeout: opts.lock_timeout,
        };
        let result = self
            .locked("rollback", lock, async |_| self.rollback_locked(opts).await)
            .await;
        match result {
            Ok(Next::Done(d)) => {
                self.history()
                    .record(Entry::new(
                        "rollback",
                        json!({ "release": d.release, "color": d.color, "instance": d.instance_id, "how": "eip-moved-back" }),
                        "ok",
                    ))
                    .await;
                Ok(d)
            }
            Ok(Next::Redeploy(release, why)) => {
                self.history()
                    .record(Entry::new(
                        "rollback",
                        json!({ "release": release, "how": "redeploy", "because": why }),
                        "ok: redeploying",
                    ))
                    .await;
                self.deploy(&release, opts).await
            }
            Err(e) => {
                self.history()
                    .record(Entry::new("rollback", json!({}), failed(&e.to_string())))
                    .await;
                Err(e)
            }
        }
    }

    async fn rollback_locked(&self, opts: &ReleaseOptions) -> Result<Next, Error> {
        if self.cfg.front == Front::Nlb {
            return self.rollback_nlb(opts).await;
        }
        let store = self.store();
        let mut state = store.read(&self.cfg.app).await?;
        let allocation = resource_id(&state, Kind::Eip)?;
        self.settle_eip_move(&store, &mut state, &allocation)
            .await?;
        let Some(active) = state.release.eip_holder else {
            return Err(ReleaseError::NoRollback("no colour holds the Elastic IP".into()).into());
        };
        let prev = active.other();
        let Some(rec) = state.release.instances.get(&prev).cloned() else {
            return Err(ReleaseError::NoRollback(format!(
                "the {prev} colour has no instance (its window is over); deploy the release you want instead"
            ))
            .into());
        };
        let healthy = self
            .previous_usable(prev, &rec, &rec.instance_id, opts)
            .await?;
        if let Err(why) = healthy {
            tracing::warn!(color = %prev, "previous colour not usable ({why}): redeploying {}", rec.release);
            return Ok(Next::Redeploy(rec.release.clone(), why));
        }
        self.guard_eip(&state, &allocation).await?;
        self.move_eip(&store, &mut state, &allocation, prev, &rec.instance_id)
            .await?;
        let current = state
            .release
            .instances
            .get(&active)
            .map(|r| r.instance_id.clone());
        state.release.eip_holder = Some(prev);
        state.release.eip_moving = None;
        if let Some(r) = state.release.instances.get_mut(&prev) {
            r.retire_after = None;
        }
        if let Some(r) = state.release.instances.get_mut(&active) {
            r.retire_after = Some(chrono::Utc::now() + opts.rollback_window);
        }
        state.release.last = Some(ReleaseEvent {
            operation: ReleaseOperation::Rollback,
            release: rec.release.clone(),
            at: chrono::Utc::now(),
            outcome: EventOutcome::Ok,
        });
        store.write(&mut state).await?;
        self.verify_fixed(
            &allocation,
            &rec.release,
            rec.model_version.as_deref(),
            opts,
        )
        .await?;
        Ok(Next::Done(Deployed {
            release: rec.release,
            color: prev,
            instance_id: rec.instance_id,
            previous: current.map(|c| (active, c)),
            retired: Vec::new(),
        }))
    }

    /// `front = "nlb"`: every new connection back to the previous colour if all its
    /// instances are alive and healthy (by its target group and by the probes), else a
    /// redeploy of its release.
    /// Whether instance `id` of the previous colour `prev` (running `rec`'s release)
    /// can take the traffic back: running, and passing the health gate. `Ok(Err(why))`
    /// when it cannot; `Err` when AWS could not be asked.
    async fn previous_usable(
        &self,
        prev: crate::state::Color,
        rec: &crate::state::InstanceRecord,
        id: &str,
        opts: &ReleaseOptions,
    ) -> Result<Result<(), String>, Error> {
        let alive = describe(&self.clients, id).await?;
        Ok(match &alive {
            Some(d) if d.is_running() => {
                let (ip, port) = (d.public_ip, self.cfg.api_port);
                health::gate_resolving(
                    || opts.endpoints.for_color(prev, id, ip, port),
                    &rec.release,
                    rec.model_version.as_deref(),
                    opts.health_deadline,
                    opts.probe_interval,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            other => Err(format!(
                "instance {id} state {:?}",
                other.as_ref().map(|o| o.state.as_str())
            )),
        })
    }

    async fn rollback_nlb(&self, opts: &ReleaseOptions) -> Result<Next, Error> {
        let store = self.store();
        let mut state = store.read(&self.cfg.app).await?;
        let bal = Balancer::of(&self.clients, &state)?;
        self.settle_weights(&store, &mut state, &bal).await?;
        let Some(active) = state.release.eip_holder else {
            return Err(ReleaseError::NoRollback("no colour is live".into()).into());
        };
        let prev = active.other();
        let Some(rec) = state.release.instances.get(&prev).cloned() else {
            return Err(ReleaseError::NoRollback(format!(
                "the {prev} colour has no instance (its window is over); deploy the release you want instead"
            ))
            .into());
        };
        let mut why = None;
        for id in rec.ids() {
            let healthy = self.previous_usable(prev, &rec, &id, opts).await?;
            if let Err(w) = healthy {
                why = Some(w);
                break;
            }
        }
        if why.is_none()
            && let Err(e) = wait_targets_healthy(&bal, prev, &rec.ids(), opts).await
        {
            why = Some(e.to_string());
        }
        if let Some(why) = why {
            tracing::warn!(color = %prev, "previous colour not usable ({why}): redeploying {}", rec.release);
            return Ok(Next::Redeploy(rec.release.clone(), why));
        }
        self.guard_weights(&state, &bal).await?;
        self.shift(&store, &mut state, &bal, prev, 100).await?;
        let current = state
            .release
            .instances
            .get(&active)
            .map(|r| r.ids().join(", "));
        state.release.eip_holder = Some(prev);
        state.release.weights_moving = None;
        if let Some(r) = state.release.instances.get_mut(&prev) {
            r.retire_after = None;
        }
        if let Some(r) = state.release.instances.get_mut(&active) {
            r.retire_after = Some(chrono::Utc::now() + opts.rollback_window);
        }
        state.release.last = Some(ReleaseEvent {
            operation: ReleaseOperation::Rollback,
            release: rec.release.clone(),
            at: chrono::Utc::now(),
            outcome: EventOutcome::Ok,
        });
        store.write(&mut state).await?;
        self.verify_balancer(&state, &rec.release, rec.model_version.as_deref(), opts)
            .await?;
        Ok(Next::Done(Deployed {
            release: rec.release.clone(),
            color: prev,
            instance_id: rec.ids().join(", "),
            previous: current.map(|c| (active, c)),
            retired: Vec::new(),
        }))
    }
}
