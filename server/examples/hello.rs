//! The ceiling for the load benchmark: a hello-world hyper server with the same
//! connection setup as the real one (HTTP/1.1, keep-alive, tokio multi-thread), answering
//! every request with a fixed small JSON body.
//!
//! `cargo run --release -p server --example hello -- 127.0.0.1:PORT [read-body]`
//!
//! With `read-body` it first reads the request body (as any real POST handler must):
//! the like-for-like ceiling for `POST /predict`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let read_body = std::env::args().nth(2).as_deref() == Some("read-body");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
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
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
