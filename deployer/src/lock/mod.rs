//! The state lock: a lease, held through DynamoDB or S3 conditional writes.
//!
//! * DynamoDB: item `LockID = <state bucket>/<state key>` with `ID`, `Operation`,
//!   `Who`, `Created`, `CIRun`, `Expires` (epoch ms). Acquired with a conditional put
//!   (`attribute_not_exists(LockID) OR Expires < :now`), renewed with a conditional
//!   update (`ID = :id`), released with a conditional delete (`ID = :id`).
//! * S3: object `<state key>.lock` in the state bucket, the same fields as JSON.
//!   Acquired with `If-None-Match: *`; an expired lease is taken over with `If-Match`
//!   on the expired object's ETag; renewals and the release use `If-Match` on our own
//!   ETag. Every step is a single conditional write, so two contenders never both win.
//!
//! The holder renews the lease from a background task every third of its length. A
//! holder that dies (SIGKILL, lost machine) stops renewing, and the lock frees itself
//! when the lease runs out. A holder whose renewal is refused (force-unlocked, or
//! expired and taken over) learns it through [`LockGuard::check`] and stops.

mod writes;

use writes::describe_current;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::aws::{AwsError, Clients};
use crate::config::{Config, LockBackend};
use crate::state::random_id;

/// Who holds the lock, for what, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The id `force-unlock` takes.
    pub id: String,
    /// `LockID`: `<state bucket>/<state key>`.
    pub path: String,
    /// `plan`, `apply`, `destroy`, `deploy`, ...
    pub operation: String,
    /// `user@host`.
    pub who: String,
    pub created: DateTime<Utc>,
    /// The CI run that holds it, if any (a URL).
    #[serde(default)]
    pub ci_run: Option<String>,
    /// End of the current lease.
    pub expires: DateTime<Utc>,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock id {}, held by {} for `{}` since {}",
            self.id,
            self.who,
            self.operation,
            self.created.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        if let Some(run) = &self.ci_run {
            write!(f, " (CI run {run})")?;
        }
        write!(
            f,
            ", lease until {}",
            self.expires.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state is locked: {0}. Retry later, wait with --lock-timeout, or if the holder is gone run `deployer force-unlock {id}`", id = .0.id
    )]
    Held(Box<LockInfo>),
    #[error("no lock with id {id} on {path} ({})", describe_current(.current.as_deref()))]
    NoSuchLock {
        id: String,
        path: String,
        current: Option<Box<LockInfo>>,
    },
    #[error(
        "the lock {id} on {path} was lost (force-unlocked, or its lease expired and was taken over): stopping"
    )]
    Lost { id: String, path: String },
    #[error("lock record on {path} is unreadable: {detail}")]
    Corrupt { path: String, detail: String },
    #[error(transparent)]
    Aws(#[from] AwsError),
}

#[derive(Debug, Clone)]
enum Backend {
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        key: String,
    },
}

/// Takes and frees the state lock.
#[derive(Debug, Clone)]
pub struct Locker {
    backend: Backend,
    path: String,
    lease: Duration,
}

/// The outcome of one attempt.
enum Attempt {
    /// Ours; the S3 backend remembers the ETag it wrote.
    Won(Option<String>),
    Held(LockInfo),
}

impl Locker {
    pub fn new(clients: &Clients, cfg: &Config) -> Locker {
        let backend = match cfg.lock.backend {
            LockBackend::Dynamodb => Backend::Dynamo {
                client: clients.dynamodb.clone(),
                table: cfg.lock.table.clone().unwrap_or_default(),
            },
            LockBackend::S3 => Backend::S3 {
                client: clients.s3.clone(),
                bucket: cfg.state.bucket.clone(),
                key: format!("{}.lock", cfg.state.key),
            },
        };
        Locker {
            backend,
            path: cfg.lock_id(),
            lease: Duration::from_secs(cfg.lock.lease_seconds),
        }
    }

    fn lease_delta(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::seconds(30))
    }

    fn resource(&self) -> String {
        match &self.backend {
            Backend::Dynamo { table, .. } => format!("lock {} in table {table}", self.path),
            Backend::S3 { bucket, key, .. } => format!("lock s3://{bucket}/{key}"),
        }
    }

    /// Takes the lock for `operation`, waiting up to `timeout` for a holder to let go.
    /// The returned guard renews the lease until released or dropped.
    pub async fn acquire(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> Result<LockGuard, LockError> {
        let start = std::time::Instant::now();
        let id = random_id();
        let created = Utc::now();
        let mut announced = false;
        loop {
            let info = LockInfo {
                id: id.clone(),
                path: self.path.clone(),
                operation: operation.to_string(),
                who: who(),
                created,
                ci_run: ci_run(),
                expires: Utc::now() + self.lease_delta(),
            };
            match self.try_acquire(&info).await? {
                Attempt::Won(etag) => {
                    tracing::info!(lock_id = %info.id, path = %self.path, "lock acquired");
                    return Ok(LockGuard::start(self.clone(), info, etag));
                }
                Attempt::Held(holder) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(LockError::Held(Box::new(holder)));
                    }
                    if !announced {
                        tracing::warn!("waiting for the state lock: {holder}");
                        announced = true;
                    }
                    let left = timeout - waited;
                    tokio::time::sleep(left.min(Duration::from_millis(500))).await;
                }
            }
        }
    }

    /// The current lock, if any (expired leases included, with their expiry).
    pub async fn current(&self) -> Result<Option<LockInfo>, LockError> {
        Ok(self.read().await?.map(|(info, _)| info))
    }

    /// Removes the lock if and only if its id is `id`.
    pub async fn force_unlock(&self, id: &str) -> Result<LockInfo, LockError> {
        let current = self.read().await?;
        let Some((info, etag)) = current else {
            return Err(LockError::NoSuchLock {
                id: id.to_string(),
                path: self.path.clone(),
                current: None,
            });
        };
        if info.id != id {
            return Err(LockError::NoSuchLock {
                id: id.to_string(),
                path: self.path.clone(),
                current: Some(Box::new(info)),
            });
        }
        if !self.delete(id, etag.as_deref()).await? {
            let current = self.read().await?.map(|(i, _)| Box::new(i));
            return Err(LockError::NoSuchLock {
                id: id.to_string(),
                path: self.path.clone(),
                current,
            });
        }
        Ok(info)
    }
}

/// `user@host`.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host}")
}

/// The GitHub Actions run this process belongs to, if any.
pub fn ci_run() -> Option<String> {
    let run = std::env::var("GITHUB_RUN_ID").ok()?;
    let repo = std::env::var("GITHUB_REPOSITORY").unwrap_or_default();
    let server = std::env::var("GITHUB_SERVER_URL").unwrap_or_else(|_| "https://github.com".into());
    Some(format!("{server}/{repo}/actions/runs/{run}"))
}

/// A held lock. Its lease is renewed in the background until [`LockGuard::release`]
/// (or drop, which stops renewing and lets the lease run out).
#[derive(Debug)]
pub struct LockGuard {
    info: LockInfo,
    locker: Locker,
    etag: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl LockGuard {
    fn start(locker: Locker, info: LockInfo, etag: Option<String>) -> LockGuard {
        let etag = Arc::new(Mutex::new(etag));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (locker, id, etag, lost) =
                (locker.clone(), info.id.clone(), etag.clone(), lost.clone());
            tokio::spawn(async move {
                let every = locker.lease / 3;
                let mut last_ok = std::time::Instant::now();
                loop {
                    tokio::time::sleep(every).await;
                    let mut tag = etag.lock().await;
                    match locker.renew(&id, &mut tag).await {
                        Ok(true) => last_ok = std::time::Instant::now(),
                        Ok(false) => {
                            tracing::error!(lock_id = %id, "the lock is no longer ours");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("renewing the lock: {e}");
                            if last_ok.elapsed() >= locker.lease {
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                }
            })
        };
        LockGuard {
            info,
            locker,
            etag,
            lost,
            renewer,
        }
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Fails once the lock is known to be lost; callers check before every change.
    pub fn check(&self) -> Result<(), LockError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(LockError::Lost {
                id: self.info.id.clone(),
                path: self.info.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Stops renewing and deletes the lock (only if it is still ours).
    pub async fn release(self) -> Result<(), LockError> {
        self.renewer.abort();
        let tag = self.etag.lock().await.clone();
        if !self.locker.delete(&self.info.id, tag.as_deref()).await? {
            tracing::warn!(lock_id = %self.info.id, "the lock was not ours any more at release");
        } else {
            tracing::info!(lock_id = %self.info.id, "lock released");
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
