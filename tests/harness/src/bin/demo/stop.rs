//! Stopping on Ctrl-C / SIGTERM: every child the demo starts is registered here, and a
//! signal thread with its own small runtime terminates them all, then exits 130.
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static STOPPING: AtomicBool = AtomicBool::new(false);

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a child just spawned; if the demo is already stopping, stops it at once.
pub fn register(pid: u32) {
    let mut list = children();
    if STOPPING.load(Ordering::SeqCst) {
        drop(list);
        signal_all("-TERM", &[pid]);
    } else {
        list.push(pid);
    }
}

/// Forgets a child that has been waited for.
pub fn unregister(pid: u32) {
    children().retain(|p| *p != pid);
}

/// While the signal thread stops everything, the main thread must not race it to an
/// exit code of its own: it waits here to be ended.
pub fn park_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child ended by SIGINT or SIGTERM most likely got the same Ctrl-C as the demo
/// (the terminal signals the whole foreground group): give the signal thread a
/// moment to take over before calling it a failure.
pub fn settle(status: &std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt as _;
    if matches!(status.signal(), Some(2 | 15)) {
        let start = Instant::now();
        while !STOPPING.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    park_if_stopping();
}

fn signal_all(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Alive and not a zombie (a dead child the main thread has not reaped yet).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn stop_all(why: &str) -> ! {
    let pids = {
        let mut list = children();
        STOPPING.store(true, Ordering::SeqCst);
        std::mem::take(&mut *list)
    };
    eprintln!(
        "\n{why}: stopping the {} process(es) the demo started; PostgreSQL and the AWS emulator stop with it",
        pids.len()
    );
    signal_all("-TERM", &pids);
    let start = Instant::now();
    while pids.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    signal_all("-KILL", &left);
    std::process::exit(130)
}

/// Starts the signal thread. The handlers are in place when this returns.
pub fn install() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let why = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => "interrupted (SIGINT)",
                    _ = term.recv() => "terminated (SIGTERM)",
                }
            });
            stop_all(why)
        })?;
    Ok(())
}
