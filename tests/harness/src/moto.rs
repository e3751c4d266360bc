//! The AWS emulator (`moto_server`) on a free loopback port.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{
    HarnessError, free_port, http, io_err, random_token, repo_root, spawn_watchdog, wait_for_port,
};

/// A `moto_server` on a free loopback port, with AMI validation on and the realistic
/// AMI list in `tests/harness/amis.json`.
#[derive(Debug)]
pub struct Moto {
    pub(crate) port: u16,
    pub(crate) access_key: String,
    pub(crate) secret_key: String,
    pub(crate) _child: Child,
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
                .env("MOTO_RECORDER_FILEPATH", recording_path(port))
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

/// Where the emulator on `port` writes what its request recorder records
/// ([`Moto::start_recording`]), instead of moto's `moto_recording` in the working
/// directory.
fn recording_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("moto-recording-{port}.jsonl"))
}

/// One request the emulator served: its service (`ec2`, `iam`, `s3`, `dynamodb`) and
/// API action (`DescribeVpcs`; for S3, named from the method and path: `GetObject`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Recorded {
    pub service: String,
    pub action: String,
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service, self.action)
    }
}

impl Recorded {
    /// One line of moto's recording (`{"headers", "method", "url", "body",
    /// "body_encoded"}`).
    fn parse(line: &str) -> Option<Recorded> {
        use base64::Engine as _;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let header = |name: &str| {
            v["headers"].as_object().and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
            })
        };
        // SigV4: Credential=KEY/DATE/REGION/SERVICE/aws4_request.
        let service = header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("?")
            .to_string();
        let body = match (v["body"].as_str(), v["body_encoded"].as_bool()) {
            (Some(b), Some(true)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            (Some(b), _) => b.to_string(),
            _ => String::new(),
        };
        let action = if let Some(target) = header("x-amz-target") {
            target.rsplit('.').next().unwrap_or(target).to_string()
        } else if let Some(a) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
            a.to_string()
        } else {
            let method = v["method"].as_str().unwrap_or("?");
            let url = v["url"].as_str().unwrap_or("");
            let path = url
                .split_once("://")
                .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let has_key = path.trim_start_matches('/').contains('/');
            match (method, has_key) {
                ("GET", true) => "GetObject".into(),
                ("PUT", true) => "PutObject".into(),
                ("HEAD", true) => "HeadObject".into(),
                ("DELETE", true) => "DeleteObject".into(),
                ("GET", false) if query.contains("list-type=2") => "ListObjectsV2".into(),
                ("GET", false) => "ListObjects".into(),
                ("HEAD", false) => "HeadBucket".into(),
                ("PUT", false) => "CreateBucket".into(),
                _ => format!("{method} {path}"),
            }
        };
        Some(Recorded { service, action })
    }
}

impl Moto {
    /// Clears the request recording and starts recording every request this emulator
    /// serves, whoever sends it: count one program's requests on a private emulator
    /// ([`Moto::start`]), not on a shared one.
    pub fn start_recording(&self) -> Result<(), HarnessError> {
        self.recorder("reset-recording")?;
        self.recorder("start-recording")
    }

    /// Stops recording; returns the requests served since [`Moto::start_recording`],
    /// in the order they arrived.
    pub fn stop_recording(&self) -> Result<Vec<Recorded>, HarnessError> {
        self.recorder("stop-recording")?;
        let path = recording_path(self.port);
        let text =
            fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
        // The next recording starts a new file.
        let _ = fs::remove_file(&path);
        Ok(text.lines().filter_map(Recorded::parse).collect())
    }

    fn recorder(&self, what: &str) -> Result<(), HarnessError> {
        let path = format!("/moto-api/recorder/{what}");
        let failed = |detail: String| HarnessError::Failed {
            what: format!("POST {path}"),
            detail,
        };
        let r = http::post(self.port, &path, "").map_err(|e| failed(e.to_string()))?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(failed(format!("{} {}", r.status, r.body)))
        }
    }
}

/// The parsed `tests/harness/amis.json` (for tests that need an
/// AMI id or name from the emulator's list).
pub fn amis() -> serde_json::Value {
    let text = fs::read_to_string(amis_path()).expect("reading tests/harness/amis.json");
    serde_json::from_str(&text).expect("tests/harness/amis.json is JSON")
}

/// Puts every file below `dir` into `bucket` under `prefix/` (its path relative to
/// `dir`): how a test publishes a model artifact where the server reads it. Panics on
/// failure: it is a test's fixture.
pub async fn upload_dir(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, dir: &Path) {
    for f in crate::files_under(dir) {
        let rel = f
            .strip_prefix(dir)
            .ok()
            .and_then(Path::to_str)
            .unwrap_or_else(|| panic!("{} is not a UTF-8 path below its folder", f.display()));
        let body = std::fs::read(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        s3.put_object()
            .bucket(bucket)
            .key(format!("{prefix}/{rel}"))
            .body(body.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("putting s3://{bucket}/{prefix}/{rel}: {e:?}"));
    }
}
