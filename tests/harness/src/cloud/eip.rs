//! The Elastic IP stand-in: for each Elastic IP the emulator holds (moto hands them out
//! in 127.0.0.0/8), a TCP forwarder listens on that very address, on the port of every
//! booted instance's server (and any extra port asked for), and sends each new
//! connection to the stand-in of the instance that `DescribeAddresses` shows holding
//! the address. A change of holder takes effect after the propagation delay (AWS: 5 to
//! 20 seconds); connections already open stay with their backend, as on AWS. While no
//! instance holds the address, a connection is accepted and closed at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;

/// Connecting to a stand-in that does not answer gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A port that could not be bound is tried again after this long.
const BIND_RETRY: Duration = Duration::from_secs(5);

pub(crate) struct Forwarders {
    shared: Arc<Mutex<Shared>>,
    delay: Duration,
    extra_ports: Vec<u16>,
    eips: BTreeMap<Ipv4Addr, Eip>,
}

struct Eip {
    /// Where new connections go now.
    target: Arc<Mutex<Option<Ipv4Addr>>>,
    /// Where the emulator says they should go, and since when.
    wanted: Option<Ipv4Addr>,
    since: Instant,
    listeners: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    retry_at: BTreeMap<u16, Instant>,
}

impl Drop for Eip {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            l.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Forwarders {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>, delay: Duration, extra_ports: Vec<u16>) -> Self {
        Forwarders {
            shared,
            delay,
            extra_ports,
            eips: BTreeMap::new(),
        }
    }

    /// Follows the emulator: `holders` is every Elastic IP with the instance
    /// `DescribeAddresses` shows holding it. Must run inside the runtime.
    pub(crate) fn update(&mut self, holders: &[(Ipv4Addr, Option<String>)]) {
        super::runner::reap(&self.shared);
        let (standins, ports) = {
            let shared = lock(&self.shared);
            let live = shared
                .instances
                .iter()
                .filter(|(_, i)| matches!(i.status, super::InstanceStatus::Serving(_)));
            let standins: BTreeMap<String, Ipv4Addr> = live
                .clone()
                .map(|(id, i)| (id.clone(), i.standin))
                .collect();
            let mut ports: BTreeSet<u16> = self.extra_ports.iter().copied().collect();
            ports.extend(live.flat_map(|(_, i)| i.ports.iter().copied()));
            (standins, ports)
        };
        let now = Instant::now();
        let present: BTreeSet<Ipv4Addr> = holders
            .iter()
            .map(|(ip, _)| *ip)
            .filter(|ip| ip.is_loopback())
            .collect();
        self.eips.retain(|ip, _| present.contains(ip));
        for (ip, holder) in holders {
            if !ip.is_loopback() {
                continue; // never listen on, nor connect to, anything but loopback
            }
            let wanted = holder.as_ref().and_then(|h| standins.get(h)).copied();
            let e = self.eips.entry(*ip).or_insert_with(|| Eip {
                target: Arc::new(Mutex::new(None)),
                wanted: None,
                since: now,
                listeners: BTreeMap::new(),
                retry_at: BTreeMap::new(),
            });
            if wanted != e.wanted {
                e.wanted = wanted;
                e.since = now;
            }
            {
                let mut target = lock(&e.target);
                if *target != e.wanted && now.duration_since(e.since) >= self.delay {
                    tracing::info!(
                        "local cloud: Elastic IP {ip} now forwards to {:?}",
                        e.wanted
                    );
                    *target = e.wanted;
                }
            }
            for port in &ports {
                if e.listeners.contains_key(port) || e.retry_at.get(port).is_some_and(|t| now < *t)
                {
                    continue;
                }
                match listen(*ip, *port, e.target.clone()) {
                    Ok(task) => {
                        e.listeners.insert(*port, task);
                        e.retry_at.remove(port);
                    }
                    Err(err) => {
                        tracing::warn!("local cloud: cannot listen on {ip}:{port}: {err}");
                        e.retry_at.insert(*port, now + BIND_RETRY);
                    }
                }
            }
        }
        let mut shared = lock(&self.shared);
        shared.eips = self
            .eips
            .iter()
            .map(|(ip, e)| (*ip, *lock(&e.target)))
            .collect();
    }

    pub(crate) fn stop_all(&mut self) {
        self.eips.clear();
        lock(&self.shared).eips.clear();
    }
}

fn listen(
    ip: Ipv4Addr,
    port: u16,
    target: Arc<Mutex<Option<Ipv4Addr>>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    proxy(ip, port, move || {
        lock(&target).map(|backend| SocketAddr::from((backend, port)))
    })
}

/// Listens on `ip:port` and forwards each new connection to the backend `choose`
/// names when it arrives (kept for the connection's life, as AWS does); `None`, or a
/// backend that does not answer within [`CONNECT_TIMEOUT`], closes it. The Elastic IP
/// forwarders and the balancer stand-in ([`super::balancer`]) both run on it.
pub(crate) fn proxy(
    ip: Ipv4Addr,
    port: u16,
    choose: impl Fn() -> Option<SocketAddr> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let std_listener = std::net::TcpListener::bind(SocketAddr::from((ip, port)))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    Ok(tokio::spawn(async move {
        loop {
            let mut inbound = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("local cloud: accept on {ip}:{port}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let backend = choose();
            tokio::spawn(async move {
                let Some(backend) = backend else { return };
                if !backend.ip().is_loopback() {
                    return; // never connect to anything but loopback
                }
                let connect = tokio::net::TcpStream::connect(backend);
                let Ok(Ok(mut outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await
                else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    }))
}
