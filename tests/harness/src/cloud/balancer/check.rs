//! The stand-in's own health checks of a target group's targets, and its verdicts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A target group's health check, as `DescribeTargetGroups` gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthCheck {
    /// `Some(path)`: HTTP GET; `None`: a TCP connect.
    pub(crate) http_path: Option<String>,
    /// `None`: the target's own port ("traffic-port").
    pub(crate) port: Option<u16>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
}

/// The stand-in's verdict on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
}

impl TargetState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
        }
    }
}

/// One target's health checks so far.
#[derive(Debug)]
pub(super) struct Check {
    pub(super) state: TargetState,
    pub(super) passes: u32,
    pub(super) fails: u32,
    pub(super) next_at: Instant,
    pub(super) in_flight: bool,
}

impl Check {
    /// Counts one probe's outcome under `hc`'s thresholds.
    pub(super) fn record(&mut self, ok: bool, hc: &HealthCheck) {
        if ok {
            self.passes += 1;
            self.fails = 0;
            if self.passes >= hc.healthy_threshold {
                self.state = TargetState::Healthy;
            }
        } else {
            self.fails += 1;
            self.passes = 0;
            if self.fails >= hc.unhealthy_threshold {
                self.state = TargetState::Unhealthy;
            }
        }
    }
}

/// One health check of `addr`: an HTTP GET of `path` answered 200-399, or (no path) a
/// TCP connect, within `timeout`.
pub(super) async fn probe(addr: SocketAddr, path: Option<&str>, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let Some(path) = path else { return Some(true) };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ELB-HealthChecker/2.0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut head[n..]).await.ok()?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let line = std::str::from_utf8(&head[..n]).ok()?;
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hc() -> HealthCheck {
        HealthCheck {
            http_path: Some("/readyz".into()),
            port: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(6),
            healthy_threshold: 3,
            unhealthy_threshold: 2,
        }
    }

    #[test]
    fn a_target_turns_healthy_after_the_threshold_and_unhealthy_after_its_own() {
        let mut c = Check {
            state: TargetState::Initial,
            passes: 0,
            fails: 0,
            next_at: Instant::now(),
            in_flight: false,
        };
        c.record(true, &hc());
        c.record(true, &hc());
        assert_eq!(c.state, TargetState::Initial, "two passes of three");
        c.record(true, &hc());
        assert_eq!(c.state, TargetState::Healthy);
        c.record(false, &hc());
        assert_eq!(c.state, TargetState::Healthy, "one failure of two");
        c.record(true, &hc());
        c.record(false, &hc());
        assert_eq!(c.state, TargetState::Healthy, "failures must be in a row");
        c.record(false, &hc());
        assert_eq!(c.state, TargetState::Unhealthy);
    }
}
