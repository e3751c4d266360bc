//! The local simulation's Elastic IP: a TCP forwarder on loopback that follows
//! `DescribeAddresses`. Whichever colour's instance holds the address gets the
//! connections, reached at that colour's loopback endpoint (the real server process
//! standing in for the instance).
//!
//! A real move is not instant: public reports put it at 5 to 20 seconds, during which
//! traffic still reaches the old instance. `delay` mimics that: a move seen at `t`
//! takes effect at `t + delay`, so the old colour must keep serving through it (which
//! is why the deployer keeps it for a rollback window instead of stopping it at once).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::aws::{AwsError, Clients};
use crate::health::{ProbeError, Target, is_loopback};
use crate::state::Color;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Where to listen (loopback only).
    pub listen: SocketAddr,
    /// The Elastic IP's allocation id.
    pub allocation: String,
    /// Each colour's loopback server.
    pub endpoints: BTreeMap<Color, Target>,
    /// The propagation delay of a move.
    pub delay: Duration,
    /// How often DescribeAddresses is asked.
    pub poll: Duration,
}

#[derive(Debug, Default)]
struct Routing {
    current: Option<Color>,
    /// A move seen but not yet in effect: (to, when seen).
    pending: Option<(Color, Instant)>,
    switches: u64,
}

/// A running forwarder; stopped on drop.
#[derive(Debug)]
pub struct Forwarder {
    pub addr: SocketAddr,
    routing: Arc<Mutex<Routing>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Forwarder {
    /// The colour traffic goes to now.
    pub fn current(&self) -> Option<Color> {
        self.routing.lock().map(|r| r.current).unwrap_or(None)
    }

    /// How many times the target changed (the first routing counts as none).
    pub fn switches(&self) -> u64 {
        self.routing.lock().map(|r| r.switches).unwrap_or(0)
    }

    /// Runs until the task is aborted or the process ends.
    pub async fn run_forever(self) {
        std::future::pending::<()>().await;
        drop(self);
    }
}

/// Which colour's instance holds the address, per DescribeAddresses (and the colour
/// tag of that instance).
async fn holder_color(
    clients: &Clients,
    allocation: &str,
    cache: &mut BTreeMap<String, Option<Color>>,
) -> Result<Option<Color>, AwsError> {
    let (_, instance) = crate::release::eip_holder(clients, allocation).await?;
    let Some(id) = instance else {
        return Ok(None);
    };
    if let Some(c) = cache.get(&id) {
        return Ok(*c);
    }
    let out = clients
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .filters(Filter::builder().name("tag-key").values("color").build())
        .send()
        .await
        .map_err(|e| AwsError::new(format!("aws_instance ({id})"), "DescribeInstances", e))?;
    let color = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .flat_map(|i| i.tags())
        .find(|t| t.key() == Some("color"))
        .and_then(|t| match t.value() {
            Some("blue") => Some(Color::Blue),
            Some("green") => Some(Color::Green),
            _ => None,
        });
    cache.insert(id, color);
    Ok(color)
}

/// Starts listening and following the address.
pub async fn start(clients: Clients, cfg: ForwarderConfig) -> Result<Forwarder, ForwardError> {
    if !is_loopback(cfg.listen.ip()) {
        return Err(ProbeError::NotLoopback {
            target: cfg.listen.to_string(),
        }
        .into());
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ForwardError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ForwardError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let routing = Arc::new(Mutex::new(Routing::default()));
    // The first routing, before accepting anything.
    let mut cache = BTreeMap::new();
    let first = holder_color(&clients, &cfg.allocation, &mut cache).await?;
    if let Ok(mut r) = routing.lock() {
        r.current = first;
    }
    tracing::info!(%addr, color = ?first, "forwarder listening");

    let follow = {
        let routing = routing.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cfg.poll).await;
                let seen = match holder_color(&clients, &cfg.allocation, &mut cache).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("forwarder: {e}");
                        continue;
                    }
                };
                let Ok(mut r) = routing.lock() else { return };
                match (seen, r.pending) {
                    (s, _) if s == r.current => r.pending = None,
                    (Some(to), Some((p, since))) if p == to => {
                        if since.elapsed() >= cfg.delay {
                            tracing::info!(from = ?r.current, to = %to, "forwarder: the move took effect");
                            r.current = Some(to);
                            r.pending = None;
                            r.switches += 1;
                        }
                    }
                    (Some(to), _) => {
                        tracing::info!(to = %to, delay_ms = cfg.delay.as_millis() as u64, "forwarder: move seen, propagating");
                        r.pending = Some((to, Instant::now()));
                    }
                    (None, _) => {}
                }
            }
        })
    };
    let accept = {
        let routing = routing.clone();
        let endpoints = cfg.endpoints.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let color = routing.lock().map(|r| r.current).unwrap_or(None);
                let Some(target) = color.and_then(|c| endpoints.get(&c)).copied() else {
                    continue; // nobody holds the address: the connection is dropped
                };
                tokio::spawn(async move {
                    match TcpStream::connect(target.addr).await {
                        Ok(mut out) => {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                        Err(e) => tracing::warn!(%target, "forwarder: connecting: {e}"),
                    }
                });
            }
        })
    };
    Ok(Forwarder {
        addr,
        routing,
        tasks: vec![follow, accept],
    })
}
