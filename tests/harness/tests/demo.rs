//! `make demo` at a small size (3,000 customers, 4 months): it exits 0 with a prediction
//! through the Elastic IP's own address from each release (r1, r2, r3, and r2 again
//! after the rollback), every instance booted from its user data, the idempotence line,
//! the destroy's "nothing left" line and the three pictures, and leaves nothing
//! running; interrupted by SIGINT in the middle of the deployer's work, it exits 130
//! promptly and leaves nothing running either.
//!
//! The demo runs the workspace's other binaries (`pipeline`, `server`, `deployer`) from
//! its own folder: `cargo test --workspace` builds them (their packages have integration
//! tests); `cargo test -p harness` alone does not, so run `cargo build --bins` first.
//!
//! "Started by the demo" is told apart from everything else on the machine by an
//! environment variable only this test sets (children inherit it), by the temp folder
//! given as DEMO_OUT, for PostgreSQL (which rewrites its own environment for its
//! process titles) by a working directory inside the cluster's folder, and for the
//! local cloud's instances (whose servers start with the clean environment of a
//! systemd unit, so without the variable) by the cloud's sandbox folder, in their
//! command line or working directory. The demo prints both folders.

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The two demos would share two cores badly: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const MARKER_VAR: &str = "HARNESS_DEMO_TEST_MARKER";

fn demo_binary() -> PathBuf {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_demo"));
    for sibling in ["pipeline", "server", "deployer"] {
        let p = demo.with_file_name(sibling);
        assert!(
            p.exists(),
            "{} is missing: the demo runs it. Run `cargo build --bins` first \
             (`cargo test --workspace` builds it too)",
            p.display()
        );
    }
    demo
}

/// A running demo, its output gathered line by line.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Arc<Mutex<String>>,
    marker: String,
    out_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let tmp = tempfile::Builder::new()
            .prefix("harness-demo-test-")
            .tempdir()
            .expect("temp dir");
        let out_dir = tmp.path().join("out");
        let marker = harness::unique("demo-test");
        let mut child = Command::new(demo_binary())
            .env("DEMO_CUSTOMERS", "3000")
            .env("DEMO_MONTHS", "4")
            .env("DEMO_OUT", &out_dir)
            .env(MARKER_VAR, &marker)
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the demo");
        let (tx, lines) = mpsc::channel();
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for pipe in pipes {
            let (tx, output) = (tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    println!("demo| {line}");
                    if let Ok(mut o) = output.lock() {
                        o.push_str(&line);
                        o.push('\n');
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Demo {
            child,
            lines,
            output,
            marker,
            out_dir,
            _tmp: tmp,
        }
    }

    fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits for a line containing `needle`.
    fn wait_for_line(&self, needle: &str, deadline: Duration) {
        let start = Instant::now();
        while start.elapsed() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains(needle) => return,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("the demo printed no line with {needle:?} within {deadline:?}");
    }

    /// Waits for the exit, killing the demo after `deadline`.
    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the readers drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return s;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the demo did not exit within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PostgreSQL cluster's folder, as the demo printed it.
    fn pg_dir(&self) -> Option<PathBuf> {
        self.output().lines().find_map(|l| {
            l.split_once(", data in ")
                .map(|(_, d)| PathBuf::from(d.trim()))
        })
    }

    /// The local cloud's sandbox (instances' roots, logs, the address map), as the
    /// demo printed it.
    fn cloud_dir(&self) -> Option<PathBuf> {
        self.output().lines().find_map(|l| {
            l.split_once("the local cloud's instances under ")
                .map(|(_, d)| PathBuf::from(d.trim()))
        })
    }

    /// Processes this demo started that are still there, as "pid cmdline".
    fn leftovers(&self) -> Vec<String> {
        let marker = format!("{MARKER_VAR}={}", self.marker);
        let out_dir = self.out_dir.display().to_string();
        let pg_dir = self.pg_dir();
        let cloud_dir = self.cloud_dir();
        let me = std::process::id().to_string();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                continue;
            }
            let dir = e.path();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            if zombie {
                continue;
            }
            let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
            let cmdline =
                String::from_utf8_lossy(&std::fs::read(dir.join("cmdline")).unwrap_or_default())
                    .replace('\0', " ");
            let cwd = std::fs::read_link(dir.join("cwd")).unwrap_or_default();
            let ours = contains(&environ, marker.as_bytes())
                || cmdline.contains(&out_dir)
                || pg_dir.as_deref().is_some_and(|d| cwd.starts_with(d))
                || cloud_dir.as_deref().is_some_and(|d| {
                    cwd.starts_with(d) || cmdline.contains(&d.display().to_string())
                });
            if ours {
                found.push(format!("{name} {}", cmdline.trim()));
            }
        }
        found
    }

    /// Nothing the demo started may outlive it by more than the watchdogs' clean-up
    /// (PostgreSQL's shutdown included).
    fn assert_nothing_left(&self) {
        let start = Instant::now();
        let mut left = self.leftovers();
        while !left.is_empty() && start.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(250));
            left = self.leftovers();
        }
        assert!(
            left.is_empty(),
            "still running after the demo ended: {left:#?}"
        );
        if let Some(d) = self.pg_dir() {
            assert!(!d.exists(), "the cluster's folder {} is left", d.display());
        }
        let cloud = self
            .cloud_dir()
            .expect("the demo printed no local cloud folder");
        let start = Instant::now();
        while cloud.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !cloud.exists(),
            "the local cloud's folder {} is left",
            cloud.display()
        );
    }

    /// The local cloud's instance servers running now (found by the sandbox folder; not
    /// a boot script, which runs its user-data file).
    fn instance_servers(&self) -> Vec<String> {
        let cloud = self
            .cloud_dir()
            .expect("the demo printed no local cloud folder")
            .display()
            .to_string();
        self.leftovers()
            .into_iter()
            .filter(|l| l.contains(&cloud) && !l.contains("user-data"))
            .collect()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn svg(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("picture {name} in {}: {e}", dir.display()));
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
        "{name} is not an SVG"
    );
    text
}

#[test]
fn demo_runs_end_to_end_twice_over_and_leaves_nothing_running() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut demo = Demo::start();
    let status = demo.wait(Duration::from_secs(240));
    let out = demo.output();
    assert!(status.success(), "the demo failed ({status})");

    // Every answer came through the Elastic IP's own address (loopback in the local
    // cloud), from the release that was live: r1, r2, r3, then r2 again.
    let eip = out
        .lines()
        .find_map(|l| l.strip_prefix("the Elastic IP "))
        .and_then(|l| l.split_once(':'))
        .map(|(ip, _)| ip.to_string())
        .expect("the demo printed no Elastic IP");
    assert!(
        eip.starts_with("127."),
        "the Elastic IP {eip} is not loopback"
    );
    for release in [
        "release r1,",
        "release r2,",
        "release r3, after the re-run,",
        "release r2 again, after the rollback,",
    ] {
        let answer = out
            .lines()
            .find(|l| l.starts_with("answer:") && l.contains(&format!("({release}")))
            .unwrap_or_else(|| panic!("no answer line for {release}"));
        assert!(answer.contains("\"label\""), "{answer}");
        assert!(
            answer.contains(&format!("through the Elastic IP {eip}:")),
            "not through the Elastic IP: {answer}"
        );
    }
    assert!(out.contains(&format!("curl -s -X POST http://{eip}:")));
    // No server started by hand: three instances (r1, r2, r3; the rollback moves the
    // address back), each booted from its user data, its boot log kept.
    let booted: Vec<PathBuf> = std::fs::read_dir(demo.out_dir.join("instances"))
        .expect("no instances folder in DEMO_OUT")
        .flatten()
        .map(|e| e.path().join("boot.log"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("user data done")))
        .collect();
    assert_eq!(
        booted.len(),
        3,
        "instances booted from user data: {booted:?}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("==> deployer rollback")),
        "no rollback"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("nothing left of churn-api: ")
                && l.contains("no Elastic IP")
                && l.contains("no VPC")
                && l.contains("no IAM role or instance profile")),
        "no 'nothing left' line after destroy"
    );
    assert!(
        out.lines().any(|l| l.starts_with("idempotence: OK")),
        "no idempotence line"
    );
    assert!(out.contains("ROC AUC") && out.contains("baseline (majority class)"));

    let sales = svg(&demo.out_dir, "monthly_sales.svg");
    assert!(sales.contains(r#"<polyline class="series""#));
    for m in ["2020-01", "2020-04"] {
        assert!(sales.contains(&format!(">{m}</text>")), "month {m}");
    }
    let grid = svg(&demo.out_dir, "pipeline_runs.svg");
    assert_eq!(
        grid.matches(r#"<rect class="cell success" data-job="load-sales""#)
            .count(),
        4
    );
    let eval = svg(&demo.out_dir, "evaluation.svg");
    assert!(eval.contains("ROC curve"));

    demo.assert_nothing_left();
}

#[test]
fn sigint_while_the_deployer_works_stops_everything() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut demo = Demo::start();
    // Once the second deploy starts, r1's instance serves (a server the local cloud
    // booted, in a process group of its own) and r2's is being launched.
    demo.wait_for_line("==> deployer deploy --release r2", Duration::from_secs(240));
    std::thread::sleep(Duration::from_millis(1500));
    let servers = demo.instance_servers();
    assert!(
        !servers.is_empty(),
        "no instance server found before the SIGINT: the leftover check would not see one"
    );
    println!("instance servers before the SIGINT: {servers:#?}");
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(kill.success());
    let status = demo.wait(Duration::from_secs(15));
    println!("the demo exited {:?} after SIGINT", sent.elapsed());
    assert_eq!(status.code(), Some(130), "exit status {status}");
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert!(demo.output().contains("interrupted (SIGINT)"));
    demo.assert_nothing_left();
}
