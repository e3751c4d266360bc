//! One HTTP client for tests and the demo: hyper's HTTP/1.1 client connection to
//! 127.0.0.1 (no other host can be named), one connection per request.
//!
//! The calls block, and work from plain threads and from inside an async runtime alike:
//! each request runs on a thread of its own with a small current-thread runtime.
//!
//! ```no_run
//! let r = harness::http::get(8080, "/readyz")?;
//! assert_eq!(r.status, 200);
//! let r = harness::http::post(8080, "/predict", r#"{"idx": 1}"#)?;
//! println!("{}", r.body);
//! # Ok::<(), harness::http::HttpError>(())
//! ```
//!
//! `server/tests/common` keeps its own client on a raw `TcpStream`: those tests check
//! what goes over the wire (keep-alive, chunked bodies, half-sent requests).

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long a request may take, from connecting to the last byte of the body.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status and body (lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} http://127.0.0.1:{port}{path}: connecting: {source}")]
    Connect {
        method: String,
        port: u16,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} http://127.0.0.1:{port}{path}: {source}")]
    Protocol {
        method: String,
        port: u16,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} http://127.0.0.1:{port}{path}: invalid request: {source}")]
    Request {
        method: String,
        port: u16,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{method} http://127.0.0.1:{port}{path}: no complete answer within {timeout:?}")]
    Timeout {
        method: String,
        port: u16,
        path: String,
        timeout: Duration,
    },
    #[error("starting the HTTP client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// `GET path` on 127.0.0.1:`port`.
pub fn get(port: u16, path: &str) -> Result<Response, HttpError> {
    request(port, "GET", path, "")
}

/// `POST path` on 127.0.0.1:`port` with a JSON body.
pub fn post(port: u16, path: &str, json: &str) -> Result<Response, HttpError> {
    request(port, "POST", path, json)
}

/// Any method; a non-empty body is sent as `application/json`.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> Result<Response, HttpError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(HttpError::Runtime)?
                .block_on(send(port, method, path, body))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

async fn send(port: u16, method: &str, path: &str, body: &str) -> Result<Response, HttpError> {
    let timeout = || HttpError::Timeout {
        method: method.into(),
        port,
        path: path.into(),
        timeout: TIMEOUT,
    };
    let protocol = |source| HttpError::Protocol {
        method: method.into(),
        port,
        path: path.into(),
        source,
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|source| HttpError::Connect {
                method: method.into(),
                port,
                path: path.into(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        // The connection's own task; it ends with the sender, when this request is done.
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"));
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|source| HttpError::Request {
                method: method.into(),
                port,
                path: path.into(),
                source,
            })?;
        let resp = sender.send_request(req).await.map_err(protocol)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| timeout())?
}
