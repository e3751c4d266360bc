//! The `server` binary as a child process on a free loopback port, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, io_err};

/// How long a server may take to answer `/healthz` (it binds before loading its model).
const STARTUP: Duration = Duration::from_secs(30);

/// A running `server`: its stderr goes to a log file of its own; killed and reaped on
/// drop.
///
/// ```no_run
/// # let model = std::path::Path::new("/tmp/models");
/// let bin = harness::workspace_bin("server")?; // or env!("CARGO_BIN_EXE_server")
/// let s = harness::ServerProcess::start(&bin, &["--model", model.to_str().unwrap()], &[])?;
/// let r = harness::http::get(s.port(), "/readyz");
/// # Ok::<(), harness::HarnessError>(())
/// ```
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `bin --listen 127.0.0.1:<free port> --log-format text ARGS` with `RUST_LOG=info`,
    /// no `SERVER_ADMIN_TOKEN` from this process, then `env`; returns once `/healthz`
    /// answers 200.
    pub fn start(
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<ServerProcess, HarnessError> {
        let port = crate::free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "text"])
            .args(args)
            .env_remove("SERVER_ADMIN_TOKEN")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        ServerProcess::spawn(cmd, port)
    }

    /// Spawns `cmd`, which the caller has told to listen on 127.0.0.1:`port` (by flag or
    /// environment), with stdin and stdout closed and stderr to the log; returns once
    /// `/healthz` answers 200.
    pub fn spawn(mut cmd: Command, port: u16) -> Result<ServerProcess, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("harness-server-")
            .tempdir()
            .map_err(io_err("creating the server's log dir"))?;
        let log = dir.path().join("server.log");
        let stderr = std::fs::File::create(&log).map_err(io_err("creating the server log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_err(format!(
                "starting {}",
                Path::new(cmd.get_program()).display()
            )))?;
        let mut s = ServerProcess {
            child,
            port,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if crate::http::get(port, "/healthz").is_ok_and(|r| r.status == 200) {
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(HarnessError::Failed {
                    what: "server".into(),
                    detail: format!("exited with {st} before /healthz answered:\n{}", s.logs()),
                });
            }
            if start.elapsed() > STARTUP {
                return Err(HarnessError::Failed {
                    what: "server".into(),
                    detail: format!("/healthz did not answer within {STARTUP:?}:\n{}", s.logs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, `TERM`, …) through `kill`.
    pub fn signal(&self, sig: &str) -> Result<(), HarnessError> {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map_err(io_err("running kill"))?;
        if st.success() {
            Ok(())
        } else {
            Err(HarnessError::Failed {
                what: format!("kill -{sig} {}", self.child.id()),
                detail: st.to_string(),
            })
        }
    }

    /// Waits up to `deadline` for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus, HarnessError> {
        let start = Instant::now();
        loop {
            if let Some(st) = self
                .child
                .try_wait()
                .map_err(io_err("waiting for the server"))?
            {
                return Ok(st);
            }
            if start.elapsed() > deadline {
                return Err(HarnessError::Failed {
                    what: "server".into(),
                    detail: format!("did not exit within {deadline:?}:\n{}", self.logs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has ended, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap (also done on drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
