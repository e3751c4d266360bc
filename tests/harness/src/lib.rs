//! Real services for tests and the local demo, on free loopback ports.
//!
//! ```no_run
//! // A private PostgreSQL cluster, shared by the tests of one test binary, and a fresh
//! // database per test (dropped when `db` is dropped).
//! let db = harness::postgres().database();
//! let url = db.url(); // postgres://postgres:…@127.0.0.1:PORT/t_…
//!
//! // The AWS emulator (moto), shared by the tests of one binary. Isolate by name:
//! let moto = harness::moto();
//! let bucket = harness::unique("bucket");
//! # async fn f(moto: &harness::Moto) {
//! let sdk = moto.sdk_config().await; // endpoint, region and throwaway credentials
//! # }
//! // For a test that must see an empty account (EC2 listings, resets), start its own:
//! let private = harness::Moto::start().unwrap();
//! ```
//!
//! Every service is started under a *watchdog*: a detached shell that polls the test
//! process and, once it is gone (normal exit, panic, SIGKILL, Ctrl-C), kills the service
//! and removes its temp directory. Nothing outlives the process that asked for it.
//!
//! Services bind 127.0.0.1 only. Binaries come from Debian's PostgreSQL packages
//! (`/usr/lib/postgresql/*/bin`, or `PG_BIN`) and from the project's venv (`.venv/`, or
//! `MOTO_SERVER`); `tools/bootstrap.sh` installs both.
//!
//! The rest of the test toolkit, shared by every crate's tests:
//!
//! - [`artifact`]: the model-artifact fixture (a fixed small model, saved and promoted);
//! - [`ServerProcess`]: the `server` binary on a free loopback port, killed on drop;
//! - [`Moto::s3_client`], [`Moto::ec2_client`]: SDK clients for the emulator;
//! - [`http`]: GET/POST to 127.0.0.1 on hyper's client;
//! - [`workspace_bin`]: another package's binary, built by cargo, from the target dir;
//! - [`files_under`], [`upload_dir`]: a folder's files, and the folder put in S3.

pub mod artifact;
pub mod http;
mod server;

pub use server::ServerProcess;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;

pub mod cloud;
mod moto;
pub mod pebble;
mod postgres;

pub use moto::{Moto, REGION, Recorded, amis, amis_path, moto, moto_server_bin, upload_dir};
pub use postgres::{PgCluster, TestDb, pg_bin, postgres};

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The repository root (the folder with the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    // Found at run time: a build cached from another checkout (CI keeps the target
    // directory between clones) carries that checkout's path in `env!`, and would
    // point every test at files of a clone that may be gone. `cargo test` and `make`
    // run from inside the repository (and cargo sets CARGO_MANIFEST_DIR for tests).
    let is_root =
        |p: &Path| p.join("Cargo.toml").is_file() && p.join("tests/harness/Cargo.toml").is_file();
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::current_dir().ok());
    for start in runtime {
        if let Some(root) = start.ancestors().find(|p| is_root(p)) {
            return root.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/harness lives two levels below the root")
        .to_path_buf()
}

/// The binary `name` of another workspace package, from the target directory this
/// process was built into (`target/<profile>/`, next to `deps/` that holds the tests).
///
/// Cargo tells a test where its own package's binaries are (`CARGO_BIN_EXE_<name>`: use
/// that when you can), but not another package's: artifact dependencies (`-Z bindeps`)
/// are unstable. So a test that runs, say, `server` from `deployer`'s tests finds it
/// here, where `cargo test --workspace`, `cargo build --bins` and `make demo` put it,
/// instead of running cargo itself from inside a test (a second build, its own lock,
/// minutes on a cold cache). A missing binary is an error that says how to build it.
pub fn workspace_bin(name: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(io_err("locating this executable"))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| HarnessError::Missing {
            what: format!("the folder of {}", exe.display()),
            hint: "run the test through cargo".into(),
        })?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::Missing {
            what: format!("the `{name}` binary at {}", bin.display()),
            hint: format!(
                "build it first: `cargo build --bin {name}` (`cargo test --workspace` and \
                 `make demo` build it too)"
            ),
        })
    }
}

/// The real input files of the original system (`../shared/fixtures/challenge`), or
/// `CHALLENGE_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("CHALLENGE_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("../shared/fixtures/challenge"),
    }
}

/// Every file below `root` (not the folders), in no particular order. Panics on an
/// unreadable folder: it is a test's fixture.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("reading the folder {}: {e}", root.display()));
    for e in entries {
        let p = e
            .unwrap_or_else(|e| panic!("reading the folder {}: {e}", root.display()))
            .path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A name no other test in any process will pick: `prefix-<12 random chars>`, lower
/// case so it is valid as an S3 bucket, a DynamoDB table or a PostgreSQL identifier.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_token(12).to_lowercase())
}

pub(crate) fn random_token(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

pub(crate) fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts a detached shell that waits for this process to end, then runs `cleanup`.
/// It lives in its own process group, so a Ctrl-C to the terminal's foreground group
/// reaches the test process but not the watchdog, which then does its job.
pub(crate) fn spawn_watchdog(cleanup: &str) -> Result<(), HarnessError> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.3; done\n{cleanup}",
        pid = std::process::id()
    );
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io_err("starting the watchdog shell"))?;
    Ok(())
}

pub(crate) fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
