//! The HTTP-01 responder: pending answers by token, served on port 80, and the
//! "does this address reach me?" self-probe.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Pending HTTP-01 answers: token -> key authorization. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }
    pub fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// The path prefix the CA fetches.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Answers `GET /.well-known/acme-challenge/<token>` on `listener` forever: 200 with the
/// key authorization, 404 for anything else. One request per connection, 10 s each.
/// A minimal HTTP/1.x responder: the CA's validator is its only client.
pub async fn serve_challenges(listener: TcpListener, challenges: Challenges) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ch = challenges.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, ch)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "challenge listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, challenges: Challenges) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let found = (method == "GET" || method == "HEAD")
        .then(|| path.strip_prefix(CHALLENGE_PATH))
        .flatten()
        .and_then(|token| challenges.get(token));
    let (status, body) = match &found {
        Some(k) => ("200 OK", k.as_str()),
        None => ("404 Not Found", "not found\n"),
    };
    tracing::debug!(path, status, "challenge request");
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Whether `http://<ip>:<port>` reaches the responder serving `challenges`: a random
/// probe token is published and fetched through the address, as the CA would.
pub async fn answers_at(ip: IpAddr, port: u16, challenges: &Challenges) -> bool {
    let token: String = format!("probe-{:032x}", rand::rng().random::<u128>());
    let expected = format!("{token}.self-probe");
    challenges.insert(token.clone(), expected.clone());
    let fetch = async {
        let mut s = TcpStream::connect((ip, port)).await?;
        s.write_all(
            format!(
                "GET {CHALLENGE_PATH}{token} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        s.take(64 * 1024).read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let got = tokio::time::timeout(Duration::from_secs(5), fetch).await;
    challenges.remove(&token);
    match got {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out);
            text.starts_with("HTTP/1.1 200") && text.ends_with(&format!("\r\n\r\n{expected}"))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Issuance
// ---------------------------------------------------------------------------------------
