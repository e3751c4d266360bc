//! The Network Load Balancer stand-in. For each `active` network balancer the emulator
//! holds, a TCP proxy listens on every address of its subnet mappings (the Elastic IPs
//! moto hands out in 127.0.0.0/8), on each listener's port, and sends each new
//! connection to one target of the listener's forward action: a target group drawn by
//! the action's weights, then the group's next healthy target (round robin), at that
//! target's loopback stand-in. As on AWS:
//!
//! - **Its own health checks.** Every registered target of a group a listener uses is
//!   probed by the stand-in itself, as the group's health check says (HTTP `GET` of its
//!   path expecting 200-399, or a TCP connect; its port, interval, timeout and
//!   thresholds). A target is `initial` until it passes `HealthyThresholdCount` checks in
//!   a row (or fails `UnhealthyThresholdCount`), then `healthy` or `unhealthy`. The
//!   verdicts are written to a file the wrapped emulator answers `DescribeTargetHealth`
//!   from (`moto_elb.py`), so the deployer reads what the stand-in routes by, not
//!   moto's always-healthy answer.
//! - **Fail open.** A group with no healthy target sends connections to all its
//!   registered targets.
//! - **Propagation.** A change of the listener's weights reaches new connections after
//!   the propagation delay; a connection keeps its target for its whole life.
//! - **Draining.** A deregistered target gets no new connection; those open stay.
//!
//! Health-check intervals and timeouts may be scaled (`check_scale`) so that tests need
//! not wait AWS's 5-30 s intervals; thresholds are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;

mod check;
mod observe;

use check::{Check, TargetState, probe};
pub(crate) use observe::{View, observe};

/// A port that could not be bound is tried again after this long.
const BIND_RETRY: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one listener address spreads new connections: (weight, backends) per target
/// group of its forward action.
pub type Spread = Vec<(u32, Vec<SocketAddr>)>;

/// Where a listener's new connections go: the groups with their weights and targets.
#[derive(Debug, Default)]
struct Route {
    groups: Vec<RouteGroup>,
    /// Round-robin position per group.
    turns: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
struct RouteGroup {
    weight: u32,
    /// Healthy targets' stand-ins, or every registered one when none is healthy.
    backends: Vec<SocketAddr>,
}

impl Route {
    /// The target for a new connection; `None` when nothing can take it.
    fn pick(&mut self) -> Option<SocketAddr> {
        let live: Vec<usize> = (0..self.groups.len())
            .filter(|i| self.groups[*i].weight > 0 && !self.groups[*i].backends.is_empty())
            .collect();
        let total: u32 = live.iter().map(|i| self.groups[*i].weight).sum();
        if total == 0 {
            return None;
        }
        let mut draw = rand::random_range(0..total);
        let mut chosen = live[0];
        for i in live {
            if draw < self.groups[i].weight {
                chosen = i;
                break;
            }
            draw -= self.groups[i].weight;
        }
        self.turns.resize(self.groups.len(), 0);
        let g = &self.groups[chosen];
        let turn = self.turns[chosen];
        self.turns[chosen] = turn.wrapping_add(1);
        Some(g.backends[turn % g.backends.len()])
    }
}

struct Balancer {
    /// Listener port -> its routing table.
    routes: BTreeMap<u16, Arc<Mutex<Route>>>,
    /// Listener port -> (weights the emulator has, since when); applied after the
    /// propagation delay.
    wanted: BTreeMap<u16, (Vec<(String, u32)>, Instant)>,
    /// Listener port -> the weights in effect.
    applied: BTreeMap<u16, Vec<(String, u32)>>,
    listeners: BTreeMap<(Ipv4Addr, u16), tokio::task::JoinHandle<()>>,
    retry_at: BTreeMap<(Ipv4Addr, u16), Instant>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.abort();
        }
    }
}

/// Every balancer stand-in of the local cloud, driven by the runner's ticks.
pub(crate) struct Balancers {
    shared: Arc<Mutex<Shared>>,
    delay: Duration,
    check_scale: f64,
    health_file: PathBuf,
    balancers: BTreeMap<String, Balancer>,
    /// (target group ARN, instance id) -> its checks.
    checks: Arc<Mutex<BTreeMap<(String, String), Check>>>,
    written: String,
}

impl Balancers {
    pub(crate) fn new(
        shared: Arc<Mutex<Shared>>,
        delay: Duration,
        check_scale: f64,
        health_file: PathBuf,
    ) -> Balancers {
        Balancers {
            shared,
            delay,
            check_scale,
            health_file,
            balancers: BTreeMap::new(),
            checks: Arc::new(Mutex::new(BTreeMap::new())),
            written: String::new(),
        }
    }

    /// The addresses some balancer holds: the Elastic IP forwarders leave them alone.
    pub(crate) fn addresses(view: &View) -> BTreeSet<Ipv4Addr> {
        view.balancers
            .iter()
            .flat_map(|b| b.addresses.iter().copied())
            .collect()
    }

    /// Follows the emulator: probes what is due, writes the verdicts, rebuilds routes
    /// and listens where needed. Must run inside the runtime.
    pub(crate) fn update(&mut self, view: &View) {
        let now = Instant::now();
        let standins: BTreeMap<String, Ipv4Addr> = {
            let shared = lock(&self.shared);
            shared
                .instances
                .iter()
                .filter(|(_, i)| matches!(i.status, super::InstanceStatus::Serving(_)))
                .map(|(id, i)| (id.clone(), i.standin))
                .collect()
        };
        self.probe_due(view, &standins, now);
        self.write_verdicts();
        let present: BTreeSet<&str> = view.balancers.iter().map(|b| b.arn.as_str()).collect();
        self.balancers
            .retain(|arn, _| present.contains(arn.as_str()));
        let checks = lock(&self.checks);
        let mut table: BTreeMap<(Ipv4Addr, u16), Spread> = BTreeMap::new();
        for b in &view.balancers {
            let entry = self
                .balancers
                .entry(b.arn.clone())
                .or_insert_with(|| Balancer {
                    routes: BTreeMap::new(),
                    wanted: BTreeMap::new(),
                    applied: BTreeMap::new(),
                    listeners: BTreeMap::new(),
                    retry_at: BTreeMap::new(),
                });
            entry
                .routes
                .retain(|port, _| b.listeners.contains_key(port));
            entry
                .applied
                .retain(|port, _| b.listeners.contains_key(port));
            entry
                .wanted
                .retain(|port, _| b.listeners.contains_key(port));
            entry
                .listeners
                .retain(|(ip, port), _| b.listeners.contains_key(port) && b.addresses.contains(ip));
            for (port, groups) in &b.listeners {
                let w = entry
                    .wanted
                    .entry(*port)
                    .or_insert_with(|| (groups.clone(), now - self.delay));
                if &w.0 != groups {
                    *w = (groups.clone(), now);
                }
                if now.duration_since(w.1) >= self.delay {
                    if entry.applied.get(port) != Some(&w.0) {
                        tracing::info!(
                            "local cloud: balancer {} :{port} now weighs {:?}",
                            b.arn,
                            w.0
                        );
                    }
                    entry.applied.insert(*port, w.0.clone());
                }
                let applied = entry.applied.get(port).cloned().unwrap_or_default();
                let route_groups: Vec<RouteGroup> = applied
                    .iter()
                    .map(|(arn, weight)| RouteGroup {
                        weight: *weight,
                        backends: backends(arn, view, &standins, &checks),
                    })
                    .collect();
                let route = entry.routes.entry(*port).or_default().clone();
                {
                    let mut r = lock(&route);
                    if r.groups != route_groups {
                        r.groups = route_groups.clone();
                    }
                }
                for ip in &b.addresses {
                    table.insert(
                        (*ip, *port),
                        route_groups
                            .iter()
                            .map(|g| (g.weight, g.backends.clone()))
                            .collect(),
                    );
                    if !ip.is_loopback() {
                        continue; // never listen on, nor connect to, anything but loopback
                    }
                    let key = (*ip, *port);
                    if entry.listeners.contains_key(&key)
                        || entry.retry_at.get(&key).is_some_and(|t| now < *t)
                    {
                        continue;
                    }
                    match listen(*ip, *port, route.clone()) {
                        Ok(task) => {
                            entry.listeners.insert(key, task);
                            entry.retry_at.remove(&key);
                        }
                        Err(err) => {
                            tracing::warn!("local cloud: cannot listen on {ip}:{port}: {err}");
                            entry.retry_at.insert(key, now + BIND_RETRY);
                        }
                    }
                }
            }
        }
        drop(checks);
        lock(&self.shared).balancers = table;
    }

    /// Starts the health checks that are due, and forgets targets no longer registered.
    fn probe_due(&self, view: &View, standins: &BTreeMap<String, Ipv4Addr>, now: Instant) {
        let mut checks = lock(&self.checks);
        let registered: BTreeSet<(String, String)> = view
            .groups
            .iter()
            .flat_map(|(arn, g)| {
                g.targets
                    .iter()
                    .map(move |(id, _)| (arn.clone(), id.clone()))
            })
            .collect();
        checks.retain(|k, _| registered.contains(k));
        for (arn, g) in &view.groups {
            let interval = g.check.interval.mul_f64(self.check_scale);
            let timeout = g
                .check
                .timeout
                .mul_f64(self.check_scale)
                .max(Duration::from_millis(200));
            for (id, port) in &g.targets {
                let key = (arn.clone(), id.clone());
                let c = checks.entry(key.clone()).or_insert(Check {
                    state: TargetState::Initial,
                    passes: 0,
                    fails: 0,
                    next_at: now,
                    in_flight: false,
                });
                if c.in_flight || now < c.next_at {
                    continue;
                }
                c.in_flight = true;
                c.next_at = now + interval;
                let addr = standins
                    .get(id)
                    .map(|ip| SocketAddr::from((*ip, g.check.port.unwrap_or(*port))));
                let hc = g.check.clone();
                let all = self.checks.clone();
                tokio::spawn(async move {
                    let ok = match addr {
                        Some(a) => probe(a, hc.http_path.as_deref(), timeout).await,
                        None => false, // not booted, or its process is gone
                    };
                    if let Some(c) = lock(&all).get_mut(&key) {
                        c.in_flight = false;
                        c.record(ok, &hc);
                    }
                });
            }
        }
    }

    /// Writes the verdicts for the emulator's `DescribeTargetHealth` (atomically, only
    /// when they changed).
    fn write_verdicts(&mut self) {
        let mut doc: BTreeMap<String, BTreeMap<String, &str>> = BTreeMap::new();
        for ((arn, id), c) in lock(&self.checks).iter() {
            if c.state != TargetState::Initial {
                doc.entry(arn.clone())
                    .or_default()
                    .insert(id.clone(), c.state.as_str());
            }
        }
        let text = serde_json::to_string(&doc).unwrap_or_default();
        if text == self.written {
            return;
        }
        let tmp = self.health_file.with_extension("tmp");
        match std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.health_file)) {
            Ok(()) => self.written = text,
            Err(e) => tracing::warn!("local cloud: writing {}: {e}", self.health_file.display()),
        }
    }

    pub(crate) fn stop_all(&mut self) {
        self.balancers.clear();
        lock(&self.shared).balancers.clear();
    }
}

/// The stand-ins group `arn` sends to: its healthy targets, else (fail open) all of
/// its registered targets that run.
fn backends(
    arn: &str,
    view: &View,
    standins: &BTreeMap<String, Ipv4Addr>,
    checks: &BTreeMap<(String, String), Check>,
) -> Vec<SocketAddr> {
    let Some(g) = view.groups.get(arn) else {
        return Vec::new();
    };
    let at = |id: &str, port: u16| standins.get(id).map(|ip| SocketAddr::from((*ip, port)));
    let healthy: Vec<SocketAddr> = g
        .targets
        .iter()
        .filter(|(id, _)| {
            checks
                .get(&(arn.to_string(), id.clone()))
                .is_some_and(|c| c.state == TargetState::Healthy)
        })
        .filter_map(|(id, port)| at(id, *port))
        .collect();
    if !healthy.is_empty() {
        return healthy;
    }
    g.targets
        .iter()
        .filter_map(|(id, port)| at(id, *port))
        .collect()
}

fn listen(
    ip: Ipv4Addr,
    port: u16,
    route: Arc<Mutex<Route>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    super::eip::proxy(ip, port, move || lock(&route).pick())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_new_connections_and_zero_weight_gets_none() {
        let a: SocketAddr = "127.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:80".parse().unwrap();
        let c: SocketAddr = "127.0.0.4:80".parse().unwrap();
        let mut r = Route {
            groups: vec![
                RouteGroup {
                    weight: 90,
                    backends: vec![a, b],
                },
                RouteGroup {
                    weight: 10,
                    backends: vec![c],
                },
            ],
            turns: Vec::new(),
        };
        let mut counts: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for _ in 0..2000 {
            *counts.entry(r.pick().unwrap()).or_default() += 1;
        }
        let canary = counts[&c];
        assert!((100..=300).contains(&canary), "10% of 2000, got {canary}");
        assert!(
            counts[&a].abs_diff(counts[&b]) <= 1,
            "round robin: {counts:?}"
        );
        r.groups[1].weight = 0;
        assert!((0..200).all(|_| r.pick() != Some(c)));
        r.groups[0].backends.clear();
        assert_eq!(r.pick(), None, "no group can take it");
    }
}
