//! When to renew (ARI window, else half the lifetime; backoff after failures) and the
//! [`Renewer`] loop: pick up, probe, lock, re-read, order, store, install.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::cert::{CertInfo, StoredCert};
use crate::store::TlsStore;

use super::*;

/// When to renew: a point `pick` (0..=1) into the ARI window when the CA gave one, else
/// half the lifetime; capped at `renew_before` ahead of expiry when set.
pub fn renewal_time(
    info: &CertInfo,
    ari_window: Option<(SystemTime, SystemTime)>,
    renew_before: Option<Duration>,
    pick: f64,
) -> SystemTime {
    let base = match ari_window {
        Some((start, end)) => match end.duration_since(start) {
            Ok(w) => start + w.mul_f64(pick.clamp(0.0, 1.0)),
            Err(_) => start,
        },
        None => info.not_before + info.lifetime() / 2,
    };
    match renew_before {
        Some(b) => {
            // Never before not_before: a window longer than the lifetime means "now".
            let latest = info
                .not_after
                .checked_sub(b)
                .map_or(info.not_before, |t| t.max(info.not_before));
            base.min(latest)
        }
        None => base,
    }
}

/// The wait after `failures` consecutive failures: `min`, doubling, capped at `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    min.saturating_mul(1u32 << exp).min(max)
}

/// What the renewer tells its host (the server maps these to the resolver and metrics).
pub trait RenewalObserver: Send + Sync {
    /// A certificate to serve from now on (issued here or picked up from the bucket).
    fn install(&self, cert: &StoredCert, info: &CertInfo);
    /// One renewal attempt ended (`ok`: a certificate was issued and stored).
    fn renewal(&self, ok: bool);
}

/// How the renewer paces itself.
#[derive(Debug, Clone)]
pub struct RenewerConfig {
    /// How often to look at the bucket and the clock.
    pub check_interval: Duration,
    /// Renew at the latest this long before expiry (also how long a certificate must
    /// stay valid for a rollback); `None`: only the ARI window or half the lifetime.
    pub renew_before: Option<Duration>,
    /// How long the renewal lock is held at most (an issuance must fit in it).
    pub lock_ttl: Duration,
    /// This process's name in the lock.
    pub owner: String,
    /// First and largest wait after a failed attempt (300 s and 3600 s by default).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Before ordering, check that `http://<ip>:<port>` reaches this process's own
    /// challenge responder ([`answers_at`]): only the holder of the address can pass
    /// HTTP-01, and every failed validation counts against the CA's rate limits. `None`:
    /// no check.
    pub probe_port: Option<u16>,
}

impl RenewerConfig {
    pub fn new(owner: impl Into<String>) -> RenewerConfig {
        RenewerConfig {
            check_interval: Duration::from_secs(3600),
            renew_before: None,
            lock_ttl: Duration::from_secs(600),
            owner: owner.into(),
            // 5, 10, 20, 40 min, then hourly: at most 4 failed orders in the first
            // hour, inside Let's Encrypt's 5 failed authorizations per address and
            // account per hour.
            retry_min: Duration::from_secs(300),
            retry_max: Duration::from_secs(3600),
            probe_port: None,
        }
    }
}

/// What one renewal step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing due.
    NotDue,
    /// Another process holds the renewal lock.
    Busy,
    /// Due, but the address does not reach this process (another colour holds it).
    NotHolder,
    /// Another process had already stored a newer certificate; installed that one.
    PickedUp { serial: String },
    /// Issued, stored and installed a new certificate.
    Renewed { serial: String },
}

/// Keeps a certificate for one IP valid: see the module documentation.
pub struct Renewer {
    cfg: AcmeConfig,
    rcfg: RenewerConfig,
    store: TlsStore,
    challenges: Challenges,
    observer: Arc<dyn RenewalObserver>,
    acme: tokio::sync::OnceCell<Acme>,
    current: tokio::sync::Mutex<Option<Current>>,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("cfg", &self.cfg)
            .field("rcfg", &self.rcfg)
            .finish_non_exhaustive()
    }
}

struct Current {
    cert: StoredCert,
    info: CertInfo,
    /// When to renew it (ARI looked up once per certificate and process).
    due: SystemTime,
    /// Installed at boot without asking the CA: the next step asks for ARI.
    ari_pending: bool,
}

impl Renewer {
    pub fn new(
        cfg: AcmeConfig,
        rcfg: RenewerConfig,
        store: TlsStore,
        challenges: Challenges,
        observer: Arc<dyn RenewalObserver>,
    ) -> Renewer {
        Renewer {
            cfg,
            rcfg,
            store,
            challenges,
            observer,
            acme: tokio::sync::OnceCell::new(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Loads the stored certificate (if any) and installs it: what a new process does at
    /// boot, before it answers its first TLS handshake. Returns its details.
    pub async fn load_stored(&self) -> Result<Option<CertInfo>, AcmeError> {
        let Some(cert) = self.store.load_cert().await? else {
            return Ok(None);
        };
        let info = cert.info()?;
        cert.certified_key()?; // refuse a chain whose key does not match
        self.set_current(cert, info.clone(), false).await;
        Ok(Some(info))
    }

    async fn acme(&self) -> Result<&Acme, AcmeError> {
        self.acme
            .get_or_try_init(|| Acme::connect(self.cfg.clone(), &self.store))
            .await
    }

    /// When to renew `cert`: its ARI window (when `ask_ari` and the CA offers it), else
    /// half its lifetime; at once if it comes from another directory.
    async fn due_for(&self, cert: &StoredCert, info: &CertInfo, ask_ari: bool) -> SystemTime {
        let ari = if ask_ari && cert.directory == self.cfg.directory_url {
            match self.acme().await {
                Ok(a) => a.renewal_window(cert).await,
                Err(_) => None,
            }
        } else {
            None
        };
        if cert.directory != self.cfg.directory_url {
            tracing::info!(stored = %cert.directory, configured = %self.cfg.directory_url,
                "stored certificate is from another ACME directory: renewing now");
            return SystemTime::UNIX_EPOCH;
        }
        renewal_time(info, ari, self.rcfg.renew_before, rand::rng().random())
    }

    async fn set_current(&self, cert: StoredCert, info: CertInfo, ask_ari: bool) {
        let due = self.due_for(&cert, &info, ask_ari).await;
        self.observer.install(&cert, &info);
        tracing::info!(serial = %info.serial, identity = %info.identity(),
            renew_in_s = due.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
            "certificate installed");
        *self.current.lock().await = Some(Current {
            cert,
            info,
            due,
            ari_pending: !ask_ari,
        });
    }

    /// Asks for the ARI window of a certificate installed at boot.
    async fn refresh_ari(&self) {
        let pending = self
            .current
            .lock()
            .await
            .as_ref()
            .filter(|c| c.ari_pending)
            .map(|c| (c.cert.clone(), c.info.clone()));
        let Some((cert, info)) = pending else { return };
        let due = self.due_for(&cert, &info, true).await;
        if let Some(c) = self.current.lock().await.as_mut()
            && c.info.serial == info.serial
        {
            c.due = due;
            c.ari_pending = false;
        }
    }

    /// One step: install a newer stored certificate; if the current one is due (or there
    /// is none), renew it under the lock.
    pub async fn step(&self) -> Result<Step, AcmeError> {
        let now = SystemTime::now();
        let stored = self.store.load_cert().await?;
        let serial = self
            .current
            .lock()
            .await
            .as_ref()
            .map(|c| c.info.serial.clone());
        if let Some(s) = stored.as_ref()
            && let Ok(info) = s.info()
            && Some(&info.serial) != serial.as_ref()
            && info.not_after > now
        {
            // Another process renewed (or this one restarted): serve what is stored.
            let serial = info.serial.clone();
            self.set_current(s.clone(), info, true).await;
            if !self.is_due(now).await {
                return Ok(Step::PickedUp { serial });
            }
        }
        self.refresh_ari().await;
        if !self.is_due(now).await {
            return Ok(Step::NotDue);
        }
        if let Some(port) = self.rcfg.probe_port
            && !answers_at(self.cfg.ip, port, &self.challenges).await
        {
            return Ok(Step::NotHolder);
        }
        let Some(lock) = self
            .store
            .try_lock(&self.rcfg.owner, self.rcfg.lock_ttl)
            .await?
        else {
            return Ok(Step::Busy);
        };
        let result = self.renew_locked().await;
        match self.store.release(lock).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("renewal lock expired while renewing; it was taken over"),
            Err(e) => tracing::warn!(error = %e, "releasing the renewal lock failed (it expires)"),
        }
        self.observer.renewal(result.is_ok());
        result
    }

    async fn is_due(&self, now: SystemTime) -> bool {
        self.current
            .lock()
            .await
            .as_ref()
            .is_none_or(|c| now >= c.due)
    }

    async fn renew_locked(&self) -> Result<Step, AcmeError> {
        // The lock holder before us may have just stored a fresh one.
        if let Some(s) = self.store.load_cert().await? {
            let info = s.info()?;
            let fresh = s.directory == self.cfg.directory_url
                && SystemTime::now() < renewal_time(&info, None, self.rcfg.renew_before, 0.0);
            let known = self
                .current
                .lock()
                .await
                .as_ref()
                .map(|c| c.info.serial.clone());
            if fresh && Some(&info.serial) != known.as_ref() {
                let serial = info.serial.clone();
                self.set_current(s, info, true).await;
                return Ok(Step::PickedUp { serial });
            }
        }
        let acme = self.acme().await?;
        let old = self.current.lock().await.as_ref().map(|c| c.cert.clone());
        let cert = acme.issue(&self.challenges, old.as_ref()).await?;
        cert.certified_key()?;
        let info = cert.info()?;
        self.store.save_cert(&cert).await?;
        let serial = info.serial.clone();
        self.set_current(cert, info, true).await;
        Ok(Step::Renewed { serial })
    }

    /// Runs [`Renewer::step`] every `check_interval`, backing off after failures.
    pub async fn run(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let wait = match self.step().await {
                Ok(step) => {
                    failures = 0;
                    if step != Step::NotDue {
                        tracing::info!(?step, "certificate renewal step");
                    }
                    self.rcfg.check_interval
                }
                Err(e) => {
                    failures += 1;
                    let b = backoff(failures, self.rcfg.retry_min, self.rcfg.retry_max);
                    let jitter = b.mul_f64(rand::rng().random_range(0.0..0.25));
                    tracing::warn!(error = %e, failures, retry_in_s = (b + jitter).as_secs_f64(),
                        "certificate renewal failed");
                    // Not capped by check_interval: every failed validation counts
                    // against the CA's limits (Let's Encrypt: 5 per address and
                    // account per hour), so the wait grows to retry_max.
                    b + jitter
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}
