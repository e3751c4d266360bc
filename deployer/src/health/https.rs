//! The health gate's HTTPS half (`tls = "acme"`): before the Elastic IP moves, the new
//! colour must present, on its own address, a certificate that verifies for the
//! Elastic IP (SNI-less; the IP SAN checked against the Elastic IP, not the dialled
//! address) and stays valid for the rollback window (`tls::verify::gate`). After the
//! move, the same check through the Elastic IP's own address.
//!
//! **The first switch-on.** A colour can get a certificate only while it holds the
//! address (HTTP-01 is answered by whoever the address reaches), so the first colour
//! with HTTPS on has none when it is gated. Such a colour is let through only when the
//! Elastic IP serves no valid certificate now (checked [`EIP_CHECKS`] times, a second
//! apart: every check must fail): the move then cannot break an HTTPS client, because
//! none is being served. After the move the deployer waits until the new holder has
//! issued, stored and serves its first certificate through the Elastic IP, and reports
//! it; if that does not happen within the health deadline the deploy fails with one
//! line (plain HTTP keeps serving; `deployer rollback` moves the address back). A colour
//! without a valid certificate while the address does serve one (a store emptied or
//! corrupted, a role that cannot read it, a certificate about to expire) is refused,
//! and the address stays where it is.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tls::cert::CertInfo;

use super::{Endpoints, ProbeError};
use crate::config::TlsMode;
use crate::state::Color;
use crate::{Deployer, Error};

/// How many times the Elastic IP is checked before a colour without a certificate is
/// taken for the first switch-on.
pub const EIP_CHECKS: u32 = 3;

/// What the gate decided about HTTPS.
#[derive(Debug, Clone)]
pub enum HttpsGate {
    /// `tls = "off"`.
    Off,
    /// The colour serves a valid certificate for the Elastic IP.
    Verified { eip: IpAddr, info: CertInfo },
    /// No certificate anywhere yet: the address moves, then the first one is awaited.
    FirstSwitchOn { eip: IpAddr, why: String },
}

/// `serial S for IP:…, issued by …, expires … (in 159h 59m)`.
pub fn describe(info: &CertInfo) -> String {
    let not_after: chrono::DateTime<chrono::Utc> = info.not_after.into();
    format!(
        "certificate {} for {}, issued by {}, expires {} (in {})",
        info.serial,
        info.identity(),
        info.issuer,
        not_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        crate::cert::hours(info.remaining(std::time::SystemTime::now()).as_secs()),
    )
}

fn probe(e: ProbeError) -> Error {
    crate::release::ReleaseError::Probe(e).into()
}

impl Deployer {
    fn https_roots(&self) -> Result<rustls::RootCertStore, ProbeError> {
        crate::cert::roots(&self.cfg).map_err(|e| ProbeError::TlsRoots(e.to_string()))
    }

    /// The Elastic IP's own address on the HTTPS port, as a probe target.
    fn eip_https(&self, endpoints: &Endpoints, eip: IpAddr) -> Result<SocketAddr, ProbeError> {
        Ok(endpoints
            .elastic_ip(SocketAddr::new(eip, self.cfg.https.port))?
            .addr)
    }

    /// Before the move: the new colour's certificate, checked on its own address.
    #[allow(clippy::too_many_arguments)]
    pub async fn https_gate(
        &self,
        endpoints: &Endpoints,
        allocation: &str,
        color: Color,
        instance: &str,
        public_ip: Option<IpAddr>,
        rollback_window: Duration,
    ) -> Result<HttpsGate, Error> {
        if self.cfg.tls == TlsMode::Off {
            return Ok(HttpsGate::Off);
        }
        let eip = self.elastic_ip(allocation).await?;
        let roots = self.https_roots().map_err(probe)?;
        // Its override's address, or its own address, on the HTTPS port.
        let dial = endpoints
            .for_color(color, instance, public_ip, self.cfg.api_port)
            .map_err(probe)?;
        let dial = SocketAddr::new(dial.addr.ip(), self.cfg.https.port);
        let timeout = Duration::from_secs(5);
        let mut attempt = 0;
        let refused = loop {
            attempt += 1;
            match tls::verify::gate(dial, eip, roots.clone(), timeout, rollback_window).await {
                Ok(info) => {
                    tracing::info!(%dial, "HTTPS gate passed: {}", describe(&info));
                    return Ok(HttpsGate::Verified { eip, info });
                }
                // The HTTPS listener comes up with the plain one; a refused connection
                // right after readiness gets a few more tries.
                Err(tls::verify::VerifyError::Connect { .. }) if attempt < 5 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => break e,
            }
        };
        // Is a valid certificate served at the address now? Then this colour must have one.
        let at_eip = self.eip_https(endpoints, eip).map_err(probe)?;
        for i in 0..EIP_CHECKS {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if let Ok(served) =
                tls::verify::verify_endpoint(at_eip, eip, roots.clone(), timeout).await
            {
                return Err(probe(ProbeError::TlsRefused {
                    color,
                    instance: instance.to_string(),
                    eip,
                    why: refused.to_string(),
                    served: describe(&served),
                }));
            }
        }
        let why = format!(
            "the {color} instance has no valid certificate yet ({refused}), and the Elastic IP {eip} serves none either"
        );
        tracing::warn!(
            "first switch-on of HTTPS: {why}; moving the address, then waiting for the first certificate"
        );
        Ok(HttpsGate::FirstSwitchOn { eip, why })
    }

    /// After the move: the certificate served through the Elastic IP's own address must
    /// verify for it and outlive the rollback window, within `deadline` (the first
    /// switch-on's issuance happens here). Returns what is served.
    pub async fn https_after_move(
        &self,
        gate: &HttpsGate,
        endpoints: &Endpoints,
        rollback_window: Duration,
        deadline: Duration,
        interval: Duration,
    ) -> Result<Option<CertInfo>, ProbeError> {
        let eip = match gate {
            HttpsGate::Off => return Ok(None),
            HttpsGate::Verified { eip, .. } | HttpsGate::FirstSwitchOn { eip, .. } => *eip,
        };
        let roots = self.https_roots()?;
        let at_eip = self.eip_https(endpoints, eip)?;
        let start = Instant::now();
        loop {
            let last = match tls::verify::gate(
                at_eip,
                eip,
                roots.clone(),
                Duration::from_secs(5),
                rollback_window,
            )
            .await
            {
                Ok(info) => {
                    if let HttpsGate::FirstSwitchOn { .. } = gate {
                        tracing::info!(
                            "first certificate issued and served through the Elastic IP after {}s: {}",
                            start.elapsed().as_secs(),
                            describe(&info)
                        );
                    } else {
                        tracing::info!(
                            "HTTPS verified through the Elastic IP: {}",
                            describe(&info)
                        );
                    }
                    return Ok(Some(info));
                }
                Err(e) => e,
            };
            if start.elapsed() >= deadline {
                return Err(ProbeError::TlsNotServed {
                    eip,
                    deadline,
                    first: matches!(gate, HttpsGate::FirstSwitchOn { .. }),
                    why: last.to_string(),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }
}
