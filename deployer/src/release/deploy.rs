//! `deploy`, step by step, and `retire`.
//!
//! [`Deployer::deploy_locked`] reads as the list of steps: check the probe target,
//! replace the idle colour's old instance, launch, wait for running and gate on
//! health (abandoning the new instance on failure), move the Elastic IP and record
//! it, verify through the fixed address.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use serde_json::json;

use super::balancer::Balancer;
use super::model::{DeployTarget, Resolved};
use super::{
    Deployed, ReleaseError, ReleaseOptions, describe, failed, not_verified, record_cutover,
    resource_id,
};
use crate::config::Front;
use crate::health::{self, ProbeError};
use crate::history::Entry;
use crate::instances::{self, LaunchSpec};
use crate::publish::Manifest;
use crate::stack::Kind;
use crate::state::{
    Color, EventOutcome, InstanceRecord, Member, ReleaseEvent, ReleaseOperation, State, StateStore,
};
use crate::{Deployer, Error, LockOptions};

/// The shared resources a release instance is launched into.
pub(super) struct StackIds {
    pub(super) subnet: String,
    security_group: String,
    instance_profile: String,
    pub(super) allocation: String,
}

impl StackIds {
    fn of(state: &State) -> Result<StackIds, ReleaseError> {
        Ok(StackIds {
            subnet: resource_id(state, Kind::Subnet)?,
            security_group: resource_id(state, Kind::SecurityGroup)?,
            instance_profile: resource_id(state, Kind::InstanceProfile)?,
            allocation: resource_id(state, Kind::Eip)?,
        })
    }
}

/// One deploy under the lock: what it was given and the state it keeps writing.
pub(super) struct Run<'a> {
    pub(super) d: &'a Deployer,
    pub(super) release: &'a str,
    pub(super) opts: &'a ReleaseOptions,
    pub(super) store: StateStore,
    pub(super) state: State,
    pub(super) ids: StackIds,
    pub(super) manifest: Manifest,
    /// The colour holding the Elastic IP (with `front = "nlb"`: the live colour)
    /// before the deploy.
    pub(super) active: Option<Color>,
    /// The colour the release goes to.
    pub(super) idle: Color,
}

/// Waits until `id` runs; returns its public address. An instance EC2 does not show
/// yet (`InvalidInstanceID.NotFound` moments after `RunInstances`) is pending, for up
/// to [`instances::EC2_PROPAGATION`]; one that stops or terminates fails with EC2's
/// state and reason.
pub(super) async fn wait_running(
    clients: &crate::aws::Clients,
    id: &str,
    deadline: Duration,
) -> Result<Option<std::net::IpAddr>, Error> {
    let start = Instant::now();
    let not_running =
        |why: String| -> Error { ReleaseError::NotRunning { id: id.into(), why }.into() };
    loop {
        match describe(clients, id).await? {
            Some(d) if d.is_running() => return Ok(d.public_ip),
            Some(d) if d.state == InstanceStateName::Pending => {}
            None if start.elapsed() < instances::EC2_PROPAGATION => {
                tracing::debug!(instance = id, "not visible in DescribeInstances yet");
            }
            None => {
                return Err(not_running(format!(
                    "DescribeInstances still answers InvalidInstanceID.NotFound {}s after RunInstances",
                    start.elapsed().as_secs()
                )));
            }
            Some(d) => {
                return Err(not_running(format!(
                    "it went {} ({})",
                    d.state.as_str(),
                    d.reason.as_deref().unwrap_or("EC2 gave no reason")
                )));
            }
        }
        if start.elapsed() > deadline {
            return Err(not_running(format!(
                "still pending after {}s",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Run<'_> {
    /// The probe target is checked before anything is launched.
    fn check_target(&self) -> Result<(), Error> {
        let idle = self.idle;
        if let Some(t) = self.opts.endpoints.colors.get(&idle) {
            tracing::info!(color = %idle, target = %t, "health gate target (override)");
        } else if !self.opts.endpoints.reaches_instances() {
            return Err(ReleaseError::Probe(ProbeError::NotLoopback {
                target: format!("the {idle} instance's own address"),
            })
            .into());
        }
        Ok(())
    }

    /// The idle colour may still hold the previous release in its window: a new
    /// deploy replaces it.
    async fn replace_idle(&mut self) -> Result<(), Error> {
        let idle = self.idle;
        if let Some(old) = self.state.release.instances.get(&idle).cloned() {
            tracing::info!(color = %idle, instance = %old.instance_id, "replacing the idle colour's instance");
            self.d
                .check_not_holding(&self.ids.allocation, &old.instance_id)
                .await?;
            instances::terminate_launched(
                &self.d.clients,
                &old.instance_id,
                Some(old.launched_at),
                instances::TERMINATED_WITHIN,
            )
            .await?;
            self.state.release.instances.remove(&idle);
            self.store.write(&mut self.state).await?;
        }
        Ok(())
    }

    /// The image to launch, once it is known that the release's binary runs on it and
    /// on the instance type (checked before the idle colour is touched). Manifests
    /// published before the target was recorded are not checked.
    async fn image(&self) -> Result<instances::Ami, Error> {
        let d = self.d;
        let ami = instances::resolve_ami(&d.clients, &d.cfg.ami.selector()).await?;
        if let Some(target) = &self.manifest.target {
            let archs =
                instances::instance_type_architectures(&d.clients, &d.cfg.instance_type).await?;
            instances::check_runs(target, &ami, &d.cfg.instance_type, &archs).map_err(|why| {
                ReleaseError::WontRun {
                    release: self.release.to_string(),
                    why,
                }
            })?;
        }
        Ok(ami)
    }

    /// Launches the idle colour's instance from `ami` and records it. Returns its id.
    async fn launch(&mut self, ami: &instances::Ami) -> Result<String, Error> {
        let subnet = self.ids.subnet.clone();
        self.launch_into(ami, &subnet).await
    }

    /// Launches one more instance of the idle colour into `subnet` and records it
    /// (the colour's first, or one more of it) before anything waits on it.
    pub(super) async fn launch_into(
        &mut self,
        ami: &instances::Ami,
        subnet: &str,
    ) -> Result<String, Error> {
        let (d, idle, release) = (self.d, self.idle, self.release);
        let user_data = d
            .user_data_in(&self.manifest, self.opts.url_lifetime, &self.ids.allocation)
            .await?;
        let id = instances::launch_instance(
            &d.clients,
            &LaunchSpec {
                cfg: &d.cfg,
                ami,
                subnet_id: subnet,
                security_group_id: &self.ids.security_group,
                instance_profile: &self.ids.instance_profile,
                user_data: &user_data,
                color: idle,
                release,
            },
        )
        .await?;
        tracing::info!(color = %idle, instance = %id, release, "launched");
        let now = chrono::Utc::now();
        if let Some(r) = self.state.release.instances.get_mut(&idle) {
            r.more.push(Member {
                instance_id: id.clone(),
                launched_at: now,
            });
            self.store.write(&mut self.state).await?;
            return Ok(id);
        }
        self.state.release.instances.insert(
            idle,
            InstanceRecord {
                instance_id: id.clone(),
                release: release.to_string(),
                ami: ami.id.clone(),
                launched_at: now,
                model_version: self.manifest.model_version.clone(),
                retire_after: None,
                more: Vec::new(),
            },
        );
        self.store.write(&mut self.state).await?;
        Ok(id)
    }

    /// Everything up to the move: running, healthy, and the address still where the
    /// state says.
    async fn wait_and_gate(&self, id: &str) -> Result<health::HttpsGate, Error> {
        let opts = self.opts;
        let ip = wait_running(
            &self.d.clients,
            id,
            opts.health_deadline.max(Duration::from_secs(60)),
        )
        .await?;
        self.gate(id, ip).await?;
        let https = (self.d)
            .https_gate(
                &opts.endpoints,
                &self.ids.allocation,
                self.idle,
                id,
                ip,
                opts.rollback_window,
            )
            .await?;
        self.d.guard_eip(&self.state, &self.ids.allocation).await?;
        Ok(https)
    }

    /// The health gate of the new instance `id` (public address `ip`): ready, and its
    /// version reports the release and its model, within the health deadline.
    pub(super) async fn gate(&self, id: &str, ip: Option<std::net::IpAddr>) -> Result<(), Error> {
        let (opts, idle, port) = (self.opts, self.idle, self.d.cfg.api_port);
        let resolve = || opts.endpoints.for_color(idle, id, ip, port);
        match resolve() {
            Ok(target) => {
                tracing::info!(%target, "health gate: waiting for readiness and version")
            }
            Err(e) => tracing::info!("health gate: waiting for a probe target ({e})"),
        }
        let v = health::gate_resolving(
            resolve,
            self.release,
            self.manifest.model_version.as_deref(),
            opts.health_deadline,
            opts.probe_interval,
        )
        .await
        .map_err(ReleaseError::from)?;
        tracing::info!(instance = %id, release = %v.release, "health gate passed");
        Ok(())
    }

    /// A failure before the move: the new instance goes, the old colour keeps the
    /// address. Returns the error to report.
    async fn abandon(&mut self, id: String, e: Error) -> Error {
        let why = match &e {
            Error::Release(ReleaseError::NotRunning { why, .. }) => why.clone(),
            other => other.to_string(),
        };
        tracing::warn!("abandoning {}: {why}", self.release);
        let kept = match self
            .active
            .and_then(|c| self.state.release.instances.get(&c))
        {
            Some(r) => format!("{} ({}) keeps the Elastic IP", r.instance_id, r.release),
            None => "no instance holds the Elastic IP".into(),
        };
        let launched_at = self
            .state
            .release
            .instances
            .get(&self.idle)
            .map(|r| r.launched_at);
        let term = match self.d.check_not_holding(&self.ids.allocation, &id).await {
            Ok(()) => instances::terminate_launched(
                &self.d.clients,
                &id,
                launched_at,
                instances::TERMINATED_WITHIN,
            )
            .await
            .map_err(Error::from),
            Err(e) => Err(e),
        };
        self.state.release.instances.remove(&self.idle);
        self.record_abandoned(term, id, why, kept).await
    }

    /// Records the deploy as failed (`why`) and returns what to report: the error of
    /// the clean-up (`cleanup`) or of the state write if any, else
    /// [`ReleaseError::Abandoned`] naming `instance` and what `kept` the traffic.
    pub(super) async fn record_abandoned(
        &mut self,
        cleanup: Result<(), Error>,
        instance: String,
        why: String,
        kept: String,
    ) -> Error {
        self.state.release.last = Some(ReleaseEvent {
            operation: ReleaseOperation::Deploy,
            release: self.release.into(),
            at: chrono::Utc::now(),
            outcome: EventOutcome::Failed(why.clone()),
        });
        if let Err(e) = self.store.write(&mut self.state).await {
            return e.into();
        }
        if let Err(e) = cleanup {
            return e;
        }
        ReleaseError::Abandoned {
            release: self.release.into(),
            color: self.idle,
            instance,
            why,
            kept,
        }
        .into()
    }

    /// Moves the Elastic IP to `id`, starts the old colour's rollback window and
    /// records the deploy. Returns the colour that held the address before.
    async fn move_and_record(&mut self, id: &str) -> Result<Option<(Color, String)>, Error> {
        self.d
            .move_eip(
                &self.store,
                &mut self.state,
                &self.ids.allocation,
                self.idle,
                id,
            )
            .await?;
        self.state.release.eip_moving = None;
        let previous = self.record_deployed();
        self.store.write(&mut self.state).await?;
        tracing::info!(color = %self.idle, instance = %id, "the Elastic IP moved");
        Ok(previous.map(|(c, r)| (c, r.instance_id)))
    }

    /// The deploy's [`record_cutover`]: the idle colour is live, the active one kept
    /// for the rollback window.
    pub(super) fn record_deployed(&mut self) -> Option<(Color, InstanceRecord)> {
        record_cutover(
            &mut self.state.release,
            ReleaseOperation::Deploy,
            self.release,
            self.active,
            self.idle,
            self.opts.rollback_window,
        )
    }
}

impl Deployer {
    /// `deploy --release`: see the module documentation.
    pub async fn deploy(&self, release: &str, opts: &ReleaseOptions) -> Result<Deployed, Error> {
        self.deploy_target(DeployTarget::Release(release), opts)
            .await
    }

    /// `deploy --release` or `deploy --model` ([`DeployTarget`]).
    pub(super) async fn deploy_target(
        &self,
        target: DeployTarget<'_>,
        opts: &ReleaseOptions,
    ) -> Result<Deployed, Error> {
        let lock = LockOptions {
            enabled: true,
            timeout: opts.lock_timeout,
        };
        let result = self
            .locked("deploy", lock, async |_| {
                self.deploy_locked(target, opts).await
            })
            .await;
        match &result {
            Ok(d) => {
                self.history()
                    .record(Entry::new(
                        "deploy",
                        json!({ "release": d.release, "color": d.color, "instance": d.instance_id,
                                "previous": d.previous.as_ref().map(|p| json!({"color": p.0, "instance": p.1})) }),
                        "ok",
                    ))
                    .await
            }
            Err(e) => {
                self.history()
                    .record(Entry::new("deploy", target.describe(), failed(&e.to_string())))
                    .await
            }
        }
        let d = result?;
        if opts.wait_window && d.previous.is_some() {
            tracing::info!(
                "keeping the previous colour for the rollback window ({}s)",
                opts.rollback_window.as_secs_f64()
            );
            tokio::time::sleep(opts.rollback_window).await;
            let retired = self
                .retire(opts.lock_timeout.max(Duration::from_secs(30)))
                .await?;
            return Ok(Deployed { retired, ..d });
        }
        Ok(d)
    }

    async fn deploy_locked(
        &self,
        target: DeployTarget<'_>,
        opts: &ReleaseOptions,
    ) -> Result<Deployed, Error> {
        let store = self.store();
        let mut state = store.read(&self.cfg.app).await?;
        let ids = StackIds::of(&state)?;
        let nlb = match self.cfg.front {
            Front::Nlb => {
                let bal = Balancer::of(&self.clients, &state)?;
                self.settle_weights(&store, &mut state, &bal).await?;
                Some(bal)
            }
            Front::Eip if opts.canary.is_some() => {
                return Err(ReleaseError::CanaryNeedsNlb.into());
            }
            Front::Eip => {
                self.settle_eip_move(&store, &mut state, &ids.allocation)
                    .await?;
                None
            }
        };
        let (release, manifest) = match self.resolve_target(&state, target).await? {
            Resolved::Deploy { release, manifest } => (release, manifest),
            Resolved::Serving(d) => return Ok(d),
        };
        let release = release.as_str();
        let active = state.release.eip_holder;
        let mut run = Run {
            d: self,
            release,
            opts,
            store,
            state,
            ids,
            manifest,
            active,
            idle: active.map(Color::other).unwrap_or(Color::Blue),
        };
        run.check_target()?;
        let ami = run.image().await?;
        if let Some(bal) = &nlb {
            return run.deploy_nlb(&ami, bal).await;
        }
        run.replace_idle().await?;
        let id = run.launch(&ami).await?;
        let https = match run.wait_and_gate(&id).await {
            Ok(h) => h,
            Err(e) => return Err(run.abandon(id, e).await),
        };
        let previous = run.move_and_record(&id).await?;
        let model = run.manifest.model_version.as_deref();
        self.verify_front(&run.state, release, model, opts).await?;
        self.https_after_move(
            &https,
            &opts.endpoints,
            opts.rollback_window,
            opts.health_deadline,
            opts.probe_interval,
        )
        .await
        .map_err(not_verified(release))?;
        Ok(Deployed {
            release: release.into(),
            color: run.idle,
            instance_id: id,
            previous,
            retired: Vec::new(),
        })
    }
}
