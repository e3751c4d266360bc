//! The health gate's probes: `GET /readyz` and `GET /version` over plain HTTP/1.1.
//!
//! Safety rule: a probe goes to loopback (127.0.0.0/8, ::1) only, unless the operator
//! passes `--allow-public-probes` (production, where instances are real). In tests and
//! the local demo the emulator invents instance addresses (54.x, 10.x) for machines
//! that do not exist; the real servers are processes on 127.0.0.1 named by endpoint
//! overrides (`--endpoint blue=http://127.0.0.1:PORT`). Anything else is refused
//! before a socket is opened.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::state::Color;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "refusing to probe {target}: not a loopback address (pass --allow-public-probes in production, or --endpoint COLOR=http://127.0.0.1:PORT)"
    )]
    NotLoopback { target: String },
    #[error("{target}: not a probe target ({why}); use http://IP:PORT")]
    BadTarget { target: String, why: String },
    #[error("{target}{path}: {why}")]
    Failed {
        target: String,
        path: String,
        why: String,
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

/// Where each colour's server and the fixed address are reached.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub colors: BTreeMap<Color, Target>,
    /// The service through the Elastic IP (the loopback forwarder locally).
    pub fixed: Option<Target>,
    /// Real addresses may be probed (production only).
    pub allow_public: bool,
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
        })
    }

    /// Where to probe `color`'s instance: its override, else (production only) its
    /// address on `port`. `instance_ip` is what EC2 reports for it.
    pub fn for_color(
        &self,
        color: Color,
        instance_ip: Option<IpAddr>,
        port: u16,
    ) -> Result<Target, ProbeError> {
        if let Some(t) = self.colors.get(&color) {
            return Ok(*t);
        }
        // An instance's own address is only ever used in production: the emulator's
        // addresses (even its 127.x Elastic IPs) name no real server.
        if !self.allow_public {
            return Err(ProbeError::NotLoopback {
                target: format!(
                    "the {color} instance's own address{}",
                    instance_ip.map(|i| format!(" {i}")).unwrap_or_default()
                ),
            });
        }
        match instance_ip {
            Some(ip) => Target::new(SocketAddr::new(ip, port), self.allow_public),
            None => Err(ProbeError::BadTarget {
                target: format!("{color} instance"),
                why: "no endpoint override and no address".into(),
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

/// One HTTP/1.1 GET with `Connection: close`; returns status and body.
pub async fn get(t: Target, path: &str, timeout: Duration) -> Result<(u16, String), ProbeError> {
    let fail = |why: String| ProbeError::Failed {
        target: t.to_string(),
        path: path.to_string(),
        why,
    };
    let work = async {
        let mut s = tokio::net::TcpStream::connect(t.addr)
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: deployer-health-gate\r\nConnection: close\r\n\r\n",
            t.addr
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| fail(format!("write: {e}")))?;
        let mut buf = Vec::new();
        s.take(1 << 20)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| fail(format!("read: {e}")))?;
        parse_response(&buf).map_err(fail)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("no answer within {}ms", timeout.as_millis())))?
}

fn parse_response(buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "incomplete HTTP answer".to_string())?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// Reads `/version`.
pub async fn version(t: Target, timeout: Duration) -> Result<Version, ProbeError> {
    let (status, body) = get(t, "/version", timeout).await?;
    if status != 200 {
        return Err(ProbeError::Failed {
            target: t.to_string(),
            path: "/version".into(),
            why: format!("HTTP {status}"),
        });
    }
    serde_json::from_str(&body).map_err(|e| ProbeError::Failed {
        target: t.to_string(),
        path: "/version".into(),
        why: format!("not a version answer: {e}"),
    })
}

/// Ready and reporting `release` (and `model`, when known)?
pub async fn check(
    t: Target,
    release: &str,
    model: Option<&str>,
    timeout: Duration,
) -> Result<Version, String> {
    let (status, body) = get(t, "/readyz", timeout)
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{t}/readyz answered {status}: {}", body.trim()));
    }
    let v = version(t, timeout).await.map_err(|e| e.to_string())?;
    if v.release != release {
        return Err(format!(
            "{t}/version reports release {:?}, expected {release:?}",
            v.release
        ));
    }
    if let Some(m) = model
        && v.model_version.as_deref() != Some(m)
    {
        return Err(format!(
            "{t}/version reports model {:?}, expected {m:?}",
            v.model_version
        ));
    }
    Ok(v)
}

/// Polls [`check`] until it passes or `deadline` runs out; the error is the last reason.
pub async fn gate(
    t: Target,
    release: &str,
    model: Option<&str>,
    deadline: Duration,
    interval: Duration,
) -> Result<Version, String> {
    let start = Instant::now();
    loop {
        let per_try = Duration::from_secs(5).min(deadline.max(Duration::from_millis(200)));
        match check(t, release, model, per_try).await {
            Ok(v) => return Ok(v),
            Err(why) => {
                if start.elapsed() >= deadline {
                    return Err(format!(
                        "not healthy within {}s: {why}",
                        deadline.as_secs_f64()
                    ));
                }
                tracing::debug!(%t, "not yet healthy: {why}");
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
            e.for_color(Color::Blue, Some(IpAddr::V4(public)), 80)
                .is_ok()
        );
        assert!(matches!(
            e.for_color(Color::Green, Some(IpAddr::V4(public)), 80),
            Err(ProbeError::NotLoopback { .. })
        ));
    }

    #[test]
    fn parses_plain_and_chunked_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, (200, "{}".into()));
        let r = parse_response(
            b"HTTP/1.1 503 X\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r, (503, "ab".into()));
    }
}
