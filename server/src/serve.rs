//! The listener loop: HTTP/1.1 connections on hyper, reload on SIGHUP, graceful
//! shutdown on SIGTERM or SIGINT.
//!
//! Shutdown: stop accepting (the listener is dropped), readiness turns 503, every open
//! connection finishes its in-flight request and is closed, all within the deadline;
//! then the prediction sinks write what is queued (within the same deadline again) and
//! [`run`] returns.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::app::{self, AppState};
use crate::https::{HttpMode, TlsServe};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("cannot install the {what} handler: {source}")]
    Signal {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// How long in-flight requests get after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long a client may take to send request headers (zero: no limit).
    pub header_read_timeout: Duration,
    /// The longest pause between attempts at the first model load (zero: try once).
    pub first_load_max_backoff: Duration,
}

/// The pause before attempt `n + 1` of the first load: 0.5 s doubling up to `max`,
/// with up to 25% jitter so a fleet booting together does not read S3 in step.
pub fn first_load_backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// The first model load, retried with backoff until a model is in (by this loop, an
/// admin reload or SIGHUP) or the server shuts down. At boot S3 or the instance's
/// credentials may not be reachable yet; giving up after one try would leave the
/// server not ready until someone sends SIGHUP.
async fn first_load(state: Arc<AppState>, max_backoff: Duration) {
    let mut attempt = 0u32;
    loop {
        if state.reload().await.is_ok() || max_backoff.is_zero() {
            return;
        }
        let pause = first_load_backoff(attempt, max_backoff);
        tracing::warn!(
            attempt = attempt + 1,
            retry_in_s = pause.as_secs_f64(),
            "first model load failed; retrying"
        );
        tokio::time::sleep(pause).await;
        if state.has_model() || state.is_shutting_down() {
            return;
        }
        attempt += 1;
    }
}

/// Binds, loads the model, serves until SIGTERM/SIGINT, drains, returns.
pub async fn run(state: Arc<AppState>, opts: ServeOptions) -> Result<(), ServeError> {
    run_with_tls(state, opts, None).await
}

/// [`run`], plus HTTPS, the HTTP-01 responder and the certificate renewer when `tls` is
/// set (see [`crate::https`]). HTTPS connections drain on shutdown like plain ones.
pub async fn run_with_tls(
    state: Arc<AppState>,
    opts: ServeOptions,
    tls: Option<TlsServe>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(opts.listen);
    let mut term = signal(SignalKind::terminate()).map_err(|source| ServeError::Signal {
        what: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| ServeError::Signal {
        what: "SIGINT",
        source,
    })?;
    let mut hup = signal(SignalKind::hangup()).map_err(|source| ServeError::Signal {
        what: "SIGHUP",
        source,
    })?;
    tracing::info!(addr = %local, release = %state.config.release, "listening");
    let mut https = None;
    let mut redirect_to = None;
    if let Some(t) = &tls {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let l = bind(t.https_listen).await?;
        let challenge = bind(t.challenge_listen).await?;
        let config = crate::https::server_config(t.resolver.clone()).map_err(ServeError::Tls)?;
        tracing::info!(https = %t.https_listen, acme_http = %t.challenge_listen,
            http_mode = ?t.http_mode, "listening for HTTPS and ACME challenges");
        tokio::spawn(tls::acme::serve_challenges(challenge, t.challenges.clone()));
        tokio::spawn(t.renewer.clone().run());
        https = Some((l, tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        if t.http_mode == HttpMode::Redirect {
            redirect_to = Some(Arc::<str>::from(t.public_base.as_str()));
        }
    }

    // The first load runs beside the listener: liveness answers at once, readiness
    // once a model is in.
    tokio::spawn(first_load(state.clone(), opts.first_load_max_backoff));
    {
        let st = state.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the model");
                let _ = st.reload().await;
            }
        });
    }

    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    // Zero disables the header timeout (hyper's own default is 30 s).
    builder.header_read_timeout(
        (!opts.header_read_timeout.is_zero()).then_some(opts.header_read_timeout),
    );

    let reason = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // e.g. too many open files: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let to = redirect_to.clone();
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    let to = to.clone();
                    async move {
                        Ok::<_, Infallible>(match to {
                            Some(base) if !crate::https::stays_plain(req.uri().path()) => {
                                crate::https::redirect(&base, req.uri())
                            }
                            _ => app::handle(st, req).await,
                        })
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            accepted = accept_https(https.as_ref()) => {
                let Some((_, acceptor)) = https.as_ref() else { continue };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(app::handle(st, req).await) }
                });
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                // The handshake shares the header timeout (a client that never finishes
                // it must not hold a task forever).
                let hs_timeout = if opts.header_read_timeout.is_zero() {
                    Duration::from_secs(30)
                } else {
                    opts.header_read_timeout
                };
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(hs_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, "HTTPS connection ended with an error");
                    }
                });
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };

    drop(listener);
    drop(https);
    state.begin_shutdown();
    tracing::info!(
        signal = reason,
        deadline_s = opts.shutdown_timeout.as_secs_f64(),
        "shutting down: draining connections"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(opts.shutdown_timeout) => {
            tracing::warn!("shutdown deadline passed with connections still open; closing them");
        }
    }
    if let Some(l) = &state.predlog {
        // A budget of its own: the sinks write what is queued, then give up.
        l.close(opts.shutdown_timeout).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accepts on the HTTPS listener, or never when there is none.
async fn accept_https(
    https: Option<&(TcpListener, tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match https {
        Some((l, _)) => l.accept().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let max = Duration::from_secs(30);
        for (attempt, base_ms) in [
            (0, 500),
            (1, 1000),
            (2, 2000),
            (5, 16_000),
            (6, 30_000),
            (40, 30_000),
        ] {
            let d = first_load_backoff(attempt, max);
            let base = Duration::from_millis(base_ms);
            assert!(
                d >= base && d <= base.mul_f64(1.25),
                "attempt {attempt}: {d:?}"
            );
        }
    }
}
