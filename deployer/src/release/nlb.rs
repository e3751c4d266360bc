//! `deploy` with `front = "nlb"`, step by step: the idle colour's old instances
//! deregistered and terminated, `instances_per_color` new ones launched across the two
//! subnets (each recorded as soon as `RunInstances` returns), running, registered in
//! the colour's target group, healthy by `DescribeTargetHealth` and by the deployer's
//! own `/readyz` + `/version` probe of each, then the listener's weights shifted: at
//! once, or a canary share held for `[canary] soak_seconds` while the canary's 5xx
//! rate stays under `max_error_rate` (else the weights go back and the release is
//! abandoned). The old colour stays registered at weight 0 for the rollback window.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::balancer::{Balancer, describe_weights};
use super::deploy::{Run, wait_running};
use super::{Deployed, ReleaseError, ReleaseOptions, canary};
use crate::health::Target;
use crate::instances;
use crate::state::{Color, State};
use crate::{Deployer, Error};

impl Run<'_> {
    /// The whole deploy behind the balancer, once the image is known.
    pub(super) async fn deploy_nlb(
        &mut self,
        ami: &instances::Ami,
        bal: &Balancer,
    ) -> Result<Deployed, Error> {
        self.replace_idle_nlb(bal).await?;
        let mut ids = Vec::new();
        let n = self.d.cfg.instances_per_color.max(1);
        for i in 0..n {
            let subnet = if i % 2 == 0 {
                self.ids.subnet.clone()
            } else {
                self.subnet_b()?
            };
            match self.launch_into(ami, &subnet).await {
                Ok(id) => ids.push(id),
                Err(e) if ids.is_empty() => return Err(e),
                Err(e) => return Err(self.abandon_all(bal, ids, e).await),
            }
        }
        let targets = match self.gate_all(bal, &ids).await {
            Ok(t) => t,
            Err(e) => return Err(self.abandon_all(bal, ids, e).await),
        };
        if let Some(p) = self.opts.canary {
            match self.active {
                Some(_) => {
                    if let Err(e) = self.soak(bal, &targets, p).await {
                        return Err(self.abandon_all(bal, ids, e).await);
                    }
                }
                None => tracing::info!("first release: no colour to share traffic with, no canary"),
            }
        }
        let previous = self.shift_and_record(bal).await?;
        let model = self.manifest.model_version.clone();
        self.d
            .verify_front(&self.state, self.release, model.as_deref(), self.opts)
            .await?;
        Ok(Deployed {
            release: self.release.into(),
            color: self.idle,
            instance_id: ids.join(", "),
            previous,
            retired: Vec::new(),
        })
    }

    fn subnet_b(&self) -> Result<String, Error> {
        Ok(self
            .state
            .resources
            .get("aws_subnet.b")
            .map(|r| r.id.clone())
            .ok_or_else(|| ReleaseError::NoStack("aws_subnet.b".into()))?)
    }

    /// The idle colour may still hold the previous release in its window: deregistered
    /// and terminated (never while the listener sends it traffic).
    async fn replace_idle_nlb(&mut self, bal: &Balancer) -> Result<(), Error> {
        let idle = self.idle;
        let Some(old) = self.state.release.instances.get(&idle).cloned() else {
            return Ok(());
        };
        tracing::info!(color = %idle, instances = ?old.ids(), "replacing the idle colour's instances");
        self.d.check_not_live(bal, idle).await?;
        bal.deregister(idle, &old.ids()).await?;
        for m in old.members() {
            instances::terminate_launched(
                &self.d.clients,
                &m.instance_id,
                Some(m.launched_at),
                instances::TERMINATED_WITHIN,
            )
            .await?;
            self.state.release.drop_instance(&m.instance_id);
            self.store.write(&mut self.state).await?;
        }
        Ok(())
    }

    /// Running, registered, healthy by the group's checks and by the deployer's own
    /// probes, and the weights still where the state says. Returns each instance's
    /// probe target.
    async fn gate_all(&self, bal: &Balancer, ids: &[String]) -> Result<Vec<Target>, Error> {
        let (opts, idle, port) = (self.opts, self.idle, self.d.cfg.api_port);
        let deadline = opts.health_deadline.max(Duration::from_secs(60));
        let mut ips: Vec<Option<IpAddr>> = Vec::new();
        for id in ids {
            ips.push(wait_running(&self.d.clients, id, deadline).await?);
        }
        bal.register(idle, ids).await?;
        tracing::info!(color = %idle, instances = ?ids, "registered in the target group");
        let mut targets = Vec::new();
        for (id, ip) in ids.iter().zip(&ips) {
            self.gate(id, *ip).await?;
            let target = opts.endpoints.for_color(idle, id, *ip, port);
            targets.push(target.map_err(ReleaseError::from)?);
        }
        wait_targets_healthy(bal, idle, ids, opts).await?;
        self.d.guard_weights(&self.state, bal).await?;
        Ok(targets)
    }

    /// `--canary P%`: P% of new connections to the new colour for the soak; its 5xx
    /// rate over that time decides. Above the threshold: every connection back to the
    /// live colour (recorded), and the error that abandons the release.
    async fn soak(&mut self, bal: &Balancer, targets: &[Target], percent: u8) -> Result<(), Error> {
        let (idle, cfg) = (self.idle, &self.d.cfg.canary);
        let live = self.active.unwrap_or(idle.other());
        let soak = Duration::from_secs(cfg.soak_seconds);
        let before = canary::total(targets).await;
        self.d
            .shift(&self.store, &mut self.state, bal, idle, percent)
            .await?;
        let start = Instant::now();
        let mut seen = canary::Counts::default();
        while start.elapsed() < soak {
            let left = soak.saturating_sub(start.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(2))).await;
            seen = canary::total(targets).await.since(before);
            tracing::info!(
                requests = seen.requests,
                errors = seen.errors,
                "canary soak"
            );
            // Enough requests to judge and already too many errors: no need to serve
            // them for the rest of the soak.
            if seen.requests >= canary::EARLY_VERDICT_REQUESTS && seen.rate() > cfg.max_error_rate {
                break;
            }
        }
        if seen.rate() <= cfg.max_error_rate {
            tracing::info!(rate = seen.rate(), "canary passed");
            return Ok(());
        }
        tracing::warn!(
            rate = seen.rate(),
            "canary failed: all traffic back to {live}"
        );
        self.d
            .shift(&self.store, &mut self.state, bal, live, 100)
            .await?;
        self.state.release.weights_moving = None;
        self.store.write(&mut self.state).await?;
        Err(ReleaseError::CanaryRolledBack {
            percent,
            errors: seen.errors,
            requests: seen.requests,
            soak_seconds: cfg.soak_seconds,
            rate: seen.rate() * 100.0,
            max: cfg.max_error_rate * 100.0,
        }
        .into())
    }

    /// Every new connection to the new colour, recorded; the old colour's window
    /// starts. Returns the colour that was live before and its instances.
    async fn shift_and_record(&mut self, bal: &Balancer) -> Result<Option<(Color, String)>, Error> {
        self.d
            .shift(&self.store, &mut self.state, bal, self.idle, 100)
            .await?;
        self.state.release.weights_moving = None;
        let previous = self.record_deployed();
        self.store.write(&mut self.state).await?;
        tracing::info!(color = %self.idle, "the listener forwards every new connection to it");
        Ok(previous.map(|(c, r)| (c, r.ids().join(", "))))
    }

    /// A failure before the full shift: the new instances are deregistered, drained and
    /// terminated, the live colour keeps all traffic. Returns the error to report.
    async fn abandon_all(&mut self, bal: &Balancer, ids: Vec<String>, e: Error) -> Error {
        let why = match &e {
            Error::Release(ReleaseError::NotRunning { why, .. }) => why.clone(),
            other => other.to_string(),
        };
        tracing::warn!("abandoning {}: {why}", self.release);
        let kept = match self.active {
            Some(c) => format!("{c} keeps all traffic"),
            None => "no colour serves".into(),
        };
        let idle = self.idle;
        let record = self.state.release.instances.get(&idle).cloned();
        // Never while the listener sends it traffic; then drained (the group's
        // deregistration delay) before termination: a canary's weight just set back
        // takes a moment to reach new connections, and open ones finish.
        let mut result = self.d.check_not_live(bal, idle).await;
        if result.is_ok() {
            result = self.d.drain(bal, idle, &ids).await;
        }
        if result.is_ok() {
            for m in record.iter().flat_map(|r| r.members()) {
                let t = instances::terminate_launched(
                    &self.d.clients,
                    &m.instance_id,
                    Some(m.launched_at),
                    instances::TERMINATED_WITHIN,
                )
                .await;
                if let Err(e) = t {
                    result = Err(e.into());
                    break;
                }
            }
        }
        if result.is_ok() {
            self.state.release.instances.remove(&idle);
        }
        self.record_abandoned(result, ids.join(", "), why, kept)
            .await
    }
}

/// Polls `DescribeTargetHealth` until every one of `ids` is `healthy` in `color`'s
/// group (the group's own checks; `initial` until checked).
pub(super) async fn wait_targets_healthy(
    bal: &Balancer,
    color: Color,
    ids: &[String],
    opts: &ReleaseOptions,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let health = bal.health(color).await?;
        let not: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let h = health.iter().find(|h| &h.instance_id == id);
                match h {
                    Some(h) if h.state == "healthy" => None,
                    Some(h) => Some(format!(
                        "{id} {}{}",
                        h.state,
                        h.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )),
                    None => Some(format!("{id} not registered")),
                }
            })
            .collect();
        if not.is_empty() {
            tracing::info!(%color, "every target healthy in the target group");
            return Ok(());
        }
        if start.elapsed() >= opts.health_deadline {
            return Err(ReleaseError::TargetsUnhealthy {
                color,
                deadline: opts.health_deadline.as_secs(),
                states: not.join(", "),
            }
            .into());
        }
        tracing::debug!(%color, ?not, "targets not healthy yet");
        tokio::time::sleep(opts.probe_interval.min(Duration::from_secs(2))).await;
    }
}

impl Deployer {
    /// Connection draining: `ids` leave `color`'s group and are waited for until the
    /// group no longer lists them (its deregistration delay), at most 30 s longer than
    /// that delay.
    pub(super) async fn drain(
        &self,
        bal: &Balancer,
        color: Color,
        ids: &[String],
    ) -> Result<(), Error> {
        let delay = u64::from(self.cfg.nlb.deregistration_delay_seconds);
        let bound = Duration::from_secs(delay + 30);
        bal.deregister(color, ids).await?;
        let start = Instant::now();
        loop {
            let left: Vec<_> = bal
                .health(color)
                .await?
                .into_iter()
                .filter(|h| ids.contains(&h.instance_id))
                .collect();
            if left.is_empty() || start.elapsed() > bound {
                if !left.is_empty() {
                    tracing::warn!(%color, "still draining after {}s: terminating anyway", bound.as_secs());
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The weights now, for `status` and the errors.
    pub async fn listener_weights(&self, state: &State) -> Result<String, Error> {
        let bal = Balancer::of(&self.clients, state)?;
        Ok(describe_weights(&bal.weights().await?))
    }
}
