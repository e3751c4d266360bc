//! The boot of one instance, as EC2 and systemd would do it: its user data (the real
//! `boot.sh`) in a sandbox root, then the server the installed unit describes, on the
//! instance's loopback stand-in, with what its role and its route to S3 allow.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::InstanceStatus;
use super::runner::{Context, kill_group, lock};

/// The boot of one instance, on a thread of its own.
pub(crate) struct Boot {
    pub(crate) ctx: Arc<Context>,
    pub(crate) id: String,
    pub(crate) standin: Ipv4Addr,
    pub(crate) dir: PathBuf,
    pub(crate) user_data: Option<Vec<u8>>,
    pub(crate) route: Result<String, String>,
}

impl Boot {
    fn note(&self, log: &mut fs::File, line: &str) {
        let _ = writeln!(log, "local-cloud: {}: {line}", self.id);
    }

    fn set_status(&self, status: InstanceStatus) {
        if let Some(i) = lock(&self.ctx.shared).instances.get_mut(&self.id)
            && i.alive()
        {
            i.status = status;
        }
    }

    pub(crate) fn run(self) {
        let log_path = self.dir.join("boot.log");
        let mut log = match fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("local cloud: {}: {e}", log_path.display());
                self.set_status(InstanceStatus::BootFailed(None));
                return;
            }
        };
        if let Err(why) = self.boot(&mut log) {
            if let Some(i) = lock(&self.ctx.shared).instances.get_mut(&self.id)
                && i.status == InstanceStatus::Booting
            {
                i.status = InstanceStatus::BootFailed(None);
            }
            self.note(&mut log, &why);
            tracing::warn!("local cloud: {}: {why}", self.id);
        }
    }

    fn boot(&self, log: &mut fs::File) -> Result<(), String> {
        let io = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| format!("{what}: {e}")
        };
        self.note(log, &format!("stand-in address {}", self.standin));
        match &self.route {
            Ok(how) => self.note(log, &format!("route to S3: {how}")),
            Err(why) => self.note(log, why),
        }
        let Some(user_data) = &self.user_data else {
            self.set_status(InstanceStatus::BootFailed(None));
            return Err("no user data: nothing to boot".into());
        };
        let root = self.dir.join("root");
        let bin = self.dir.join("bin");
        fs::create_dir_all(&bin).map_err(io("creating bin"))?;
        let script = self.dir.join("user-data");
        fs::write(&script, user_data).map_err(io("writing the user data"))?;
        let calls = self.dir.join("systemctl.calls");
        let systemctl = bin.join("systemctl");
        write_exec(
            &systemctl,
            &format!(
                "#!/bin/sh\n# systemctl stand-in: the runner starts the unit itself.\n\
                 echo \"$*\" >> {}\n",
                crate::shell_quote(&calls)
            ),
        )?;
        let mut path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        if self.route.is_err() {
            // No route: a connection to S3 would hang until curl's connect timeout.
            let nonet = self.dir.join("nonet");
            fs::create_dir_all(&nonet).map_err(io("creating nonet"))?;
            write_exec(
                &nonet.join("curl"),
                "#!/bin/sh\n# No route to S3 from this instance (local cloud).\n\
                 for a; do url=$a; done\nhost=${url#*://}; host=${host%%/*}\n\
                 echo \"curl: (28) Failed to connect to $host after 130000 ms: Connection timed out\" >&2\n\
                 exit 28\n",
            )?;
            path = format!("{}:{path}", nonet.display());
        }
        let out = log.try_clone().map_err(io("boot log"))?;
        let err = log.try_clone().map_err(io("boot log"))?;
        let mut child = Command::new("bash")
            .arg(&script)
            .env("ROOT", &root)
            .env("SYSTEMCTL", &systemctl)
            .env("SERVICE_USER", current_user())
            .env("PATH", &path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(io("running the user data"))?;
        let pgid = child.id();
        let registered = {
            let mut shared = lock(&self.ctx.shared);
            let registered = match shared.instances.get_mut(&self.id) {
                Some(i) if i.alive() => {
                    i.groups.push(pgid);
                    true
                }
                _ => false,
            };
            shared.sync_pgids();
            registered
        };
        if !registered {
            kill_group(pgid);
        }
        let status = child.wait().map_err(io("waiting for the user data"));
        {
            let mut shared = lock(&self.ctx.shared);
            if let Some(i) = shared.instances.get_mut(&self.id) {
                i.groups.retain(|g| *g != pgid);
            }
            shared.sync_pgids();
        }
        let status = status?;
        if !status.success() {
            self.set_status(InstanceStatus::BootFailed(status.code()));
            return Err(format!("user data failed ({status})"));
        }
        self.note(log, "user data done");
        let unit_path = root.join("etc/systemd/system/churn-api.service");
        let unit = fs::read_to_string(&unit_path).map_err(|e| {
            self.set_status(InstanceStatus::BootFailed(None));
            format!("no unit installed at {}: {e}", unit_path.display())
        })?;
        self.start_unit(log, &root, &unit)
    }

    fn start_unit(&self, log: &mut fs::File, root: &Path, unit: &str) -> Result<(), String> {
        let mut exec = None;
        let mut env = Vec::new();
        let mut ports = Vec::new();
        for line in unit.lines().map(str::trim) {
            if let Some(kv) = line.strip_prefix("Environment=") {
                let kv = kv.trim_matches('"');
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                // Every listener the unit names (the API, and with HTTPS on the HTTPS
                // port and the ACME challenge responder) moves to the stand-in; the
                // Elastic IP's forwarder listens on each of these ports.
                let v = if LISTEN_VARS.contains(&k) {
                    let port = v.rsplit_once(':').map(|(_, p)| p).unwrap_or(v);
                    if let Ok(p) = port.parse::<u16>() {
                        ports.push(p);
                    }
                    format!("{}:{port}", self.standin)
                } else {
                    v.to_string()
                };
                env.push((k.to_string(), v));
            } else if let Some(e) = line.strip_prefix("ExecStart=") {
                exec = Some(e.to_string());
            }
        }
        let exec = exec.ok_or("the unit has no ExecStart")?;
        let mut words = exec.split_whitespace();
        let program = words.next().ok_or("ExecStart is empty")?;
        let program = root.join(program.trim_start_matches('/'));
        let journal = self.dir.join("journal.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&journal)
            .map_err(|e| format!("{}: {e}", journal.display()))?;
        let file2 = file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&program);
        cmd.args(words)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .process_group(0);
        // What the instance role gives it: S3 through the emulator, if it has a route.
        for (k, v) in &self.ctx.moto_env {
            cmd.env(k, v);
        }
        if self.route.is_err() {
            cmd.env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", refusing_port()),
            );
        }
        let mut shared = lock(&self.ctx.shared);
        let Some(i) = shared.instances.get_mut(&self.id).filter(|i| i.alive()) else {
            return Err("stopped before its unit started".into());
        };
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let pid = child.id();
        i.groups.push(pid);
        i.server = Some(child);
        i.ports = ports;
        i.status = InstanceStatus::Serving(pid);
        shared.sync_pgids();
        drop(shared);
        self.note(
            log,
            &format!(
                "started {} (pid {pid}), journal in {}",
                program.display(),
                journal.display()
            ),
        );
        Ok(())
    }
}

/// The unit's variables that name a listen address `0.0.0.0:PORT`.
const LISTEN_VARS: [&str; 3] = [
    "SERVER_LISTEN",
    "SERVER_HTTPS_LISTEN",
    "SERVER_ACME_HTTP_LISTEN",
];

fn write_exec(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, text)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A loopback port nothing listens on (bound a moment ago, then closed): connecting
/// is refused at once.
fn refusing_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9)
}

fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "nobody".into())
}
