//! Shared by the server's integration tests: artifacts on disk, the server binary as a
//! child process on a free loopback port, and a small HTTP/1.1 client (keep-alive or
//! one-shot) on plain TCP, so tests see exactly what goes over the wire.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use model::classifier::{Classifier, Logistic};
use model::{Artifact, ArtifactSpec, FeatureEncoding, Features, Model};

pub const ORIGINAL: &str =
    r#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#;

pub fn training() -> Vec<Features> {
    let mut v = Vec::new();
    for (i, b) in ["a", "b", "c", "d"].iter().enumerate() {
        for k in 0..5 {
            v.push(Features {
                attr_a: (i + k) as i64 % 3,
                attr_b: (*b).into(),
                scd_a: 0.1 * (k as f64) + 0.2 * i as f64,
                scd_b: (k as i64) + 1,
            });
        }
    }
    v
}

/// A logistic model whose intercept is `intercept` (so versions score differently).
pub fn model(intercept: f64) -> Model {
    let enc = FeatureEncoding::fit(&training()).unwrap();
    let w = enc.width();
    Model::new(
        enc,
        Classifier::LogisticRegression(Logistic {
            weights: (0..w).map(|i| 0.3 - 0.1 * i as f64).collect(),
            intercept,
        }),
        0.5,
    )
    .unwrap()
}

/// Makes an artifact created `secs` after a fixed instant.
pub fn artifact(intercept: f64, secs: u64) -> Artifact {
    let mut metrics = serde_json::Map::new();
    metrics.insert("roc_auc".into(), serde_json::json!(0.8));
    Artifact::new(ArtifactSpec {
        model: model(intercept),
        code_version: "server-tests".into(),
        training_data: "sha256:00".into(),
        metrics,
        extra_files: Default::default(),
        created: UNIX_EPOCH + Duration::from_secs(1_795_539_600 + secs),
    })
    .unwrap()
}

/// Saves and promotes an artifact under `root`; returns its version.
pub fn publish(root: &Path, intercept: f64, secs: u64) -> String {
    let a = artifact(intercept, secs);
    a.save(root).unwrap();
    model::artifact::promote(root, a.version()).unwrap();
    a.version().to_string()
}

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_server"))
}

/// The server binary, running; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Server {
    /// Starts `server --model <model> --listen 127.0.0.1:<free>` plus `args`, with
    /// `env`, and waits for `/healthz`.
    pub fn start(model: &str, args: &[&str], env: &[(&str, String)]) -> Server {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("server.log");
        let port = harness::free_port();
        let mut cmd = Command::new(server_bin());
        cmd.args(["--model", model, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "text"])
            .args(args)
            .env_remove("SERVER_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut s = Server {
            child,
            port,
            log,
            _logdir: logdir,
        };
        let start = Instant::now();
        loop {
            if s.try_get("/healthz").is_ok_and(|r| r.status == 200) {
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("server exited with {st}: {}", s.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not come up: {}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_get(&self, path: &str) -> std::io::Result<Resp> {
        Conn::open(self.port)?.send("GET", path, &[], b"", true)
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.port, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        request(self.port, "POST", path, &[], body.as_bytes())
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
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < deadline,
                "server did not exit: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
