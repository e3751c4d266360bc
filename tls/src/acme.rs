//! Ordering and renewing a certificate for an IP address over ACME (instant-acme).
//!
//! * One identifier, the IP address; HTTP-01 only (what Let's Encrypt allows for IP
//!   identifiers). The challenge is answered by [`serve_challenges`] on port 80 from a
//!   shared [`Challenges`] map.
//! * The `shortlived` profile when the directory advertises it (Let's Encrypt issues IP
//!   certificates only under it, 160 hours), no profile otherwise ([`choose_profile`]).
//! * Renewal time ([`renewal_time`]): a random point in the CA's ARI window (RFC 9773)
//!   where offered, else half the lifetime; never later than `renew_before` ahead of
//!   expiry when that is set. Failures retry with exponential backoff and jitter
//!   ([`backoff`]).
//! * [`Renewer`] runs the loop: pick up a certificate another process stored, renew
//!   when due under the bucket's renewal lock, store, install.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cert::{CertError, CertInfo, StoredCert};
use crate::store::{StoreError, TlsStore};

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_PRODUCTION: &str = instant_acme::LetsEncrypt::Production.url();
/// Let's Encrypt's staging directory (untrusted roots, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = instant_acme::LetsEncrypt::Staging.url();
/// The profile Let's Encrypt requires for IP-address certificates.
pub const SHORTLIVED: &str = "shortlived";

/// Why issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME {what}: {source}")]
    Acme {
        what: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the CA offers no http-01 challenge for {0}")]
    NoHttp01(IpAddr),
    #[error("authorization for {ip} is {status:?}")]
    Authorization {
        ip: IpAddr,
        status: AuthorizationStatus,
    },
    #[error("order for {ip} ended {status:?} instead of ready")]
    NotReady { ip: IpAddr, status: OrderStatus },
    #[error("stored ACME account is unreadable: {0}")]
    Account(serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("issued certificate: {0}")]
    Cert(#[from] CertError),
}

fn acme(what: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
    move |source| AcmeError::Acme { what, source }
}

/// The profile to order under: `shortlived` when the directory advertises it, else none
/// (the CA's default; Pebble 2.4 advertises no profiles).
pub fn choose_profile<'a>(advertised: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    advertised
        .into_iter()
        .any(|p| p == SHORTLIVED)
        .then_some(SHORTLIVED)
}

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

// ---------------------------------------------------------------------------------------
// HTTP-01
// ---------------------------------------------------------------------------------------

/// Pending HTTP-01 answers: token -> key authorization. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }
    pub fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// The path prefix the CA fetches.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Answers `GET /.well-known/acme-challenge/<token>` on `listener` forever: 200 with the
/// key authorization, 404 for anything else. One request per connection, 10 s each.
/// A minimal HTTP/1.x responder: the CA's validator is its only client.
pub async fn serve_challenges(listener: TcpListener, challenges: Challenges) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ch = challenges.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, ch)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "challenge listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, challenges: Challenges) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let found = (method == "GET" || method == "HEAD")
        .then(|| path.strip_prefix(CHALLENGE_PATH))
        .flatten()
        .and_then(|token| challenges.get(token));
    let (status, body) = match &found {
        Some(k) => ("200 OK", k.as_str()),
        None => ("404 Not Found", "not found\n"),
    };
    tracing::debug!(path, status, "challenge request");
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Whether `http://<ip>:<port>` reaches the responder serving `challenges`: a random
/// probe token is published and fetched through the address, as the CA would.
pub async fn answers_at(ip: IpAddr, port: u16, challenges: &Challenges) -> bool {
    let token: String = format!("probe-{:032x}", rand::rng().random::<u128>());
    let expected = format!("{token}.self-probe");
    challenges.insert(token.clone(), expected.clone());
    let fetch = async {
        let mut s = TcpStream::connect((ip, port)).await?;
        s.write_all(
            format!(
                "GET {CHALLENGE_PATH}{token} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.take(64 * 1024).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let got = tokio::time::timeout(Duration::from_secs(5), fetch).await;
    challenges.remove(&token);
    match got {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out);
            text.starts_with("HTTP/1.1 200") && text.ends_with(&format!("\r\n\r\n{expected}"))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------------------

/// Where to order from, and for what.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL: [`LETS_ENCRYPT_PRODUCTION`], [`LETS_ENCRYPT_STAGING`], or a test CA.
    pub directory_url: String,
    /// A PEM root that signs the directory's own HTTPS certificate (a test CA); the
    /// system's roots when `None`.
    pub directory_root: Option<PathBuf>,
    /// Contact URIs for a new account (`mailto:ops@example.org`); may be empty.
    pub contact: Vec<String>,
    /// The address the certificate is for.
    pub ip: IpAddr,
}

/// An ACME account, ready to order.
pub struct Acme {
    account: Account,
    cfg: AcmeConfig,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("account", &self.account.id())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Acme {
    /// Restores the account stored for this directory, or registers one and stores it.
    /// Call it under the renewal lock, so two processes do not both register.
    pub async fn connect(cfg: AcmeConfig, store: &TlsStore) -> Result<Acme, AcmeError> {
        // instant-acme's HTTPS client takes rustls's process-wide provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let builder = || match &cfg.directory_root {
            Some(p) => Account::builder_with_root(p).map_err(acme("loading the directory root")),
            None => Account::builder().map_err(acme("building the HTTPS client")),
        };
        if let Some(json) = store.load_account(&cfg.directory_url).await? {
            let creds: AccountCredentials =
                serde_json::from_slice(&json).map_err(AcmeError::Account)?;
            let account = builder()?
                .from_credentials(creds)
                .await
                .map_err(acme("restoring the account"))?;
            return Ok(Acme { account, cfg });
        }
        let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                cfg.directory_url.clone(),
                None,
            )
            .await
            .map_err(acme("registering an account"))?;
        let json = serde_json::to_vec(&creds).map_err(AcmeError::Account)?;
        store.save_account(&cfg.directory_url, json).await?;
        tracing::info!(directory = %cfg.directory_url, account = account.id(), "ACME account registered");
        Ok(Acme { account, cfg })
    }

    /// The profile orders use with this directory.
    pub fn profile(&self) -> Option<&'static str> {
        choose_profile(self.account.profiles().map(|p| p.name))
    }

    /// The account URL at the CA.
    pub fn account_id(&self) -> &str {
        self.account.id()
    }

    pub fn config(&self) -> &AcmeConfig {
        &self.cfg
    }

    /// The CA's suggested renewal window for `cert` (ARI), or `None` when the CA does not
    /// offer ARI or the request failed (then the caller falls back to half the lifetime).
    pub async fn renewal_window(&self, cert: &StoredCert) -> Option<(SystemTime, SystemTime)> {
        let chain = cert.chain().ok()?;
        let id = CertificateIdentifier::try_from(chain.first()?).ok()?;
        match self.account.renewal_info(&id).await {
            Ok((info, _retry)) => Some((
                info.suggested_window.start.into(),
                info.suggested_window.end.into(),
            )),
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "ARI request failed; renewing at half the lifetime");
                None
            }
        }
    }

    /// Orders a certificate for the configured IP, answering HTTP-01 through
    /// `challenges`; `replaces` names the certificate being renewed (sent only when the
    /// CA supports ARI).
    pub async fn issue(
        &self,
        challenges: &Challenges,
        replaces: Option<&StoredCert>,
    ) -> Result<StoredCert, AcmeError> {
        let ip = self.cfg.ip;
        let ids = [Identifier::Ip(ip)];
        let profile = self.profile();
        let mut new = NewOrder::new(&ids);
        if let Some(p) = profile {
            new = new.profile(p);
        }
        let replaced = replaces
            .and_then(|c| c.chain().ok())
            .and_then(|chain| chain.into_iter().next())
            .and_then(|leaf| {
                CertificateIdentifier::try_from(&leaf)
                    .ok()
                    .map(|i| i.into_owned())
            });
        let mut order = match replaced {
            Some(r) => match self.account.new_order(&new.replaces(r)).await {
                Ok(o) => o,
                // No ARI at this CA: order without `replaces`.
                Err(instant_acme::Error::Unsupported(_)) => {
                    let mut plain = NewOrder::new(&ids);
                    if let Some(p) = profile {
                        plain = plain.profile(p);
                    }
                    self.account
                        .new_order(&plain)
                        .await
                        .map_err(acme("new order"))?
                }
                Err(e) => return Err(acme("new order")(e)),
            },
            None => self
                .account
                .new_order(&new)
                .await
                .map_err(acme("new order"))?,
        };
        tracing::info!(%ip, profile = profile.unwrap_or("(default)"), "ACME order placed");

        let mut tokens = TokenGuard {
            challenges: challenges.clone(),
            tokens: Vec::new(),
        };
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a.map_err(acme("authorization"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(AcmeError::Authorization { ip, status }),
            }
            let mut ch = a
                .challenge(ChallengeType::Http01)
                .ok_or(AcmeError::NoHttp01(ip))?;
            challenges.insert(
                ch.token.clone(),
                ch.key_authorization().as_str().to_string(),
            );
            tokens.tokens.push(ch.token.clone());
            ch.set_ready().await.map_err(acme("challenge ready"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(acme("waiting for validation"))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::NotReady { ip, status });
        }
        drop(tokens);
        let key_pem = order.finalize().await.map_err(acme("finalize"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
            .await
            .map_err(acme("downloading the certificate"))?;
        let cert = StoredCert {
            directory: self.cfg.directory_url.clone(),
            chain_pem,
            key_pem,
        };
        let info = cert.info()?;
        tracing::info!(%ip, serial = %info.serial, issuer = %info.issuer, "certificate issued");
        Ok(cert)
    }
}

/// Removes an order's tokens from the responder however issuance ends.
struct TokenGuard {
    challenges: Challenges,
    tokens: Vec<String>,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.remove(t);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn info(start: u64, days: u64) -> CertInfo {
        CertInfo {
            ip_sans: vec![],
            dns_sans: vec![],
            issuer: String::new(),
            serial: "01".into(),
            not_before: UNIX_EPOCH + Duration::from_secs(start),
            not_after: UNIX_EPOCH + Duration::from_secs(start + days * 86_400),
        }
    }

    #[test]
    fn shortlived_is_chosen_only_when_advertised() {
        assert_eq!(
            choose_profile(["classic", "shortlived", "tlsserver"]),
            Some(SHORTLIVED)
        );
        assert_eq!(choose_profile(["classic", "tlsserver"]), None);
        assert_eq!(choose_profile(std::iter::empty::<&str>()), None);
        assert_eq!(choose_profile(["shortlived-ish"]), None);
    }

    #[test]
    fn without_ari_renewal_is_at_half_the_lifetime() {
        let i = info(1_000_000, 6); // 144 h
        let t = renewal_time(&i, None, None, 0.9);
        assert_eq!(t, i.not_before + Duration::from_secs(3 * 86_400));
    }

    #[test]
    fn ari_window_wins_and_the_pick_falls_inside_it() {
        let i = info(1_000_000, 90);
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000 + 60 * 86_400);
        let end = start + Duration::from_secs(86_400);
        assert_eq!(renewal_time(&i, Some((start, end)), None, 0.0), start);
        assert_eq!(renewal_time(&i, Some((start, end)), None, 1.0), end);
        let mid = renewal_time(&i, Some((start, end)), None, 0.5);
        assert_eq!(mid, start + Duration::from_secs(43_200));
        // An inverted window means "now-ish": its start.
        assert_eq!(renewal_time(&i, Some((end, start)), None, 0.5), end);
    }

    #[test]
    fn renew_before_caps_the_time() {
        let i = info(1_000_000, 6);
        let t = renewal_time(&i, None, Some(Duration::from_secs(5 * 86_400)), 0.5);
        assert_eq!(t, i.not_before + Duration::from_secs(86_400));
        // Longer than the lifetime: due at once (from not_before).
        let t = renewal_time(&i, None, Some(Duration::from_secs(100 * 86_400)), 0.5);
        assert_eq!(t, i.not_before);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (min, max) = (Duration::from_secs(30), Duration::from_secs(600));
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(2, min, max), Duration::from_secs(60));
        assert_eq!(backoff(4, min, max), Duration::from_secs(240));
        assert_eq!(backoff(5, min, max), Duration::from_secs(480));
        assert_eq!(backoff(6, min, max), max);
        assert_eq!(backoff(1000, min, max), max);
    }

    #[tokio::test]
    async fn the_responder_answers_known_tokens_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ch = Challenges::default();
        ch.insert("tok".into(), "tok.thumb".into());
        tokio::spawn(serve_challenges(listener, ch.clone()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntok.thumb"), "{ok}");
        let missing = get("/.well-known/acme-challenge/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let elsewhere = get("/tok").await;
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
        ch.remove("tok");
        let gone = get("/.well-known/acme-challenge/tok").await;
        assert!(gone.starts_with("HTTP/1.1 404"), "{gone}");
    }
}
