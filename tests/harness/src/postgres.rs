//! A private PostgreSQL cluster per test process, and a database per test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{HarnessError, free_port, io_err, random_token, shell_quote, spawn_watchdog, unique};

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
