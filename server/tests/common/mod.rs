//! Shared by the server's integration tests: the harness's artifact fixture and server
//! process, and a small HTTP/1.1 client (keep-alive or one-shot) on plain TCP, so tests
//! see exactly what goes over the wire.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

// Not every test binary uses all three.
#[allow(unused_imports)]
pub use harness::artifact::{artifact, model, publish};

pub const ORIGINAL: &str =
    r#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_server"))
}

/// This package's server binary, running (`harness::ServerProcess`), spoken to with the
/// wire-level client below; killed on drop.
pub struct Server {
    pub process: harness::ServerProcess,
    pub port: u16,
}

impl Server {
    /// Starts `server --model <model> --listen 127.0.0.1:<free>` plus `args`, with
    /// `env`, and waits for `/healthz`.
    pub fn start(model: &str, args: &[&str], env: &[(&str, String)]) -> Server {
        let mut all = vec!["--model", model];
        all.extend_from_slice(args);
        let process = harness::ServerProcess::start(&server_bin(), &all, env)
            .unwrap_or_else(|e| panic!("{e}"));
        Server {
            port: process.port(),
            process,
        }
    }

    /// [`Server::start`] on the folder `model` with a fresh admin token, once ready
    /// (`/readyz` 200); the server and its token.
    pub fn start_with_admin_token(model: &std::path::Path) -> (Server, String) {
        let token = harness::unique("tok");
        let s = Server::start(
            model.to_str().unwrap(),
            &[],
            &[("SERVER_ADMIN_TOKEN", token.clone())],
        );
        s.wait_ready(200);
        (s, token)
    }

    pub fn logs(&self) -> String {
        self.process.logs()
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.port, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        request(self.port, "POST", path, &[], body.as_bytes())
    }

    /// `POST /admin/reload` with `authorization` as its `Authorization` header.
    pub fn reload(&self, authorization: &str) -> Resp {
        request(
            self.port,
            "POST",
            "/admin/reload",
            &[("Authorization", authorization)],
            b"",
        )
    }

    /// Waits until `/readyz` answers `want`.
    pub fn wait_ready(&self, want: u16) -> Resp {
        let start = Instant::now();
        loop {
            let r = self.get("/readyz");
            if r.status == want {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "readyz stayed {} {}: {}",
                r.status,
                r.body,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        self.process.signal(sig).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        self.process
            .wait_exit(deadline)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    Conn::open(port)
        .and_then(|mut c| c.send(method, path, headers, body, true))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    port: u16,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            port,
            reader: BufReader::new(s),
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        close: bool,
    ) -> std::io::Result<Resp> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.stream().write_all(&msg)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> std::io::Result<Resp> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
