//! Blue/green releases: `deploy`, `rollback`, `status`, and retiring the old colour
//! after the rollback window.
//!
//! deploy: idle colour ← new instance → running → health gate (readiness + version
//! report the expected release and model, within a deadline) → guarded Elastic IP move
//! (DescribeAddresses must show it where the state says; AssociateAddress with
//! AllowReassociation=true) → verify through the fixed address → keep the old colour
//! until `retire_after`, then terminate it. Any failure before the move terminates the
//! new instance and leaves the old one holding the address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use serde_json::json;

use crate::aws::{AwsError, Clients};
use crate::health::{self, Endpoints, ProbeError};
use crate::history::{Entry, History};
use crate::instances::{self, LaunchSpec};
use crate::publish::{self, Manifest, PublishError};
use crate::stack::Kind;
use crate::state::{Color, InstanceRecord, ReleaseEvent, State};
use crate::{Deployer, Error, LockOptions};

/// The boot script template and the unit it installs.
pub const BOOT_TEMPLATE: &str = include_str!("../../userdata/boot.sh");
pub const UNIT_TEMPLATE: &str = include_str!("../../userdata/server.service");

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("{0} is not in the state: run `deployer apply` first")]
    NoStack(String),
    #[error(
        "the Elastic IP {allocation} is attached to {actual}, but the state says {expected}: it was moved outside the deployer; refusing to move it"
    )]
    EipMoved {
        allocation: String,
        expected: String,
        actual: String,
    },
    #[error("release {release} abandoned on {color} ({instance}): {why}; {kept}")]
    Abandoned {
        release: String,
        color: Color,
        instance: String,
        why: String,
        kept: String,
    },
    #[error(
        "release {release} took the Elastic IP but does not answer through the fixed address: {why}; run `deployer rollback`"
    )]
    NotVerified { release: String, why: String },
    #[error("nothing to roll back to: {0}")]
    NoRollback(String),
    #[error("instance {id} did not reach running: {why}")]
    NotRunning { id: String, why: String },
    #[error("{what} {value:?} cannot go into user data")]
    BadValue { what: &'static str, value: String },
}

/// How a release operation runs.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub endpoints: Endpoints,
    /// How long the new colour has to become healthy (also: through the fixed address).
    pub health_deadline: Duration,
    pub probe_interval: Duration,
    /// How long the old colour stays alive for a rollback.
    pub rollback_window: Duration,
    /// Wait out the window and terminate the old colour before returning.
    pub wait_window: bool,
    pub lock_timeout: Duration,
    /// How long presigned download URLs in user data stay valid.
    pub url_lifetime: Duration,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            endpoints: Endpoints::default(),
            health_deadline: Duration::from_secs(300),
            probe_interval: Duration::from_secs(2),
            rollback_window: Duration::from_secs(600),
            wait_window: true,
            lock_timeout: Duration::ZERO,
            url_lifetime: Duration::from_secs(900),
        }
    }
}

/// What a deploy or rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub release: String,
    pub color: Color,
    pub instance_id: String,
    /// The colour that held the address before, kept for the window.
    pub previous: Option<(Color, String)>,
    /// Terminated after the window (when waited for).
    pub retired: Vec<String>,
}

/// One colour in `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColorStatus {
    pub color: Color,
    pub instance_id: String,
    pub release: String,
    pub model_version: Option<String>,
    pub state: String,
    /// `healthy`, or why not (or why it was not probed).
    pub health: String,
    pub retire_after: Option<chrono::DateTime<chrono::Utc>>,
}

/// `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub active: Option<Color>,
    pub eip_public_ip: Option<String>,
    /// The instance DescribeAddresses shows holding the address.
    pub eip_instance: Option<String>,
    /// Its colour, when it is one of ours.
    pub eip_color: Option<Color>,
    pub colors: Vec<ColorStatus>,
    pub last: Option<ReleaseEvent>,
}

fn resource_id(state: &State, kind: Kind) -> Result<String, ReleaseError> {
    let addr = kind.address();
    state
        .resources
        .get(&addr)
        .map(|r| r.id.clone())
        .ok_or(ReleaseError::NoStack(addr))
}

/// The Elastic IP as DescribeAddresses reports it: (public IP, holding instance).
pub async fn eip_holder(
    clients: &Clients,
    allocation: &str,
) -> Result<(Option<String>, Option<String>), AwsError> {
    let out = clients
        .ec2
        .describe_addresses()
        .allocation_ids(allocation)
        .send()
        .await
        .map_err(|e| AwsError::new("aws_eip.api", "DescribeAddresses", e))?;
    let Some(a) = out.addresses().first() else {
        return Err(AwsError::other(
            "aws_eip.api",
            "DescribeAddresses",
            format!("no address {allocation}"),
        ));
    };
    Ok((
        a.public_ip().map(str::to_string),
        a.instance_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    ))
}

/// State and public IP of one instance (`None`: gone).
pub async fn describe(
    clients: &Clients,
    id: &str,
) -> Result<Option<(String, Option<IpAddr>)>, AwsError> {
    let res = clients
        .ec2
        .describe_instances()
        .instance_ids(id)
        .send()
        .await;
    let out = match res {
        Ok(o) => o,
        Err(e) if crate::stack::is_not_found(crate::aws::code_of(&e)) => return Ok(None),
        Err(e) => {
            return Err(AwsError::new(
                format!("aws_instance ({id})"),
                "DescribeInstances",
                e,
            ));
        }
    };
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .map(|i| {
            (
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                i.public_ip_address().and_then(|p| p.parse().ok()),
            )
        }))
}

async fn wait_running(
    clients: &Clients,
    id: &str,
    deadline: Duration,
) -> Result<Option<IpAddr>, Error> {
    let start = Instant::now();
    loop {
        match describe(clients, id).await? {
            Some((s, ip)) if s == InstanceStateName::Running.as_str() => return Ok(ip),
            Some((s, _)) if s == "pending" => {}
            other => {
                return Err(ReleaseError::NotRunning {
                    id: id.into(),
                    why: format!("state {:?}", other.map(|o| o.0)),
                }
                .into());
            }
        }
        if start.elapsed() > deadline {
            return Err(ReleaseError::NotRunning {
                id: id.into(),
                why: format!("still pending after {}s", deadline.as_secs()),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn tame(what: &'static str, v: &str, extra: &str) -> Result<(), ReleaseError> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
    {
        Ok(())
    } else {
        Err(ReleaseError::BadValue {
            what,
            value: v.to_string(),
        })
    }
}

/// Values that go into the boot script.
#[derive(Debug, Clone)]
pub struct BootValues<'a> {
    pub release: &'a str,
    pub model_uri: &'a str,
    pub api_port: u16,
    pub server_url: &'a str,
    pub server_sha256: &'a str,
}

/// Renders `userdata/boot.sh` (with `userdata/server.service` inside). Every value is
/// checked to be free of shell metacharacters first.
pub fn render_user_data(v: &BootValues<'_>) -> Result<String, ReleaseError> {
    tame("release", v.release, "")?;
    tame("model", v.model_uri, ":/@")?;
    tame("server URL", v.server_url, ":/?&=%+")?;
    tame("sha256", v.server_sha256, "")?;
    let unit = UNIT_TEMPLATE.trim_end();
    Ok(BOOT_TEMPLATE
        .replace("@SERVICE_UNIT@", unit)
        .replace("@RELEASE@", v.release)
        .replace("@MODEL_URI@", v.model_uri)
        .replace("@API_PORT@", &v.api_port.to_string())
        .replace("@SERVER_URL@", v.server_url)
        .replace("@SERVER_SHA256@", v.server_sha256))
}

fn failed(why: &str) -> String {
    format!("failed: {why}")
}

impl Deployer {
    pub fn history(&self) -> History {
        History::new(&self.clients, &self.cfg.state.bucket, &self.cfg.state.key)
    }

    fn model_uri(&self, m: &Manifest) -> String {
        let base = format!("s3://{}/models", self.cfg.artifacts.bucket);
        match &m.model_version {
            Some(v) => format!("{base}@{v}"),
            None => base,
        }
    }

    /// The rendered boot script for release manifest `m` (presigned URLs valid for `lifetime`).
    pub async fn user_data(&self, m: &Manifest, lifetime: Duration) -> Result<String, Error> {
        let file = m.files.iter().find(|f| f.name == "server").ok_or_else(|| {
            ReleaseError::Publish(PublishError::BadManifest {
                bucket: self.cfg.artifacts.bucket.clone(),
                key: publish::manifest_key(&m.release),
                detail: "no server file".into(),
            })
        })?;
        let key = format!("{}server", publish::prefix(&m.release));
        let url = format!("s3://{}/{key}", self.cfg.artifacts.bucket);
        let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(lifetime)
            .map_err(|e| AwsError::other(&url, "GetObject", e.to_string()))?;
        let presigned = self
            .clients
            .s3
            .get_object()
            .bucket(&self.cfg.artifacts.bucket)
            .key(&key)
            .presigned(cfg)
            .await
            .map_err(|e| AwsError::new(&url, "GetObject", e))?;
        Ok(render_user_data(&BootValues {
            release: &m.release,
            model_uri: &self.model_uri(m),
            api_port: self.cfg.api_port,
            server_url: presigned.uri(),
            server_sha256: &file.sha256,
        })?)
    }

    /// `deploy --release`: see the module documentation.
    pub async fn deploy(&self, release: &str, opts: &ReleaseOptions) -> Result<Deployed, Error> {
        let lock = LockOptions {
            enabled: true,
            timeout: opts.lock_timeout,
        };
        let result = self
            .locked("deploy", lock, async |_| {
                self.deploy_locked(release, opts).await
            })
            .await;
        let what = json!({ "release": release });
        match &result {
            Ok(d) => {
                self.history()
                    .record(Entry::new(
                        "deploy",
                        json!({ "release": release, "color": d.color, "instance": d.instance_id,
                                "previous": d.previous.as_ref().map(|p| json!({"color": p.0, "instance": p.1})) }),
                        "ok",
                    ))
                    .await
            }
            Err(e) => {
                self.history()
                    .record(Entry::new("deploy", what, failed(&e.to_string())))
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

    async fn deploy_locked(&self, release: &str, opts: &ReleaseOptions) -> Result<Deployed, Error> {
        let store = self.store();
        let mut state = store.read(&self.cfg.app).await?;
        let subnet = resource_id(&state, Kind::Subnet)?;
        let sg = resource_id(&state, Kind::SecurityGroup)?;
        let profile = resource_id(&state, Kind::InstanceProfile)?;
        let allocation = resource_id(&state, Kind::Eip)?;
        let manifest = publish::read_manifest(&self.clients, &self.cfg.artifacts.bucket, release)
            .await
            .map_err(ReleaseError::from)?;
        let active = state.release.eip_holder;
        let idle = active.map(Color::other).unwrap_or(Color::Blue);
        // The probe target is checked before anything is launched.
        if let Some(t) = opts.endpoints.colors.get(&idle) {
            tracing::info!(color = %idle, target = %t, "health gate target (override)");
        } else if !opts.endpoints.allow_public {
            return Err(ReleaseError::Probe(ProbeError::NotLoopback {
                target: format!("the {idle} instance's own address"),
            })
            .into());
        }
        // The idle colour may still hold the previous release in its window: a new
        // deploy replaces it.
        if let Some(old) = state.release.instances.get(&idle).cloned() {
            tracing::info!(color = %idle, instance = %old.instance_id, "replacing the idle colour's instance");
            instances::terminate(&self.clients, &old.instance_id, Duration::from_secs(600)).await?;
            state.release.instances.remove(&idle);
            store.write(&mut state).await?;
        }
        let ami = instances::resolve_ami(&self.clients, &self.cfg.ami.selector()).await?;
        let user_data = self.user_data(&manifest, opts.url_lifetime).await?;
        let id = instances::launch_instance(
            &self.clients,
            &LaunchSpec {
                cfg: &self.cfg,
                ami: &ami,
                subnet_id: &subnet,
                security_group_id: &sg,
                instance_profile: &profile,
                user_data: &user_data,
                color: idle,
                release,
            },
        )
        .await?;
        tracing::info!(color = %idle, instance = %id, release, "launched");
        state.release.instances.insert(
            idle,
            InstanceRecord {
                instance_id: id.clone(),
                release: release.to_string(),
                ami: ami.id.clone(),
                launched_at: chrono::Utc::now(),
                model_version: manifest.model_version.clone(),
                retire_after: None,
            },
        );
        store.write(&mut state).await?;

        // Everything up to the move: on failure, abandon the new instance.
        let before_move = async {
            let ip = wait_running(
                &self.clients,
                &id,
                opts.health_deadline.max(Duration::from_secs(60)),
            )
            .await?;
            let target = opts
                .endpoints
                .for_color(idle, ip, self.cfg.api_port)
                .map_err(ReleaseError::from)?;
            tracing::info!(%target, "health gate: waiting for readiness and version");
            health::gate(
                target,
                release,
                manifest.model_version.as_deref(),
                opts.health_deadline,
                opts.probe_interval,
            )
            .await
            .map_err(|why| {
                Error::Release(ReleaseError::NotRunning {
                    id: id.clone(),
                    why,
                })
            })?;
            tracing::info!("health gate passed");
            self.guard_eip(&state, &allocation).await
        };
        if let Err(e) = before_move.await {
            let why = match &e {
                Error::Release(ReleaseError::NotRunning { why, .. }) => why.clone(),
                other => other.to_string(),
            };
            tracing::warn!("abandoning {release}: {why}");
            let kept = match active.and_then(|c| state.release.instances.get(&c)) {
                Some(r) => format!("{} ({}) keeps the Elastic IP", r.instance_id, r.release),
                None => "no instance holds the Elastic IP".into(),
            };
            let term = instances::terminate(&self.clients, &id, Duration::from_secs(600)).await;
            state.release.instances.remove(&idle);
            state.release.last = Some(ReleaseEvent {
                operation: "deploy".into(),
                release: release.into(),
                at: chrono::Utc::now(),
                outcome: failed(&why),
            });
            store.write(&mut state).await?;
            term?;
            return Err(ReleaseError::Abandoned {
                release: release.into(),
                color: idle,
                instance: id,
                why,
                kept,
            }
            .into());
        }

        self.move_eip(&allocation, &id).await?;
        let previous = active.and_then(|c| {
            state
                .release
                .instances
                .get(&c)
                .map(|r| (c, r.instance_id.clone()))
        });
        state.release.eip_holder = Some(idle);
        if let Some(a) = active
            && let Some(r) = state.release.instances.get_mut(&a)
        {
            r.retire_after = Some(chrono::Utc::now() + opts.rollback_window);
        }
        state.release.last = Some(ReleaseEvent {
            operation: "deploy".into(),
            release: release.into(),
            at: chrono::Utc::now(),
            outcome: "ok".into(),
        });
        store.write(&mut state).await?;
        tracing::info!(color = %idle, instance = %id, "the Elastic IP moved");

        self.verify_fixed(
            &allocation,
            release,
            manifest.model_version.as_deref(),
            opts,
        )
        .await?;
        Ok(Deployed {
            release: release.into(),
            color: idle,
            instance_id: id,
            previous,
            retired: Vec::new(),
        })
    }

    async fn verify_fixed(
        &self,
        allocation: &str,
        release: &str,
        model: Option<&str>,
        opts: &ReleaseOptions,
    ) -> Result<(), Error> {
        let fixed = match opts.endpoints.fixed {
            Some(f) => f,
            // Production: the Elastic IP itself, on the API port.
            None if opts.endpoints.allow_public => {
                let (ip, _) = eip_holder(&self.clients, allocation).await?;
                let Some(ip) = ip.and_then(|i| i.parse::<IpAddr>().ok()) else {
                    return Err(ReleaseError::NotVerified {
                        release: release.into(),
                        why: "the Elastic IP has no public address".into(),
                    }
                    .into());
                };
                health::Target::new(std::net::SocketAddr::new(ip, self.cfg.api_port), true)
                    .map_err(ReleaseError::from)?
            }
            None => {
                tracing::warn!(
                    "no fixed endpoint given (--fixed-endpoint): not verifying through the Elastic IP"
                );
                return Ok(());
            }
        };
        health::gate(
            fixed,
            release,
            model,
            opts.health_deadline,
            opts.probe_interval,
        )
        .await
        .map_err(|why| ReleaseError::NotVerified {
            release: release.into(),
            why,
        })?;
        tracing::info!(%fixed, "verified through the fixed address");
        Ok(())
    }

    /// The address must be where the state says (or nowhere, before the first deploy).
    async fn guard_eip(&self, state: &State, allocation: &str) -> Result<(), Error> {
        let (_, actual) = eip_holder(&self.clients, allocation).await?;
        let expected = state
            .release
            .eip_holder
            .and_then(|c| state.release.instances.get(&c))
            .map(|r| r.instance_id.clone());
        if actual != expected {
            return Err(ReleaseError::EipMoved {
                allocation: allocation.into(),
                expected: expected.unwrap_or_else(|| "no instance".into()),
                actual: actual.unwrap_or_else(|| "no instance".into()),
            }
            .into());
        }
        Ok(())
    }

    async fn move_eip(&self, allocation: &str, instance: &str) -> Result<(), Error> {
        self.clients
            .ec2
            .associate_address()
            .allocation_id(allocation)
            .instance_id(instance)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| AwsError::new("aws_eip.api", "AssociateAddress", e))?;
        let (_, now) = eip_holder(&self.clients, allocation).await?;
        if now.as_deref() != Some(instance) {
            return Err(AwsError::other(
                "aws_eip.api",
                "AssociateAddress",
                format!("DescribeAddresses shows {now:?} after moving it to {instance}"),
            )
            .into());
        }
        Ok(())
    }

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
                let now = chrono::Utc::now();
                let due: Vec<(Color, String)> = state
                    .release
                    .instances
                    .iter()
                    .filter(|(c, r)| {
                        Some(**c) != state.release.eip_holder
                            && r.retire_after.is_some_and(|t| t <= now)
                    })
                    .map(|(c, r)| (*c, r.instance_id.clone()))
                    .collect();
                for (c, id) in &due {
                    tracing::info!(color = %c, instance = %id, "rollback window over: terminating");
                    instances::terminate(&self.clients, id, Duration::from_secs(600)).await?;
                    state.release.instances.remove(c);
                    store.write(&mut state).await?;
                }
                Ok(due.into_iter().map(|d| d.1).collect::<Vec<_>>())
            })
            .await?;
        if !retired.is_empty() {
            self.history()
                .record(Entry::new("retire", json!({ "instances": retired }), "ok"))
                .await;
        }
        Ok(retired)
    }

    /// `rollback`: the address back to the previous colour if it is alive and healthy,
    /// else a redeploy of the previous release.
    pub async fn rollback(&self, opts: &ReleaseOptions) -> Result<Deployed, Error> {
        let lock = LockOptions {
            enabled: true,
            timeout: opts.lock_timeout,
        };
        enum Next {
            Done(Deployed),
            Redeploy(String, String),
        }
        let result = self
            .locked("rollback", lock, async |_| {
                let store = self.store();
                let mut state = store.read(&self.cfg.app).await?;
                let allocation = resource_id(&state, Kind::Eip)?;
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
                let alive = describe(&self.clients, &rec.instance_id).await?;
                let healthy = match &alive {
                    Some((s, ip)) if s == "running" => {
                        match opts.endpoints.for_color(prev, *ip, self.cfg.api_port) {
                            Ok(t) => health::gate(
                                t,
                                &rec.release,
                                rec.model_version.as_deref(),
                                opts.health_deadline,
                                opts.probe_interval,
                            )
                            .await
                            .map(|_| ()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    other => Err(format!("instance state {:?}", other.as_ref().map(|o| &o.0))),
                };
                if let Err(why) = healthy {
                    tracing::warn!(color = %prev, "previous colour not usable ({why}): redeploying {}", rec.release);
                    return Ok(Next::Redeploy(rec.release.clone(), why));
                }
                self.guard_eip(&state, &allocation).await?;
                self.move_eip(&allocation, &rec.instance_id).await?;
                let current = state.release.instances.get(&active).map(|r| r.instance_id.clone());
                state.release.eip_holder = Some(prev);
                if let Some(r) = state.release.instances.get_mut(&prev) {
                    r.retire_after = None;
                }
                if let Some(r) = state.release.instances.get_mut(&active) {
                    r.retire_after = Some(chrono::Utc::now() + opts.rollback_window);
                }
                state.release.last = Some(ReleaseEvent {
                    operation: "rollback".into(),
                    release: rec.release.clone(),
                    at: chrono::Utc::now(),
                    outcome: "ok".into(),
                });
                store.write(&mut state).await?;
                self.verify_fixed(&allocation, &rec.release, rec.model_version.as_deref(), opts).await?;
                Ok(Next::Done(Deployed {
                    release: rec.release,
                    color: prev,
                    instance_id: rec.instance_id,
                    previous: current.map(|c| (active, c)),
                    retired: Vec::new(),
                }))
            })
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

    /// `status`: the state, DescribeAddresses and a probe of each colour.
    pub async fn status(&self, endpoints: &Endpoints) -> Result<Status, Error> {
        let state = self.read_state().await?;
        let (eip_public_ip, eip_instance) = match state.resources.get(&Kind::Eip.address()) {
            Some(r) => eip_holder(&self.clients, &r.id).await?,
            None => (None, None),
        };
        let mut colors = Vec::new();
        let mut eip_color = None;
        for (c, r) in &state.release.instances {
            if eip_instance.as_deref() == Some(r.instance_id.as_str()) {
                eip_color = Some(*c);
            }
            let d = describe(&self.clients, &r.instance_id).await?;
            let health = match &d {
                Some((s, ip)) if s == "running" => {
                    match endpoints.for_color(*c, *ip, self.cfg.api_port) {
                        Ok(t) => match health::check(
                            t,
                            &r.release,
                            r.model_version.as_deref(),
                            Duration::from_secs(3),
                        )
                        .await
                        {
                            Ok(_) => "healthy".to_string(),
                            Err(why) => why,
                        },
                        Err(e) => format!("not probed: {e}"),
                    }
                }
                Some((s, _)) => format!("not running ({s})"),
                None => "gone".into(),
            };
            colors.push(ColorStatus {
                color: *c,
                instance_id: r.instance_id.clone(),
                release: r.release.clone(),
                model_version: r.model_version.clone(),
                state: d.map(|d| d.0).unwrap_or_else(|| "gone".into()),
                health,
                retire_after: r.retire_after,
            });
        }
        Ok(Status {
            active: state.release.eip_holder,
            eip_public_ip,
            eip_instance,
            eip_color,
            colors,
            last: state.release.last,
        })
    }
}

/// What `deploy --release` would do from `state`, in plan language (for
/// `deployer plan --release`).
pub fn cutover_preview(state: &State, release: &str, opts: &ReleaseOptions) -> String {
    let active = state.release.eip_holder;
    let idle = active.map(Color::other).unwrap_or(Color::Blue);
    let mut out = String::from("\nBlue/green cutover for release ");
    out.push_str(release);
    out.push_str(":\n");
    if let Some(old) = state.release.instances.get(&idle) {
        out.push_str(&format!(
            "  - aws_instance.{idle} ({}, release {}): replaced, it is the idle colour\n",
            old.instance_id, old.release
        ));
    }
    out.push_str(&format!(
        "  + aws_instance.{idle}: release {release}\n  ? health gate: /readyz ready and /version reporting {release} and the manifest's model, within {}s\n",
        opts.health_deadline.as_secs()
    ));
    match active.and_then(|c| state.release.instances.get(&c).map(|r| (c, r))) {
        Some((c, r)) => out.push_str(&format!(
            "  ~ aws_eip.api: {c} ({}, release {}) -> {idle} (new instance)\n  - aws_instance.{c} ({}): terminated after the {}s rollback window\n",
            r.instance_id,
            r.release,
            r.instance_id,
            opts.rollback_window.as_secs()
        )),
        None => out.push_str(&format!("  ~ aws_eip.api: (none) -> {idle} (new instance)\n")),
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_data_renders_every_placeholder_and_refuses_shell_metacharacters() {
        let v = BootValues {
            release: "abc123",
            model_uri: "s3://b/models@20260101",
            api_port: 8080,
            server_url: "http://127.0.0.1:5000/b/releases/abc123/server?X-Amz-Signature=ff&a=b%2F",
            server_sha256: "00ff",
        };
        let text = render_user_data(&v).unwrap_or_default();
        assert!(
            !text.contains("@RELEASE@") && !text.contains("@SERVICE_UNIT@"),
            "{text}"
        );
        assert!(text.contains("RELEASE=\"abc123\""));
        assert!(text.contains("ExecStart=/opt/churn-api/current/server"));
        for bad in ["$(reboot)", "a\"b", "a b", "a;b", "`x`"] {
            assert!(
                render_user_data(&BootValues {
                    release: bad,
                    ..v.clone()
                })
                .is_err()
            );
            assert!(
                render_user_data(&BootValues {
                    server_url: bad,
                    ..v.clone()
                })
                .is_err()
            );
        }
    }
}
