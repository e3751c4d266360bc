//! The deployer: provisions the AWS stack through the SDK, keeps its state in S3 under a
//! lock, prints Terraform-style plans and applies them.
//!
//! * [`config`] — `deploy.toml`.
//! * [`state`] — the state document in S3 (serial, lineage, resources, blue/green part).
//! * [`lock`] — the lease lock (DynamoDB or S3 conditional writes).
//! * [`stack`] — the resources, how each is read, created, updated and deleted.
//! * [`plan`] — refresh, diff, render; [`engine`]: apply in dependency order.
//! * [`instances`] — AMI resolution and the instance launch used by releases.
//! * [`init`] — the state bucket and the lock table.
//! * [`github`] — the plan comment on pull requests.
//! * [`publish`] — release bundles in the artifact bucket; [`release`]: blue/green
//!   deploy, rollback, status; [`health`]: the loopback-only health probes;
//!   [`history`]: the append-only audit log; [`forwarder`]: the local Elastic IP.
//!
//! # Cargo features
//!
//! * `test-hooks` (off by default) — lets the environment stop or slow an apply for
//!   the crash and lock tests: `DEPLOYER_FAULT=<point>` parks the process at that point
//!   (e.g. `after-create:aws_subnet.main`, see [`engine::fault_point`]) and
//!   `DEPLOYER_STEP_DELAY_MS` sleeps before every step. Without the feature neither
//!   variable is read. This crate's tests enable it through a dev-dependency on the
//!   crate itself, so the `deployer` binary `cargo test` builds has it and the one
//!   `cargo build` (debug or `--release`) builds does not.

pub mod aws;
pub mod cert;
pub mod config;
pub mod engine;
pub mod forwarder;
pub mod github;
pub mod health;
pub mod history;
pub mod init;
pub mod instances;
pub mod lock;
pub mod plan;
pub mod publish;
pub mod release;
pub mod stack;
pub mod state;
pub mod target;

use std::time::Duration;

use crate::aws::Clients;
use crate::config::Config;
use crate::lock::{LockError, LockGuard, Locker};
use crate::plan::{Operation, Plan};
use crate::stack::Stack;
use crate::state::{State, StateStore};

pub use crate::aws::AwsError;
pub use crate::config::ConfigError;
pub use crate::state::StateError;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A saved plan that no longer fits.
    #[error("the saved plan cannot be applied: {0}")]
    StalePlan(String),
    #[error("the operation was not confirmed: {0}")]
    NotConfirmed(String),
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
}

/// What `apply`/`destroy` ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    /// `None` when there was nothing to do or it was not confirmed.
    pub applied: Option<engine::Applied>,
}

/// How to take the lock.
#[derive(Debug, Clone, Copy)]
pub struct LockOptions {
    /// Take it at all (`plan` can run without).
    pub enabled: bool,
    /// How long to wait for another holder.
    pub timeout: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            enabled: true,
            timeout: Duration::ZERO,
        }
    }
}

/// The deployer for one configuration.
#[derive(Debug, Clone)]
pub struct Deployer {
    pub cfg: Config,
    pub clients: Clients,
}

impl Deployer {
    pub fn new(cfg: Config, clients: Clients) -> Deployer {
        Deployer { cfg, clients }
    }

    pub fn store(&self) -> StateStore {
        StateStore::new(&self.clients, &self.cfg.state.bucket, &self.cfg.state.key)
    }

    pub fn locker(&self) -> Locker {
        Locker::new(&self.clients, &self.cfg)
    }

    pub fn stack(&self) -> Stack<'_> {
        Stack::new(&self.cfg, &self.clients)
    }

    pub async fn init(&self) -> Result<init::InitReport, Error> {
        Ok(init::init(&self.clients, &self.cfg).await?)
    }

    /// Runs `f` under the lock (if enabled), releasing it whatever `f` returns.
    async fn locked<T, F>(&self, operation: &str, opts: LockOptions, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(Option<&LockGuard>) -> Result<T, Error>,
    {
        if !opts.enabled {
            return f(None).await;
        }
        let guard = self.locker().acquire(operation, opts.timeout).await?;
        let result = f(Some(&guard)).await;
        if let Err(e) = guard.release().await {
            tracing::warn!("releasing the lock: {e}");
        }
        result
    }

    /// Reads state and reality, and plans (`destroy`: the removal of everything).
    pub async fn plan(&self, operation: Operation, lock: LockOptions) -> Result<Plan, Error> {
        self.locked("plan", lock, async |_| {
            let state = self.store().read(&self.cfg.app).await?;
            let (plan, _) = self.make_plan(operation, &state).await?;
            Ok(plan)
        })
        .await
    }

    async fn make_plan(
        &self,
        operation: Operation,
        state: &State,
    ) -> Result<(Plan, Vec<plan::Observed>), Error> {
        let stack = self.stack();
        let observed = engine::observe(&stack, state).await?;
        let plan = match operation {
            Operation::Apply => plan::diff(&self.cfg, state, &observed),
            Operation::Destroy => {
                let inst = engine::instances_to_destroy(&self.clients, &stack, state).await?;
                plan::destroy_plan(&self.cfg, state, &observed, &inst)
            }
        };
        Ok((plan, observed))
    }

    /// `apply` / `destroy`: lock, plan (or check the saved plan), show it, ask
    /// `confirm`, carry it out. `confirm` sees the plan and says whether to go on.
    pub async fn apply(
        &self,
        operation: Operation,
        saved: Option<Plan>,
        lock_timeout: Duration,
        confirm: &mut (dyn FnMut(&Plan) -> Result<bool, Error> + Send),
    ) -> Result<Outcome, Error> {
        let opts = LockOptions {
            enabled: true,
            timeout: lock_timeout,
        };
        let op_name = match operation {
            Operation::Apply => "apply",
            Operation::Destroy => "destroy",
        };
        let result = self
            .locked(op_name, opts, async |guard| {
                let Some(guard) = guard else {
                    return Err(Error::StalePlan("no lock".into()));
                };
                let store = self.store();
                let mut state = store.read(&self.cfg.app).await?;
                if let Some(saved) = &saved {
                    check_saved(saved, &state, &self.cfg)?;
                }
                let (plan, observed) = self.make_plan(operation, &state).await?;
                if let Some(saved) = &saved
                    && !saved.same_changes(&plan)
                {
                    return Err(Error::StalePlan(
                        "the real resources changed since it was made; run `deployer plan` again"
                            .into(),
                    ));
                }
                if !plan.has_changes() {
                    confirm(&plan)?;
                    return Ok(Outcome {
                        plan,
                        applied: None,
                    });
                }
                if !confirm(&plan)? {
                    return Err(Error::NotConfirmed(format!("{op_name} cancelled")));
                }
                let applied =
                    engine::apply(&self.stack(), &store, guard, &mut state, &plan, &observed)
                        .await?;
                Ok(Outcome {
                    plan,
                    applied: Some(applied),
                })
            })
            .await;
        // Only what touched (or tried to touch) resources goes into the audit log.
        let entry = match &result {
            Ok(Outcome {
                applied: Some(a), ..
            }) => Some(history::Entry::new(
                op_name,
                serde_json::json!({"added": a.added, "changed": a.changed, "destroyed": a.destroyed}),
                "ok",
            )),
            Ok(_) => None,
            Err(Error::NotConfirmed(_)) | Err(Error::Lock(_)) | Err(Error::StalePlan(_)) => None,
            Err(e) => Some(history::Entry::new(
                op_name,
                serde_json::json!({}),
                format!("failed: {e}"),
            )),
        };
        if let Some(e) = entry {
            self.history().record(e).await;
        }
        result
    }

    /// Removes the lock with id `id` (and only that one).
    pub async fn force_unlock(&self, id: &str) -> Result<lock::LockInfo, Error> {
        let result = self.locker().force_unlock(id).await;
        let (what, outcome) = match &result {
            Ok(info) => (
                serde_json::json!({"lock_id": id, "holder": info.to_string()}),
                "ok".to_string(),
            ),
            Err(e) => (serde_json::json!({"lock_id": id}), format!("failed: {e}")),
        };
        self.history()
            .record(history::Entry::new("force-unlock", what, outcome))
            .await;
        Ok(result?)
    }

    pub async fn read_state(&self) -> Result<State, Error> {
        Ok(self.store().read(&self.cfg.app).await?)
    }
}

/// A saved plan fits only the state (lineage and serial) and configuration it was made
/// against.
pub fn check_saved(saved: &Plan, state: &State, cfg: &Config) -> Result<(), Error> {
    if saved.format != plan::PLAN_FORMAT {
        return Err(Error::StalePlan(format!(
            "plan format {} (this deployer reads {})",
            saved.format,
            plan::PLAN_FORMAT
        )));
    }
    if saved.app != cfg.app {
        return Err(Error::StalePlan(format!(
            "it was made for app {:?}, the configuration is for {:?}",
            saved.app, cfg.app
        )));
    }
    // A plan made before the first write has no lineage: only the serial can tell.
    if !saved.state_lineage.is_empty() && saved.state_lineage != state.lineage {
        return Err(Error::StalePlan(format!(
            "it was made against state lineage {}, the state's lineage is {}",
            saved.state_lineage, state.lineage
        )));
    }
    if saved.state_serial != state.serial {
        return Err(Error::StalePlan(format!(
            "the state moved since it was made (plan made at serial {}, state is at serial {}); run `deployer plan` again",
            saved.state_serial, state.serial
        )));
    }
    if saved.config_digest != plan::config_digest(cfg) {
        return Err(Error::StalePlan(
            "the configuration changed since it was made".into(),
        ));
    }
    Ok(())
}
