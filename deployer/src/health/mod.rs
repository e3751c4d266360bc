//! The health gate's probes: `GET /readyz` and `GET /version` over plain HTTP/1.1
//! (hyper's client connection, one connection per request).
//!
//! Safety rule: a probe goes to loopback (127.0.0.0/8, ::1) only, unless the operator
//! passes `--allow-public-probes` (production, where instances are real). In tests and
//! the local demo the emulator invents instance addresses (54.x, 10.x) for machines
//! that do not exist. There the probe path is the production one (an instance's own
//! public address, then the Elastic IP's own address) with one translation in front:
//! an address map (`--address-map FILE`, kept by the local cloud) from each instance's
//! emulator address to the loopback stand-in its booted server listens on. What the map
//! gives must itself be loopback; an address it lacks is never connected to. Endpoint
//! overrides (`--endpoint blue=http://127.0.0.1:PORT`) name a colour's server outright.
//! Anything else is refused before a socket is opened.

mod endpoints;
mod https;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::state::Color;

pub use endpoints::{AddressMap, Endpoints, Target, is_loopback};
pub use https::{EIP_CHECKS, HttpsGate, describe as describe_certificate};

/// The most of an answer a probe reads.
const MAX_BODY: usize = 1 << 20;

/// Why a probe target was refused or a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "refusing to probe {target}: not a loopback address (pass --allow-public-probes in production, or --endpoint COLOR=http://127.0.0.1:PORT)"
    )]
    NotLoopback { target: String },
    #[error("{target}: not a probe target ({why}); use http://IP:PORT")]
    BadTarget { target: String, why: String },
    #[error(
        "the {color} instance {instance} has no public address: nothing outside its VPC can reach it (the health gate cannot probe it), and without one it has no route to the internet; launch it with a public address or a subnet that maps one"
    )]
    NoPublicAddress { color: Color, instance: String },
    #[error("address map {path}: {why}")]
    AddressMap { path: PathBuf, why: String },
    /// The map does not (yet) name a stand-in for the address: the local cloud writes
    /// an instance's entry once it sees it running.
    #[error("{ip} is not in the address map {path} (yet)")]
    NotMapped { ip: IpAddr, path: PathBuf },
    #[error("{target}{path}: connect: {source}")]
    Connect {
        target: Target,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange itself failed (handshake, request, or reading the answer).
    #[error("{target}{path}: {source}")]
    Http {
        target: Target,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{target}{path}: the answer is larger than 1 MiB")]
    TooLarge { target: Target, path: String },
    #[error("{target}{path}: no answer within {}ms", .timeout.as_millis())]
    Timeout {
        target: Target,
        path: String,
        timeout: Duration,
    },
    #[error("{target}/readyz answered {status}: {body}")]
    NotReady {
        target: Target,
        status: u16,
        body: String,
    },
    #[error("{target}{path}: HTTP {status}")]
    Status {
        target: Target,
        path: String,
        status: u16,
    },
    #[error("{target}/version: not a version answer: {source}")]
    NotVersion {
        target: Target,
        #[source]
        source: serde_json::Error,
    },
    #[error("{target}/version reports release {found:?}, expected {expected:?}")]
    WrongRelease {
        target: Target,
        found: String,
        expected: String,
    },
    #[error("{target}/version reports model {found:?}, expected {expected:?}")]
    WrongModel {
        target: Target,
        found: Option<String>,
        expected: String,
    },
    /// `tls = "acme"`: the colour has no valid certificate for the Elastic IP while the
    /// address serves one.
    #[error(
        "the {color} instance {instance} has no valid certificate for the Elastic IP {eip}: {why}; the address keeps serving {served}"
    )]
    TlsRefused {
        color: Color,
        instance: String,
        eip: IpAddr,
        why: String,
        served: String,
    },
    /// After the move, no valid certificate is served through the Elastic IP.
    #[error(
        "{} through the Elastic IP {eip}:https within {}s: {why}",
        if *.first { "no first certificate was issued and served" } else { "no valid certificate is served" },
        .deadline.as_secs()
    )]
    TlsNotServed {
        eip: IpAddr,
        deadline: Duration,
        first: bool,
        why: String,
    },
    #[error("the certificate roots: {0}")]
    TlsRoots(String),
    /// The gate's deadline ran out; `last` is the last reason.
    #[error("not healthy within {}s: {last}", .deadline.as_secs_f64())]
    NotHealthy {
        deadline: Duration,
        last: Box<ProbeError>,
    },
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub release: String,
    pub model_version: Option<String>,
}

/// Aborts the connection's task when the probe is done (or timed out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 GET with `Connection: close` (hyper's client connection); returns
/// status and body (the body read up to 1 MiB).
pub async fn get(t: Target, path: &str, timeout: Duration) -> Result<(u16, String), ProbeError> {
    let http = |source: hyper::Error| ProbeError::Http {
        target: t,
        path: path.to_string(),
        source,
    };
    let work = async {
        let stream = tokio::net::TcpStream::connect(t.addr)
            .await
            .map_err(|source| ProbeError::Connect {
                target: t,
                path: path.to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("probe connection: {e}");
            }
        }));
        // The request's parts are all fixed or checked (a path and a socket address).
        let req = hyper::Request::get(path)
            .header(HOST, t.addr.to_string())
            .header(USER_AGENT, "deployer-health-gate")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeError::BadTarget {
                target: format!("{t}{path}"),
                why: e.to_string(),
            })?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => http(*e),
                Err(_) => ProbeError::TooLarge {
                    target: t,
                    path: path.to_string(),
                },
            })?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProbeError::Timeout {
            target: t,
            path: path.to_string(),
            timeout,
        })?
}

/// Reads `/version`.
pub async fn version(t: Target, timeout: Duration) -> Result<Version, ProbeError> {
    let (status, body) = get(t, "/version", timeout).await?;
    if status != 200 {
        return Err(ProbeError::Status {
            target: t,
            path: "/version".into(),
            status,
        });
    }
    serde_json::from_str(&body).map_err(|source| ProbeError::NotVersion { target: t, source })
}

/// Ready and reporting `release` (and `model`, when known)?
pub async fn check(
    t: Target,
    release: &str,
    model: Option<&str>,
    timeout: Duration,
) -> Result<Version, ProbeError> {
    let (status, body) = get(t, "/readyz", timeout).await?;
    if status != 200 {
        return Err(ProbeError::NotReady {
            target: t,
            status,
            body: body.trim().to_string(),
        });
    }
    let v = version(t, timeout).await?;
    if v.release != release {
        return Err(ProbeError::WrongRelease {
            target: t,
            found: v.release,
            expected: release.to_string(),
        });
    }
    if let Some(m) = model
        && v.model_version.as_deref() != Some(m)
    {
        return Err(ProbeError::WrongModel {
            target: t,
            found: v.model_version,
            expected: m.to_string(),
        });
    }
    Ok(v)
}

/// Polls [`check`] until it passes or `deadline` runs out; the error carries the last
/// reason.
pub async fn gate(
    t: Target,
    release: &str,
    model: Option<&str>,
    deadline: Duration,
    interval: Duration,
) -> Result<Version, ProbeError> {
    gate_resolving(|| Ok(t), release, model, deadline, interval).await
}

/// [`gate`] on a target found again before every attempt by `resolve`: an address
/// not yet in the address map ([`ProbeError::NotMapped`]) counts as not yet healthy;
/// any other error from `resolve` ends the gate at once.
pub async fn gate_resolving(
    resolve: impl Fn() -> Result<Target, ProbeError>,
    release: &str,
    model: Option<&str>,
    deadline: Duration,
    interval: Duration,
) -> Result<Version, ProbeError> {
    let start = Instant::now();
    loop {
        let per_try = Duration::from_secs(5).min(deadline.max(Duration::from_millis(200)));
        let attempt = match resolve() {
            Ok(t) => check(t, release, model, per_try).await,
            Err(e @ ProbeError::NotMapped { .. }) => Err(e),
            Err(e) => return Err(e),
        };
        match attempt {
            Ok(v) => return Ok(v),
            Err(why) => {
                if start.elapsed() >= deadline {
                    return Err(ProbeError::NotHealthy {
                        deadline,
                        last: Box::new(why),
                    });
                }
                tracing::debug!("not yet healthy: {why}");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// One canned answer on a loopback socket, for `get` to read.
    async fn answer_once(raw: &'static [u8]) -> Target {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(raw).await.unwrap();
            s.shutdown().await.unwrap();
        });
        Target::new(addr, false).unwrap()
    }

    #[tokio::test]
    async fn parses_plain_and_chunked_answers() {
        let t = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
        let r = get(t, "/version", Duration::from_secs(5)).await.unwrap();
        assert_eq!(r, (200, "{}".into()));
        let t = answer_once(
            b"HTTP/1.1 503 X\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        )
        .await;
        let r = get(t, "/readyz", Duration::from_secs(5)).await.unwrap();
        assert_eq!(r, (503, "ab".into()));
    }

    #[tokio::test]
    async fn failures_are_typed() {
        let t = answer_once(b"HTTP/1.1 503 X\r\ncontent-length: 8\r\n\r\nloading\n").await;
        let e = check(t, "r1", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ProbeError::NotReady { status: 503, body, .. } if body == "loading"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), format!("{t}/readyz answered 503: loading"));
        let t = answer_once(b"not http at all\r\n\r\n").await;
        let e = get(t, "/readyz", Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Http { .. }), "{e:?}");
        // Nothing listens on a port just released.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Target::new(l.local_addr().unwrap(), false).unwrap();
        drop(l);
        let e = gate(
            t,
            "r1",
            None,
            Duration::from_millis(300),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, ProbeError::NotHealthy { last, .. } if matches!(**last, ProbeError::Connect { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("not healthy within 0.3s: "),
            "{e}"
        );
    }
}
