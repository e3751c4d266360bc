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
//!
//! Layout: this file is the ACME client (account, order, issuance); `challenge.rs` the
//! HTTP-01 responder; `renew.rs` the schedule and the [`Renewer`] loop.

mod challenge;
mod renew;

pub use challenge::*;
pub use renew::*;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::cert::{CertError, StoredCert};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertInfo;
    use std::time::UNIX_EPOCH;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

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
