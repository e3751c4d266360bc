//! `deploy --canary P%` (`front = "nlb"`): the error rate the canary colour's own
//! instances report.
//!
//! Each instance's `/metrics` exports `http_requests_total{route,method,status}`; the
//! canary's error rate over the soak is (5xx answers) / (requests) summed over its
//! instances, counted from the soak's start. The probes' own routes (`/readyz`,
//! `/healthz`, `/version`, `/metrics`: the balancer's health checks and the
//! deployer's) are left out, so an idle canary does not dilute its errors with them.
//! A canary with no users' request during the soak passes (nothing speaks against it);
//! one over the rate after [`EARLY_VERDICT_REQUESTS`] is rolled back at once.

use std::time::Duration;

use crate::health::{self, Target};

/// Requests after which a canary already over its error rate is rolled back without
/// waiting out the soak.
pub const EARLY_VERDICT_REQUESTS: u64 = 50;

/// Routes that carry probes, not users' requests.
const PROBE_ROUTES: &[&str] = &["/readyz", "/healthz", "/version", "/metrics"];

/// Requests and 5xx answers, as counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

impl Counts {
    /// What happened since `before`.
    pub fn since(self, before: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
        }
    }

    pub fn plus(self, other: Counts) -> Counts {
        Counts {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
        }
    }

    /// 5xx / requests (0 with no request).
    pub fn rate(self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// A label's value in one exposition line's `{...}`.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    line.get(open + 1..close)?.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The users' requests and 5xx answers in a `/metrics` body.
pub fn parse(metrics: &str) -> Counts {
    let mut c = Counts::default();
    for line in metrics.lines() {
        if !line.starts_with("http_requests_total{") {
            continue;
        }
        if label(line, "route").is_some_and(|r| PROBE_ROUTES.contains(&r)) {
            continue;
        }
        let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let n = n as u64;
        c.requests += n;
        if label(line, "status").is_some_and(|s| s.starts_with('5')) {
            c.errors += n;
        }
    }
    c
}

/// The counts of one instance (`None`: its `/metrics` did not answer 200).
pub async fn counts(t: Target) -> Option<Counts> {
    match health::get(t, "/metrics", Duration::from_secs(3)).await {
        Ok((200, body)) => Some(parse(&body)),
        Ok((status, _)) => {
            tracing::warn!(%t, status, "canary /metrics did not answer 200");
            None
        }
        Err(e) => {
            tracing::warn!("canary /metrics: {e}");
            None
        }
    }
}

/// The sum over `targets` (an instance that does not answer counts nothing).
pub async fn total(targets: &[Target]) -> Counts {
    let mut sum = Counts::default();
    for t in targets {
        if let Some(c) = counts(*t).await {
            sum = sum.plus(c);
        }
    }
    sum
}

/// `10%` or `10` as a share of new connections, 1..=99.
pub fn parse_percent(s: &str) -> Result<u8, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<u8>() {
        Ok(p) if (1..=99).contains(&p) => Ok(p),
        _ => Err(format!(
            "{s:?} is not a canary share: give a percentage from 1% to 99% (e.g. 10%)"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_users_requests_and_their_5xx() {
        let body = "# HELP http_requests_total x\n\
            http_requests_total{route=\"/predict\",method=\"POST\",status=\"200\"} 7\n\
            http_requests_total{route=\"/predict\",method=\"POST\",status=\"500\"} 3\n\
            http_requests_total{route=\"/predict\",method=\"POST\",status=\"422\"} 2\n\
            http_requests_total{route=\"/readyz\",method=\"GET\",status=\"503\"} 40\n\
            http_requests_total{route=\"/version\",method=\"GET\",status=\"200\"} 9\n\
            http_request_duration_seconds_count{route=\"/predict\"} 12\n";
        let c = parse(body);
        assert_eq!(
            c,
            Counts {
                requests: 12,
                errors: 3
            }
        );
        assert_eq!(
            c.since(Counts {
                requests: 2,
                errors: 1
            })
            .rate(),
            0.2
        );
        assert_eq!(Counts::default().rate(), 0.0);
    }

    #[test]
    fn a_share_is_a_percentage_between_1_and_99() {
        assert_eq!(parse_percent("10%"), Ok(10));
        assert_eq!(parse_percent("25"), Ok(25));
        for bad in ["0%", "100%", "x", "-5%"] {
            assert!(
                parse_percent(bad).unwrap_err().contains("1% to 99%"),
                "{bad}"
            );
        }
    }
}
