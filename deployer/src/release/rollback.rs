//! `rollback`: the address back to the previous colour if it is alive and healthy,
//! else a redeploy of the previous release.

use serde_json::json;

use super::Balancer;
use super::nlb::wait_targets_healthy;
use super::{
    Deployed, ReleaseError, ReleaseOptions, describe, failed, record_cutover, resource_id,
};
use crate::config::Front;
use crate::health;
use crate::history::Entry;
use crate::stack::Kind;
use crate::state::{Color, InstanceRecord, ReleaseOperation, State, StateStore};
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
        let (active, prev, rec) = previous_color(&state, "no colour holds the Elastic IP")?;
        let ip = match self
            .previous_usable(prev, &rec, &rec.instance_id, opts)
            .await?
        {
            Ok(ip) => ip,
            Err(why) => return Ok(redeploy(prev, &rec, why)),
        };
        // With HTTPS, the colour taking the address back must serve a valid
        // certificate for it that outlives the rollback window, as a deploy's new
        // colour must.
        let https = self
            .https_gate(
                &opts.endpoints,
                &allocation,
                prev,
                &rec.instance_id,
                ip,
                opts.rollback_window,
            )
            .await;
        match https {
            Ok(_) => {}
            Err(Error::Release(ReleaseError::Probe(e))) => {
                return Ok(redeploy(prev, &rec, format!("its HTTPS: {e}")));
            }
            Err(e) => return Err(e),
        }
        self.guard_eip(&state, &allocation).await?;
        self.move_eip(&store, &mut state, &allocation, prev, &rec.instance_id)
            .await?;
        state.release.eip_moving = None;
        let done = record_rollback(&store, &mut state, active, prev, &rec, opts, |r| {
            r.instance_id.clone()
        })
        .await?;
        self.verify_front(&state, &rec.release, rec.model_version.as_deref(), opts)
            .await?;
        Ok(Next::Done(done))
    }

    /// Whether instance `id` of the previous colour `prev` (running `rec`'s release)
    /// can take the traffic back: running, and passing the health gate (`Ok(Ok(its
    /// public address))`). `Ok(Err(why))` when it cannot; `Err` when AWS could not be
    /// asked.
    async fn previous_usable(
        &self,
        prev: Color,
        rec: &InstanceRecord,
        id: &str,
        opts: &ReleaseOptions,
    ) -> Result<Result<Option<std::net::IpAddr>, String>, Error> {
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
                .map(|_| ip)
                .map_err(|e| e.to_string())
            }
            other => Err(format!(
                "instance {id} state {:?}",
                other.as_ref().map(|o| o.state.as_str())
            )),
        })
    }

    /// `front = "nlb"`: every new connection back to the previous colour if all its
    /// instances are alive and healthy (by its target group and by the probes), else a
    /// redeploy of its release.
    async fn rollback_nlb(&self, opts: &ReleaseOptions) -> Result<Next, Error> {
        let store = self.store();
        let mut state = store.read(&self.cfg.app).await?;
        let bal = Balancer::of(&self.clients, &state)?;
        self.settle_weights(&store, &mut state, &bal).await?;
        let (active, prev, rec) = previous_color(&state, "no colour is live")?;
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
            return Ok(redeploy(prev, &rec, why));
        }
        self.guard_weights(&state, &bal).await?;
        self.shift(&store, &mut state, &bal, prev, 100).await?;
        state.release.weights_moving = None;
        let done = record_rollback(&store, &mut state, active, prev, &rec, opts, |r| {
            r.ids().join(", ")
        })
        .await?;
        self.verify_front(&state, &rec.release, rec.model_version.as_deref(), opts)
            .await?;
        Ok(Next::Done(done))
    }
}

/// The live colour, the previous one and its record; `NoRollback` when no colour is
/// live (`none_live` says so) or the previous one has no instance left.
fn previous_color(state: &State, none_live: &str) -> Result<(Color, Color, InstanceRecord), Error> {
    let Some(active) = state.release.eip_holder else {
        return Err(ReleaseError::NoRollback(none_live.into()).into());
    };
    let prev = active.other();
    let Some(rec) = state.release.instances.get(&prev).cloned() else {
        return Err(ReleaseError::NoRollback(format!(
            "the {prev} colour has no instance (its window is over); deploy the release you want instead"
        ))
        .into());
    };
    Ok((active, prev, rec))
}

/// The previous colour `prev` cannot take the traffic back (`why`): its release is
/// deployed again.
fn redeploy(prev: Color, rec: &InstanceRecord, why: String) -> Next {
    tracing::warn!(color = %prev, "previous colour not usable ({why}): redeploying {}", rec.release);
    Next::Redeploy(rec.release.clone(), why)
}

/// The rollback recorded once the traffic is back on `prev` (its intent cleared):
/// `active` is kept for the window and the state written. Returns what to report,
/// each colour's instances named by `names`.
async fn record_rollback(
    store: &StateStore,
    state: &mut State,
    active: Color,
    prev: Color,
    rec: &InstanceRecord,
    opts: &ReleaseOptions,
    names: fn(&InstanceRecord) -> String,
) -> Result<Deployed, Error> {
    let previous = record_cutover(
        &mut state.release,
        ReleaseOperation::Rollback,
        &rec.release,
        Some(active),
        prev,
        opts.rollback_window,
    );
    store.write(state).await?;
    Ok(Deployed {
        release: rec.release.clone(),
        color: prev,
        instance_id: names(rec),
        previous: previous.map(|(c, r)| (c, names(&r))),
        retired: Vec::new(),
    })
}
