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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::state::Color;

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
    /// The gate's deadline ran out; `last` is the last reason.
    #[error("not healthy within {}s: {last}", .deadline.as_secs_f64())]
    NotHealthy {
        deadline: Duration,
        last: Box<ProbeError>,
    },
}

/// A checked probe target: `http://IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

impl Target {
    /// Parses `http://IP:PORT` (or `IP:PORT`) and applies the loopback rule. Host
    /// names are refused: what they resolve to is not ours to check.
    pub fn parse(s: &str, allow_public: bool) -> Result<Target, ProbeError> {
        let bad = |why: &str| ProbeError::BadTarget {
            target: s.to_string(),
            why: why.to_string(),
        };
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.contains("://") {
            return Err(bad("only http:// is supported"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("no path allowed"));
        }
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| bad("not an IP address and port"))?;
        Target::new(addr, allow_public).map_err(|_| ProbeError::NotLoopback {
            target: s.to_string(),
        })
    }

    pub fn new(addr: SocketAddr, allow_public: bool) -> Result<Target, ProbeError> {
        if !allow_public && !is_loopback(addr.ip()) {
            return Err(ProbeError::NotLoopback {
                target: addr.to_string(),
            });
        }
        Ok(Target { addr })
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.octets()[0] == 127)
        }
    }
}

/// Test and local-demo configuration: where the servers of the emulator's instances
/// really listen. A JSON object `{"<instance address>": "<loopback stand-in>"}`, read
/// afresh at every lookup (the local cloud rewrites it as instances come and go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMap {
    path: PathBuf,
}

impl AddressMap {
    pub fn new(path: impl Into<PathBuf>) -> AddressMap {
        AddressMap { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stand-in for `ip`, `None` when the map names none (yet).
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<IpAddr>, ProbeError> {
        let bad = |why: String| ProbeError::AddressMap {
            path: self.path.clone(),
            why,
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| bad(e.to_string()))?;
        let map: BTreeMap<String, String> = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a JSON object of addresses: {e}")))?;
        let Some(to) = map.get(&ip.to_string()) else {
            return Ok(None);
        };
        let to: IpAddr = to
            .parse()
            .map_err(|_| bad(format!("{ip} maps to {to:?}, not an IP address")))?;
        Ok(Some(to))
    }

    /// `addr` with its IP translated; the map must name it.
    fn translate(&self, addr: SocketAddr) -> Result<SocketAddr, ProbeError> {
        match self.lookup(addr.ip())? {
            Some(ip) => Ok(SocketAddr::new(ip, addr.port())),
            None => Err(ProbeError::NotMapped {
                ip: addr.ip(),
                path: self.path.clone(),
            }),
        }
    }
}

/// Where each colour's server and the fixed address are reached.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub colors: BTreeMap<Color, Target>,
    /// The service through the Elastic IP (the loopback forwarder locally).
    pub fixed: Option<Target>,
    /// Real addresses may be probed (production only).
    pub allow_public: bool,
    /// Instance addresses go through this map first (tests, local demo).
    pub address_map: Option<AddressMap>,
}

impl Endpoints {
    /// Parses `COLOR=URL` overrides.
    pub fn parse(
        overrides: &[String],
        fixed: Option<&str>,
        allow_public: bool,
    ) -> Result<Endpoints, ProbeError> {
        let mut colors = BTreeMap::new();
        for o in overrides {
            let Some((c, url)) = o.split_once('=') else {
                return Err(ProbeError::BadTarget {
                    target: o.clone(),
                    why: "expected COLOR=http://IP:PORT".into(),
                });
            };
            let color = match c.trim() {
                "blue" => Color::Blue,
                "green" => Color::Green,
                other => {
                    return Err(ProbeError::BadTarget {
                        target: o.clone(),
                        why: format!("unknown colour {other:?} (blue or green)"),
                    });
                }
            };
            colors.insert(color, Target::parse(url.trim(), allow_public)?);
        }
        let fixed = fixed.map(|f| Target::parse(f, allow_public)).transpose()?;
        Ok(Endpoints {
            colors,
            fixed,
            allow_public,
            address_map: None,
        })
    }

    /// With instance addresses translated through `map` first.
    pub fn with_address_map(self, map: Option<AddressMap>) -> Endpoints {
        Endpoints {
            address_map: map,
            ..self
        }
    }

    /// Whether a colour can be probed without its override: its own address is
    /// usable (production) or translated (address map).
    pub fn reaches_instances(&self) -> bool {
        self.allow_public || self.address_map.is_some()
    }

    /// Where the Elastic IP's own address `addr` is probed: as it is when it is
    /// loopback (the emulator's stand-ins carry traffic themselves), else through the
    /// address map when there is one; then under the loopback rule.
    pub fn elastic_ip(&self, addr: SocketAddr) -> Result<Target, ProbeError> {
        match &self.address_map {
            Some(map) if !is_loopback(addr.ip()) => {
                Target::new(map.translate(addr)?, self.allow_public)
            }
            _ => Target::new(addr, self.allow_public),
        }
    }

    /// Where an instance's address `addr` is probed: through the address map when
    /// there is one (an address it lacks is never connected to, unless loopback), then
    /// under the loopback rule.
    pub fn real(&self, addr: SocketAddr) -> Result<Target, ProbeError> {
        let addr = match &self.address_map {
            Some(map) => match map.lookup(addr.ip())? {
                Some(ip) => SocketAddr::new(ip, addr.port()),
                // The emulator's Elastic IPs are loopback stand-ins of their own.
                None if is_loopback(addr.ip()) => addr,
                None => map.translate(addr)?,
            },
            None => addr,
        };
        Target::new(addr, self.allow_public)
    }

    /// Where to probe `color`'s instance `instance`: its override, else its public
    /// address on `port` (through the address map, if any). `public_ip` is what EC2
    /// reports for it.
    pub fn for_color(
        &self,
        color: Color,
        instance: &str,
        public_ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Target, ProbeError> {
        if let Some(t) = self.colors.get(&color) {
            return Ok(*t);
        }
        // An instance's own address is used in production, or through the address
        // map: the emulator's addresses (even its 127.x Elastic IPs) name no server.
        if !self.reaches_instances() {
            return Err(ProbeError::NotLoopback {
                target: format!(
                    "the {color} instance's own address{}",
                    public_ip.map(|i| format!(" {i}")).unwrap_or_default()
                ),
            });
        }
        match public_ip {
            Some(ip) => self.real(SocketAddr::new(ip, port)),
            None => Err(ProbeError::NoPublicAddress {
                color,
                instance: instance.to_string(),
            }),
        }
    }
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

    #[test]
    fn only_loopback_unless_allowed() {
        assert!(Target::parse("http://127.0.0.1:8080", false).is_ok());
        assert!(Target::parse("127.3.4.5:80", false).is_ok());
        assert!(Target::parse("http://[::1]:80", false).is_ok());
        // Built at run time: the repository names no address but loopback.
        let public = std::net::Ipv4Addr::new(54, 1, 2, 3);
        let private = std::net::Ipv4Addr::new(10, 0, 0, 5);
        for bad in [
            format!("http://{public}:8080"),
            format!("http://{private}:8080"),
            "0.0.0.0:80".to_string(),
        ] {
            let bad = bad.as_str();
            assert!(
                matches!(
                    Target::parse(bad, false),
                    Err(ProbeError::NotLoopback { .. })
                ),
                "{bad} accepted"
            );
            assert!(Target::parse(bad, true).is_ok());
        }
        // Names are never resolved.
        assert!(Target::parse("http://localhost:80", true).is_err());
        assert!(Target::parse("https://127.0.0.1:80", false).is_err());
        let e = Endpoints::parse(&["blue=http://127.0.0.1:1".into()], None, false).unwrap();
        assert!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 80)
                .is_ok()
        );
        assert!(matches!(
            e.for_color(Color::Green, "i-2", Some(IpAddr::V4(public)), 80),
            Err(ProbeError::NotLoopback { .. })
        ));
    }

    #[test]
    fn the_address_map_translates_to_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json");
        let public = std::net::Ipv4Addr::new(54, 1, 2, 3);
        let private = std::net::Ipv4Addr::new(10, 0, 0, 5);
        let elsewhere = std::net::Ipv4Addr::new(54, 9, 9, 9);
        std::fs::write(
            &path,
            serde_json::json!({
                public.to_string(): "127.77.0.2",
                private.to_string(): elsewhere.to_string(),
            })
            .to_string(),
        )
        .unwrap();
        let e = Endpoints::default().with_address_map(Some(AddressMap::new(&path)));
        let t = e
            .for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 8080)
            .unwrap();
        assert_eq!(t.to_string(), "http://127.77.0.2:8080");
        // A map entry that leads off loopback is refused like any public address.
        assert!(matches!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(private)), 8080),
            Err(ProbeError::NotLoopback { .. })
        ));
        // Not in the map: never connected to.
        assert!(matches!(
            e.for_color(Color::Blue, "i-1", Some(IpAddr::V4(elsewhere)), 8080),
            Err(ProbeError::NotMapped { .. })
        ));
        // No public address: says so, whatever the map holds.
        let err = e.for_color(Color::Green, "i-9", None, 8080).unwrap_err();
        assert!(matches!(err, ProbeError::NoPublicAddress { .. }), "{err:?}");
        assert!(
            err.to_string().contains("i-9 has no public address"),
            "{err}"
        );
        // An Elastic IP that is itself loopback (the emulator's) is probed as it is.
        let eip: SocketAddr = "127.5.6.7:8080".parse().unwrap();
        assert_eq!(e.elastic_ip(eip).unwrap().addr, eip);
        // A broken map names itself.
        std::fs::write(&path, "[").unwrap();
        let err = e
            .for_color(Color::Blue, "i-1", Some(IpAddr::V4(public)), 8080)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("address map {}", path.display())),
            "{err}"
        );
    }

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
