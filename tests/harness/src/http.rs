//! One HTTP client for tests and the demo: hyper's HTTP/1.1 client connection to
//! 127.0.0.1 (`get_at`/`request_at`: another loopback address; no other host can be
//! named), one connection per request.
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

use std::net::{Ipv4Addr, SocketAddr};
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
    #[error("{method} http://{addr}{path}: connecting: {source}")]
    Connect {
        method: String,
        addr: SocketAddr,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} http://{addr}{path}: {source}")]
    Protocol {
        method: String,
        addr: SocketAddr,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{method} http://{addr}{path}: invalid request: {source}")]
    Request {
        method: String,
        addr: SocketAddr,
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{method} http://{addr}{path}: no complete answer within {timeout:?}")]
    Timeout {
        method: String,
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
    #[error("{method} http://{addr}{path}: not a loopback address; tests talk to loopback only")]
    NotLoopback {
        method: String,
        addr: SocketAddr,
        path: String,
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
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    request_at(addr, method, path, &[], body, TIMEOUT)
}

/// `GET path` on `addr`, a loopback address other than 127.0.0.1 too (the local cloud's
/// stand-ins of instances and Elastic IPs), with no answer after `timeout` an error.
pub fn get_at(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    request_at(addr, "GET", path, &[], "", timeout)
}

/// [`request`] on `addr`, a loopback address, with `headers` besides `Host` (and
/// `Content-Type` for a body), and `timeout` instead of [`TIMEOUT`].
pub fn request_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    if !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback {
            method: method.into(),
            addr,
            path: path.into(),
        });
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(HttpError::Runtime)?
                .block_on(send(Target { addr, method, path }, headers, body, timeout))
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Where a request goes: what its errors name.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: SocketAddr,
    method: &'a str,
    path: &'a str,
}

async fn send(
    Target { addr, method, path }: Target<'_>,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let timed_out = || HttpError::Timeout {
        method: method.into(),
        addr,
        path: path.into(),
        timeout,
    };
    let protocol = |source| HttpError::Protocol {
        method: method.into(),
        addr,
        path: path.into(),
        source,
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect {
                method: method.into(),
                addr,
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
            .header(hyper::header::HOST, addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|source| HttpError::Request {
                method: method.into(),
                addr,
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
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| timed_out())?
}

/// One response read off a kept-alive HTTP/1.1 connection that a load generator writes
/// its requests to by hand (one request, then its response, on the same connection):
/// the status line, the headers, and a body of `Content-Length` bytes. Returns the
/// status; a stream that ends before the body's last byte, or a line that is no status
/// line, is an error.
pub async fn read_response<R>(r: &mut R) -> std::io::Result<u16>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    let ended = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the connection ended in the {what}"),
        )
    };
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(ended("status line"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 {
            return Err(ended("headers"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(status)
}
