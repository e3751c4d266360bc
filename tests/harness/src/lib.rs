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
//! - [`workspace_bin`]: another package's binary, built by cargo, from the target dir.

pub mod artifact;
pub mod http;
mod server;

pub use server::ServerProcess;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;

pub mod cloud;

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

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1 only, with
/// SCRAM password authentication and a generated superuser password.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    base: PathBuf,
    port: u16,
    password: String,
}

/// The cluster shared by every test in this process (started on first use).
pub fn postgres() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(|| PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}")))
}

/// Debian's PostgreSQL server binaries: `PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| HarnessError::Missing {
            what: "PostgreSQL server binaries (initdb, pg_ctl)".into(),
            hint: "run tools/bootstrap.sh (installs Debian's postgresql), or set PG_BIN".into(),
        })
}

/// PostgreSQL refuses to run as root; as root, the cluster runs as the `postgres` system
/// user that Debian's package creates.
fn service_user() -> Result<Option<(u32, u32)>, HarnessError> {
    let euid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|u| u.parse::<u32>().ok())
        })
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| HarnessError::Missing {
            what: "the postgres system user (needed to run PostgreSQL as root)".into(),
            hint: "run tools/bootstrap.sh (Debian's postgresql package creates it)".into(),
        })
}

impl PgCluster {
    /// Starts a new cluster (use [`postgres`] for the shared one).
    pub fn start() -> Result<PgCluster, HarnessError> {
        let bin = pg_bin()?;
        let user = service_user()?;
        let base = tempfile::Builder::new()
            .prefix("harness-pg-")
            .tempdir()
            .map_err(io_err("creating the cluster's temp dir"))?
            .keep();
        let password = random_token(24);
        let pwfile = base.join("pwfile");
        fs::write(&pwfile, &password).map_err(io_err("writing the password file"))?;
        if let Some((uid, gid)) = user {
            for p in [&base, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(io_err(format!("chown {}", p.display())))?;
            }
        }
        // Clean up even if initdb or the start fails below.
        spawn_watchdog(&format!(
            "pid=$(head -1 {base}/data/postmaster.pid 2>/dev/null)\n\
             [ -n \"$pid\" ] && kill -QUIT \"$pid\" 2>/dev/null\n\
             for _ in $(seq 50); do kill -0 \"$pid\" 2>/dev/null || break; sleep 0.1; done\n\
             rm -rf {base}",
            base = shell_quote(&base)
        ))?;

        let data = base.join("data");
        let run = |cmd: &mut Command, what: &str| -> Result<(), HarnessError> {
            if let Some((uid, gid)) = user {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let out = cmd
                .env("LC_ALL", "C.UTF-8")
                .stdin(Stdio::null())
                .output()
                .map_err(io_err(what.to_string()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(HarnessError::Failed {
                    what: what.into(),
                    detail: format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                })
            }
        };
        run(
            Command::new(bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
                .args(["--auth=scram-sha-256", "--pwfile"])
                .arg(&pwfile),
            "initdb",
        )?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                sock = base.display()
            );
            let started = run(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-o", &opts, "-l"])
                    .arg(base.join("postgres.log"))
                    .args(["-w", "-t", "60", "start"]),
                "pg_ctl start",
            );
            match started {
                Ok(()) => {
                    return Ok(PgCluster {
                        bin,
                        base,
                        port,
                        password,
                    });
                }
                Err(e) => last = Some(e), // most likely the port was taken meanwhile
            }
        }
        let log = fs::read_to_string(base.join("postgres.log")).unwrap_or_default();
        Err(match last {
            Some(HarnessError::Failed { what, detail }) => HarnessError::Failed {
                what,
                detail: format!("{detail}\n{log}"),
            },
            Some(e) => e,
            None => unreachable!("five attempts were made"),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's generated password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL for `user`/`password` on database `db`.
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The superuser's URL for database `db`.
    pub fn admin_url(&self, db: &str) -> String {
        self.url_for("postgres", &self.password, db)
    }

    /// Runs SQL as the superuser through `psql`, failing on the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running psql"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(HarnessError::Failed {
                what: format!("psql {sql:?}"),
                detail: String::from_utf8_lossy(&out.stderr).into(),
            })
        }
    }

    /// A new, empty database of its own for one test.
    pub fn database(&'static self) -> TestDb {
        let name = unique("t").replace('-', "_");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        TestDb {
            cluster: self,
            name,
        }
    }

    /// The temp dir that holds the cluster (data, log, socket).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }
}

/// A database that exists for one test; dropped (with its connections) on drop.
#[derive(Debug)]
pub struct TestDb {
    cluster: &'static PgCluster,
    name: String,
}

impl TestDb {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The superuser's URL for this database.
    pub fn url(&self) -> String {
        self.cluster.admin_url(&self.name)
    }
    /// The URL for this database as another user.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        self.cluster.url_for(user, password, &self.name)
    }
    pub fn cluster(&self) -> &'static PgCluster {
        self.cluster
    }
    /// Runs SQL as the superuser in this database.
    pub fn psql(&self, sql: &str) -> Result<String, HarnessError> {
        self.cluster.psql(&self.name, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.cluster.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The AWS emulator
// ---------------------------------------------------------------------------------------

/// A `moto_server` on a free loopback port, with AMI validation on and the realistic
/// AMI list in `tests/harness/amis.json`.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    access_key: String,
    secret_key: String,
    _child: Child,
}

/// The emulator shared by every test in this process (started on first use).
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start().unwrap_or_else(|e| panic!("starting moto_server: {e}")))
}

/// The region every emulated client uses.
pub const REGION: &str = "us-east-1";

/// The `moto_server` executable: `MOTO_SERVER`, or the project's venv.
pub fn moto_server_bin() -> Result<PathBuf, HarnessError> {
    let p = match std::env::var_os("MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/moto_server"),
    };
    if p.exists() {
        Ok(p)
    } else {
        Err(HarnessError::Missing {
            what: format!("moto_server at {}", p.display()),
            hint: "run tools/bootstrap.sh (creates .venv with moto[server]), or set MOTO_SERVER"
                .into(),
        })
    }
}

/// The AMI list the emulator is started with.
pub fn amis_path() -> PathBuf {
    repo_root().join("tests/harness/amis.json")
}

impl Moto {
    /// Starts a private emulator (use [`moto`] for the shared one).
    pub fn start() -> Result<Moto, HarnessError> {
        Self::start_program(&moto_server_bin()?, None, &[])
    }

    /// Starts `program` (`moto_server`, or a Python interpreter running `script`, which
    /// takes moto_server's arguments) with `env` added.
    pub(crate) fn start_program(
        bin: &Path,
        script: Option<&Path>,
        env: &[(&str, String)],
    ) -> Result<Moto, HarnessError> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(bin)
                .args(script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("MOTO_ENABLE_AMI_VALIDATION", "true")
                .env("MOTO_AMIS_PATH", amis_path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(io_err(format!("starting {}", bin.display())))?;
            spawn_watchdog(&format!("kill {} 2>/dev/null", child.id()))?;
            if wait_for_port(port, Duration::from_secs(60)) && Self::responds(port) {
                // Drain stderr in the background so the pipe never fills up.
                if let Some(mut err) = child.stderr.take() {
                    std::thread::spawn(move || {
                        let mut sink = Vec::new();
                        let _ = err.read_to_end(&mut sink);
                    });
                }
                return Ok(Moto {
                    port,
                    access_key: format!("AKIA{}", random_token(16).to_uppercase()),
                    secret_key: random_token(40),
                    _child: child,
                });
            }
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            last = out
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
        }
        Err(HarnessError::Failed {
            what: "moto_server".into(),
            detail: last,
        })
    }

    fn responds(port: u16) -> bool {
        http::get(port, "/moto-api/").is_ok_and(|r| r.status == 200)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a child process needs to reach this emulator through the standard
    /// AWS SDK configuration (throwaway credentials generated for this run).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }

    /// An SDK configuration pointed at this emulator.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let creds = aws_credential_types::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "harness",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .load()
            .await
    }

    /// An S3 client for this emulator, with path-style addressing (moto serves every
    /// bucket on one host, so `bucket.127.0.0.1` would not resolve).
    pub async fn s3_client(&self) -> aws_sdk_s3::Client {
        let sdk = self.sdk_config().await;
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        )
    }

    /// An EC2 client for this emulator.
    pub async fn ec2_client(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config().await)
    }

    /// Wipes every resource in this emulator. Only for a private one ([`Moto::start`]):
    /// on the shared one it would pull the floor from under other tests.
    pub fn reset(&self) -> Result<(), HarnessError> {
        let r = http::post(self.port, "/moto-api/reset", "").map_err(|e| HarnessError::Failed {
            what: "POST /moto-api/reset".into(),
            detail: e.to_string(),
        })?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(HarnessError::Failed {
                what: "POST /moto-api/reset".into(),
                detail: format!("{} {}", r.status, r.body),
            })
        }
    }
}

/// The parsed `tests/harness/amis.json` (for tests that need an
/// AMI id or name from the emulator's list).
pub fn amis() -> serde_json::Value {
    let text = fs::read_to_string(amis_path()).expect("reading tests/harness/amis.json");
    serde_json::from_str(&text).expect("tests/harness/amis.json is JSON")
}
