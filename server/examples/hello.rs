//! The ceiling for the load benchmark: a hello-world hyper server with the same
//! connection setup as the real one (HTTP/1.1, keep-alive, tokio multi-thread), answering
//! every request with a fixed small JSON body.
//!
//! `cargo run --release -p server --example hello -- 127.0.0.1:PORT [read-body]`
//!
//! With `read-body` it first reads the request body (as any real POST handler must):
//! the like-for-like ceiling for `POST /predict`. With `header-timeout` it also arms
//! hyper's 10 s header read timeout, as the real server does, and with `graceful` it
//! wraps each connection in hyper-util's graceful-shutdown watcher: the server's two
//! protections, priced separately.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let flags: Vec<String> = std::env::args().skip(2).collect();
    let read_body = flags.iter().any(|f| f == "read-body");
    let header_timeout = flags.iter().any(|f| f == "header-timeout");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let watch = flags.iter().any(|f| f == "graceful");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let w = watch.then(|| graceful.watcher());
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    if read_body {
                        let _ = req.into_body().collect().await;
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        br#"{"label":0}"#,
                    ))))
                },
            );
            let mut b = http1::Builder::new();
            if header_timeout {
                b.timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
            }
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            if let Some(w) = w {
                let _ = w.watch(conn).await;
            } else {
                let _ = conn.await;
            }
        });
    }
}
