//! A small GitHub Actions runner for the workflows' own steps: jobs in `needs` order,
//! `if:` conditions, `${{ }}` expressions from a table the test supplies (an expression
//! it does not know fails the test), `run:` steps through bash as GitHub runs them
//! (`bash --noprofile --norc -eo pipefail`, in the job's workspace, with
//! `GITHUB_OUTPUT`, `GITHUB_ENV` and `GITHUB_STEP_SUMMARY` files), step and job outputs,
//! and local reusable workflows (`uses: ./.github/workflows/X.yml`) run in turn.
//!
//! Each job gets a fresh, empty workspace, as a runner machine would. What the
//! GitHub-only actions would have left behind is supplied:
//! - `actions/checkout`: the repository's files the steps read (the test's list);
//! - `actions/cache`: nothing (a cold cache);
//! - `aws-actions/configure-aws-credentials`: the emulator's keys and the region the
//!   step names, refused when the role secret or the region is empty or the job lacks
//!   `id-token: write`, as OIDC would refuse.
//!
//! `cargo` on the PATH is a stand-in that links the test's already-built binaries to
//! `target/release/<package>` for `cargo build --release --locked -p <package>...` and
//! refuses anything else, so nothing is compiled. `target/release/deployer` is a wrapper
//! of the real one that hands it the local cloud's address map only when the step asks
//! for `--allow-public-probes`: the map is the test's stand-in for the internet, which
//! production reaches only with that flag, so a step without it is refused as it would
//! be on a real runner.
//!
//! The YAML is read with PyYAML from the tools venv (a dependency of moto there), so no
//! YAML crate joins the workspace for one test.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A workflow file, parsed.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its path in the repository (`.github/workflows/deploy.yml`).
    pub path: String,
    pub text: String,
    pub doc: Value,
}

impl Workflow {
    /// The file at `path` in the repository.
    pub fn load(path: &str) -> Workflow {
        let text = std::fs::read_to_string(harness::repo_root().join(path))
            .unwrap_or_else(|e| panic!("reading {path}: {e}"));
        Workflow::from_text(path, &text)
    }

    /// `text` as if it were the file at `path` (a mutated copy).
    pub fn from_text(path: &str, text: &str) -> Workflow {
        let py = harness::repo_root().join(".venv/bin/python");
        let mut child = Command::new(&py)
            .args([
                "-c",
                "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run tools/bootstrap.sh): {e}", py.display()));
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing the YAML");
        let out = child.wait_with_output().expect("PyYAML");
        assert!(
            out.status.success(),
            "{path} is not YAML: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("PyYAML printed JSON");
        Workflow {
            path: path.into(),
            text: text.into(),
            doc,
        }
    }

    /// `on:` (YAML 1.1 reads the bare key `on` as `true`).
    pub fn on(&self) -> &Value {
        match self.doc.get("on") {
            Some(v) => v,
            None => &self.doc["true"],
        }
    }

    pub fn jobs(&self) -> Vec<(String, Value)> {
        self.doc["jobs"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no jobs", self.path))
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// How a step or job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Skipped => "skipped",
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone)]
pub struct StepRun {
    pub id: String,
    pub name: String,
    pub outcome: Outcome,
    pub outputs: BTreeMap<String, String>,
    pub log: String,
}

/// One job as it ran (a called workflow's jobs are in `called`).
#[derive(Debug, Clone)]
pub struct JobRun {
    pub result: Outcome,
    pub outputs: BTreeMap<String, String>,
    pub steps: Vec<StepRun>,
    pub summary: String,
    pub called: Option<WorkflowRun>,
}

impl JobRun {
    pub fn step(&self, id_or_name: &str) -> &StepRun {
        self.steps
            .iter()
            .find(|s| s.id == id_or_name || s.name == id_or_name)
            .unwrap_or_else(|| panic!("no step {id_or_name:?}"))
    }

    /// Every step's log, for failure messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for s in &self.steps {
            out.push_str(&format!(
                "--- step {} ({})\n{}\n",
                s.name,
                s.outcome.as_str(),
                s.log
            ));
        }
        if let Some(c) = &self.called {
            out.push_str(&c.log());
        }
        out
    }
}

/// A workflow as it ran: each job's run, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct WorkflowRun {
    pub jobs: Vec<(String, JobRun)>,
}

impl WorkflowRun {
    pub fn job(&self, id: &str) -> &JobRun {
        self.jobs
            .iter()
            .find(|(j, _)| j == id)
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no job {id:?} ran; jobs: {:?}", self.ids()))
    }

    pub fn ids(&self) -> Vec<&str> {
        self.jobs.iter().map(|(j, _)| j.as_str()).collect()
    }

    pub fn failed(&self) -> bool {
        self.jobs.iter().any(|(_, r)| r.result == Outcome::Failure)
    }

    pub fn log(&self) -> String {
        self.jobs
            .iter()
            .map(|(id, r)| format!("=== job {id} ({})\n{}", r.result.as_str(), r.log()))
            .collect()
    }
}

/// The test's side of the runner: what GitHub, the network and the actions provide.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    /// `github.*`, `secrets.*`, `inputs.*` (for the workflow the test starts),
    /// `runner.*`: the only values an expression may name besides steps and needs.
    pub table: BTreeMap<String, String>,
    /// The machine's environment: PATH (with the stand-ins first), HOME, and the
    /// network's stand-ins (`AWS_ENDPOINT_URL`, `GITHUB_API_URL`).
    pub machine_env: Vec<(String, String)>,
    /// What configure-aws-credentials exports besides the region (the emulator's keys).
    pub aws_keys: Vec<(String, String)>,
    /// What actions/checkout leaves: files by path in the repository.
    pub checkout: Vec<(String, String)>,
    /// Reusable workflows the test stands in for, with their result (ci.yml: the test
    /// suite itself, which this test is part of).
    pub stubs: BTreeMap<String, Outcome>,
    /// Workflow files used instead of the repository's (mutated copies), by path.
    pub overrides: BTreeMap<String, Workflow>,
    /// The directory with the stand-in `cargo` (put first on PATH by the caller).
    pub scratch: PathBuf,
}

/// `${{ }}` values.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Str(String),
}

impl V {
    fn truthy(&self) -> bool {
        match self {
            V::Null => false,
            V::Bool(b) => *b,
            V::Str(s) => !s.is_empty(),
        }
    }
    fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => b.to_string(),
            V::Str(s) => s.clone(),
        }
    }
}

/// What an expression can see.
/// What one step did: its outcome and log, the outputs it set (`GITHUB_OUTPUT`), the
/// variables it exported to later steps (`GITHUB_ENV`) and what it wrote to the job's
/// summary (`GITHUB_STEP_SUMMARY`).
struct StepResult {
    outcome: Outcome,
    log: String,
    outputs: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    summary: String,
}

struct Scope<'a> {
    table: &'a BTreeMap<String, String>,
    steps: &'a [StepRun],
    step_ids: &'a BTreeSet<String>,
    needs: &'a BTreeMap<String, JobRun>,
    /// A step (or a needed job) failed so far.
    failed: bool,
}

/// Splits `e` at top-level occurrences of `op` (outside quotes and parentheses).
fn split_top(e: &str, op: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    let chars: Vec<char> = e.chars().collect();
    let opc: Vec<char> = op.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted && c == '(' {
            depth += 1;
        } else if !quoted && c == ')' {
            depth -= 1;
        } else if !quoted && depth == 0 && chars[i..].starts_with(&opc) {
            parts.push(std::mem::take(&mut cur));
            i += opc.len();
            continue;
        }
        cur.push(c);
        i += 1;
    }
    parts.push(cur);
    parts
}

impl Scope<'_> {
    fn eval(&self, e: &str) -> V {
        let e = e.trim();
        let ors = split_top(e, "||");
        if ors.len() > 1 {
            let vals: Vec<V> = ors.iter().map(|p| self.eval(p)).collect();
            return vals
                .iter()
                .find(|v| v.truthy())
                .cloned()
                .unwrap_or_else(|| vals.last().cloned().unwrap_or(V::Null));
        }
        let ands = split_top(e, "&&");
        if ands.len() > 1 {
            let vals: Vec<V> = ands.iter().map(|p| self.eval(p)).collect();
            return vals
                .iter()
                .find(|v| !v.truthy())
                .cloned()
                .unwrap_or_else(|| vals.last().cloned().unwrap_or(V::Null));
        }
        for (op, eq) in [("!=", false), ("==", true)] {
            let sides = split_top(e, op);
            if sides.len() == 2 {
                let (a, b) = (self.eval(&sides[0]).text(), self.eval(&sides[1]).text());
                // GitHub compares strings case-insensitively; null is ''.
                return V::Bool(a.eq_ignore_ascii_case(&b) == eq);
            }
        }
        if let Some(rest) = e.strip_prefix('!') {
            return V::Bool(!self.eval(rest).truthy());
        }
        if e.starts_with('(') && e.ends_with(')') {
            return self.eval(&e[1..e.len() - 1]);
        }
        if e.len() >= 2 && e.starts_with('\'') && e.ends_with('\'') {
            return V::Str(e[1..e.len() - 1].replace("''", "'"));
        }
        match e {
            "true" => return V::Bool(true),
            "false" => return V::Bool(false),
            "null" => return V::Null,
            "always()" => return V::Bool(true),
            "success()" => return V::Bool(!self.failed),
            "failure()" => return V::Bool(self.failed),
            "cancelled()" => return V::Bool(false),
            _ => {}
        }
        self.lookup(e)
    }

    fn lookup(&self, path: &str) -> V {
        let parts: Vec<&str> = path.split('.').collect();
        match parts.as_slice() {
            ["steps", id, rest @ ..] => {
                assert!(
                    self.step_ids.contains(*id),
                    "expression {path:?}: the job has no step with id {id:?}"
                );
                let Some(s) = self.steps.iter().find(|s| s.id == *id) else {
                    return V::Null; // not run yet
                };
                match rest {
                    ["outputs", k] => s.outputs.get(*k).map_or(V::Null, |v| V::Str(v.clone())),
                    ["outcome"] | ["conclusion"] => V::Str(s.outcome.as_str().into()),
                    _ => panic!("expression {path:?} is not known to the test"),
                }
            }
            ["needs", job, rest @ ..] => {
                let j = self
                    .needs
                    .get(*job)
                    .unwrap_or_else(|| panic!("expression {path:?}: {job} is not needed"));
                match rest {
                    ["outputs", k] => j.outputs.get(*k).map_or(V::Null, |v| V::Str(v.clone())),
                    ["result"] => V::Str(j.result.as_str().into()),
                    _ => panic!("expression {path:?} is not known to the test"),
                }
            }
            _ => match self.table.get(path) {
                Some(v) => V::Str(v.clone()),
                None => panic!(
                    "expression {path:?} is not in the test's table (known: {:?})",
                    self.table.keys().collect::<Vec<_>>()
                ),
            },
        }
    }

    /// `text` with every `${{ … }}` replaced by its value.
    fn interpolate(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${{") {
            out.push_str(&rest[..i]);
            let end = rest[i..]
                .find("}}")
                .unwrap_or_else(|| panic!("unclosed ${{{{ in {text:?}"));
            out.push_str(&self.eval(&rest[i + 3..i + end]).text());
            rest = &rest[i + end + 2..];
        }
        out.push_str(rest);
        out
    }

    /// An `if:` (bare or wrapped in `${{ }}`); without a status function it means
    /// `success() && (…)`, as on GitHub.
    fn condition(&self, cond: Option<&Value>) -> bool {
        let Some(c) = cond else {
            return !self.failed;
        };
        let c = match c {
            Value::Bool(b) => return *b && !self.failed,
            Value::String(s) => s.trim(),
            other => panic!("if: {other}"),
        };
        let c = c
            .strip_prefix("${{")
            .and_then(|c| c.strip_suffix("}}"))
            .unwrap_or(c);
        let status = ["always()", "success()", "failure()", "cancelled()"]
            .iter()
            .any(|f| c.contains(f));
        let v = self.eval(c).truthy();
        if status { v } else { v && !self.failed }
    }
}

fn str_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GITHUB_OUTPUT` / `GITHUB_ENV` files: `k=v` lines and `k<<DELIM` blocks.
fn parse_kv_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((k, delim)) = line.split_once("<<") {
            let mut v = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                v.push(l);
            }
            out.push((k.to_string(), v.join("\n")));
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

impl Runner {
    fn workflow(&self, path: &str) -> Workflow {
        self.overrides
            .get(path)
            .cloned()
            .unwrap_or_else(|| Workflow::load(path))
    }

    /// Runs every job of `wf` (`inputs` add to the table as `inputs.*`).
    pub fn run(&self, wf: &Workflow, inputs: &BTreeMap<String, String>) -> WorkflowRun {
        let mut table = self.table.clone();
        for (k, v) in inputs {
            table.insert(format!("inputs.{k}"), v.clone());
        }
        let jobs = wf.jobs();
        let mut done: BTreeMap<String, JobRun> = BTreeMap::new();
        let mut run = WorkflowRun::default();
        while done.len() < jobs.len() {
            let before = done.len();
            for (id, job) in &jobs {
                if done.contains_key(id) {
                    continue;
                }
                let needs: Vec<String> = match &job["needs"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                };
                if !needs.iter().all(|n| done.contains_key(n)) {
                    continue;
                }
                let needed: BTreeMap<String, JobRun> =
                    needs.iter().map(|n| (n.clone(), done[n].clone())).collect();
                let scope = Scope {
                    table: &table,
                    steps: &[],
                    step_ids: &BTreeSet::new(),
                    needs: &needed,
                    failed: needed.values().any(|j| j.result != Outcome::Success),
                };
                let r = if !scope.condition(job.get("if")) {
                    JobRun {
                        result: Outcome::Skipped,
                        outputs: BTreeMap::new(),
                        steps: Vec::new(),
                        summary: String::new(),
                        called: None,
                    }
                } else if let Some(uses) = job["uses"].as_str() {
                    self.call(wf, id, job, uses, &scope)
                } else {
                    self.run_job(wf, id, job, &table, &needed)
                };
                eprintln!("[{}] job {id}: {}", wf.path, r.result.as_str());
                done.insert(id.clone(), r.clone());
                run.jobs.push((id.clone(), r));
            }
            assert!(
                done.len() > before,
                "{}: a `needs` cycle or a missing job",
                wf.path
            );
        }
        run
    }

    /// A job that calls a reusable workflow.
    fn call(&self, wf: &Workflow, id: &str, job: &Value, uses: &str, scope: &Scope<'_>) -> JobRun {
        let empty = |result| JobRun {
            result,
            outputs: BTreeMap::new(),
            steps: Vec::new(),
            summary: String::new(),
            called: None,
        };
        if let Some(result) = self.stubs.get(uses) {
            return empty(*result);
        }
        let path = uses
            .strip_prefix("./")
            .filter(|p| p.starts_with(".github/workflows/"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: job {id} uses {uses}, which the test cannot run",
                    wf.path
                )
            });
        let called = self.workflow(path);
        let declared = &called.on()["workflow_call"]["inputs"];
        let mut inputs = BTreeMap::new();
        for (k, v) in str_map(&job["with"]) {
            assert!(
                declared.get(&k).is_some(),
                "{}: job {id} passes input {k:?}, which {path} does not declare",
                wf.path
            );
            inputs.insert(k, scope.interpolate(&v));
        }
        if let Some(d) = declared.as_object() {
            for (k, spec) in d {
                if !inputs.contains_key(k) {
                    assert!(
                        spec["required"] != Value::Bool(true),
                        "{}: job {id} does not pass the required input {k:?} of {path}",
                        wf.path
                    );
                    inputs.insert(
                        k.clone(),
                        str_map(spec)
                            .into_iter()
                            .find(|(k, _)| k == "default")
                            .map(|d| d.1)
                            .unwrap_or_default(),
                    );
                }
            }
        }
        let mut caller_table = self.clone();
        caller_table.table = scope.table.clone();
        caller_table.table.retain(|k, _| !k.starts_with("inputs."));
        let run = caller_table.run(&called, &inputs);
        let mut r = empty(if run.failed() {
            Outcome::Failure
        } else {
            Outcome::Success
        });
        r.called = Some(run);
        r
    }

    fn run_job(
        &self,
        wf: &Workflow,
        id: &str,
        job: &Value,
        table: &BTreeMap<String, String>,
        needs: &BTreeMap<String, JobRun>,
    ) -> JobRun {
        let workspace = self.scratch.join(harness::unique(id));
        let temp = workspace.with_extension("tmp");
        std::fs::create_dir_all(&workspace).expect("workspace");
        std::fs::create_dir_all(&temp).expect("runner temp");
        let deadline = Instant::now()
            + Duration::from_secs(60 * job["timeout-minutes"].as_u64().unwrap_or(360));
        let steps_spec = job["steps"].as_array().cloned().unwrap_or_default();
        let step_ids: BTreeSet<String> = steps_spec
            .iter()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect();
        // What `${{ }}` sees in this job; each use adds the steps run so far.
        let job_scope = Scope {
            table,
            steps: &[],
            step_ids: &step_ids,
            needs,
            failed: false,
        };
        let mut steps: Vec<StepRun> = Vec::new();
        let mut failed = false;
        let mut summary = String::new();
        // Workflow, then job env (values may use expressions).
        let mut env: Vec<(String, String)> = Vec::new();
        {
            let scope = Scope {
                steps: &steps,
                failed,
                ..job_scope
            };
            for source in [&wf.doc["env"], &job["env"]] {
                for (k, v) in str_map(source) {
                    env.push((k, scope.interpolate(&v)));
                }
            }
        }
        for (n, spec) in steps_spec.iter().enumerate() {
            let sid = spec["id"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("__{n}"));
            let name = spec["name"]
                .as_str()
                .or(spec["uses"].as_str())
                .unwrap_or("run")
                .to_string();
            let scope = Scope {
                steps: &steps,
                failed,
                ..job_scope
            };
            let mut step = StepRun {
                id: sid,
                name: name.clone(),
                outcome: Outcome::Skipped,
                outputs: BTreeMap::new(),
                log: String::new(),
            };
            if scope.condition(spec.get("if")) {
                let mut step_env = env.clone();
                for (k, v) in str_map(&spec["env"]) {
                    step_env.push((k, scope.interpolate(&v)));
                }
                let r = if let Some(uses) = spec["uses"].as_str() {
                    self.action(uses, spec, job, &scope, &workspace)
                } else if let Some(script) = spec["run"].as_str() {
                    assert!(
                        spec.get("shell").is_none() && spec.get("working-directory").is_none(),
                        "{}: step {name}: only the default shell and directory are supported",
                        wf.path
                    );
                    self.bash(
                        &scope.interpolate(script),
                        &step_env,
                        table,
                        &workspace,
                        &temp,
                        deadline,
                    )
                } else {
                    panic!("{}: step {name} has neither run nor uses", wf.path)
                };
                env.extend(r.env);
                summary.push_str(&r.summary);
                step.outcome = r.outcome;
                step.log = r.log;
                step.outputs = r.outputs;
                if r.outcome == Outcome::Failure {
                    failed = true;
                }
            }
            eprintln!(
                "[{}] {id} / {name}: {}\n{}",
                wf.path,
                step.outcome.as_str(),
                step.log.trim_end()
            );
            steps.push(step);
        }
        let scope = Scope {
            steps: &steps,
            failed,
            ..job_scope
        };
        let outputs = str_map(&job["outputs"])
            .into_iter()
            .map(|(k, v)| (k, scope.interpolate(&v)))
            .collect();
        JobRun {
            result: if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            outputs,
            steps,
            summary,
            called: None,
        }
    }

    /// A `uses:` step: what the action would have done or left behind.
    fn action(
        &self,
        uses: &str,
        spec: &Value,
        job: &Value,
        scope: &Scope<'_>,
        workspace: &Path,
    ) -> StepResult {
        let action = uses.split('@').next().unwrap_or(uses);
        let with: BTreeMap<String, String> = str_map(&spec["with"]).into_iter().collect();
        let ok = |log: String, env: Vec<(String, String)>| StepResult {
            outcome: Outcome::Success,
            log,
            outputs: BTreeMap::new(),
            env,
            summary: String::new(),
        };
        let fail = |log: String| StepResult {
            outcome: Outcome::Failure,
            log,
            outputs: BTreeMap::new(),
            env: Vec::new(),
            summary: String::new(),
        };
        match action {
            "actions/checkout" => {
                for (path, text) in &self.checkout {
                    let p = workspace.join(path);
                    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
                    std::fs::write(&p, text).expect("checkout");
                }
                ok(
                    format!("checked out {} file(s)", self.checkout.len()),
                    Vec::new(),
                )
            }
            "actions/cache" => ok("cache miss".into(), Vec::new()),
            "aws-actions/configure-aws-credentials" => {
                let get = |k: &str| {
                    with.get(k)
                        .map(|v| scope.interpolate(v))
                        .unwrap_or_default()
                };
                let (role, region) = (get("role-to-assume"), get("aws-region"));
                if job["permissions"]["id-token"].as_str() != Some("write") {
                    return fail("no OIDC token: the job lacks `id-token: write`".into());
                }
                if role.is_empty() {
                    return fail("Credentials could not be loaded: role-to-assume is empty".into());
                }
                if region.is_empty() {
                    return fail("Input required and not supplied: aws-region".into());
                }
                let mut env = self.aws_keys.clone();
                env.push(("AWS_REGION".into(), region.clone()));
                env.push(("AWS_DEFAULT_REGION".into(), region.clone()));
                ok(
                    format!("assumed {role} in {region} (the emulator's keys)"),
                    env,
                )
            }
            other => panic!("the test does not know the action {other}"),
        }
    }

    /// A `run:` step through bash, as GitHub runs it.
    fn bash(
        &self,
        script: &str,
        step_env: &[(String, String)],
        table: &BTreeMap<String, String>,
        workspace: &Path,
        temp: &Path,
        deadline: Instant,
    ) -> StepResult {
        let files = temp.join(harness::unique("step"));
        std::fs::create_dir_all(&files).expect("step dir");
        let (output, genv, summary, script_path, log_path) = (
            files.join("output"),
            files.join("env"),
            files.join("summary"),
            files.join("script.sh"),
            files.join("log"),
        );
        for f in [&output, &genv, &summary] {
            std::fs::write(f, "").expect("step file");
        }
        std::fs::write(&script_path, script).expect("script");
        let t = |k: &str| table.get(k).cloned().unwrap_or_default();
        let log = std::fs::File::create(&log_path).expect("log");
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script_path)
            .current_dir(workspace)
            .env_clear()
            .envs(self.machine_env.iter().map(|(k, v)| (k, v)))
            .envs([
                ("CI", "true".to_string()),
                ("GITHUB_ACTIONS", "true".into()),
                ("GITHUB_SHA", t("github.sha")),
                ("GITHUB_REPOSITORY", t("github.repository")),
                ("GITHUB_REF", t("github.ref")),
                ("GITHUB_EVENT_NAME", t("github.event_name")),
                ("GITHUB_WORKFLOW", t("github.workflow")),
                ("GITHUB_WORKSPACE", workspace.display().to_string()),
                ("GITHUB_OUTPUT", output.display().to_string()),
                ("GITHUB_ENV", genv.display().to_string()),
                ("GITHUB_STEP_SUMMARY", summary.display().to_string()),
                ("RUNNER_TEMP", temp.display().to_string()),
                ("RUNNER_OS", "Linux".into()),
            ])
            .envs(step_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = cmd.spawn().expect("bash");
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting for bash") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let outcome = match status {
            Some(s) if s.success() => Outcome::Success,
            Some(s) => {
                text.push_str(&format!("\n[runner] exit: {s}"));
                Outcome::Failure
            }
            None => {
                text.push_str("\n[runner] the job's timeout-minutes ran out");
                Outcome::Failure
            }
        };
        StepResult {
            outcome,
            log: text,
            outputs: parse_kv_file(&output).into_iter().collect(),
            env: parse_kv_file(&genv),
            summary: std::fs::read_to_string(&summary).unwrap_or_default(),
        }
    }
}

/// Writes the stand-in `cargo` and the `deployer` wrapper into `dir` (put it first on
/// PATH): `cargo build --release --locked -p P…` links the test's binaries into
/// `target/release/`, anything else fails.
pub fn write_stand_ins(dir: &Path, bins: &[(&str, PathBuf)], address_map: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).expect("stand-in dir");
    let deployer = bins
        .iter()
        .find(|(n, _)| *n == "deployer")
        .map(|(_, p)| p.clone())
        .expect("the deployer binary");
    let wrapper = dir.join("deployer-with-internet");
    std::fs::write(
        &wrapper,
        format!(
            "#!/usr/bin/env bash\n\
             # The instances' public addresses are reachable only with --allow-public-probes:\n\
             # the local cloud's address map stands in for the internet then, and only then.\n\
             for a in \"$@\"; do\n\
             \x20 if [ \"$a\" = --allow-public-probes ]; then export DEPLOYER_ADDRESS_MAP='{}'; fi\n\
             done\n\
             exec '{}' \"$@\"\n",
            address_map.display(),
            deployer.display()
        ),
    )
    .expect("wrapper");
    let mut cases = String::new();
    for (name, path) in bins {
        let target = if *name == "deployer" {
            wrapper.clone()
        } else {
            path.clone()
        };
        cases.push_str(&format!(
            "    {name}) ln -sf '{}' target/release/{name} ;;\n",
            target.display()
        ));
    }
    let cargo = dir.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/usr/bin/env bash\n\
             # Stands in for `cargo build --release --locked -p P...`: links the binaries the\n\
             # test was given instead of compiling them.\n\
             set -euo pipefail\n\
             [ \"${{1:-}}\" = build ] || {{ echo \"cargo stand-in: only 'cargo build' is supplied, not: $*\" >&2; exit 101; }}\n\
             shift\n\
             release=0; locked=0; pkgs=()\n\
             while [ $# -gt 0 ]; do\n\
             \x20 case \"$1\" in\n\
             \x20   --release) release=1 ;;\n\
             \x20   --locked) locked=1 ;;\n\
             \x20   -p|--package) pkgs+=(\"$2\"); shift ;;\n\
             \x20   *) echo \"cargo stand-in: unsupported argument $1\" >&2; exit 101 ;;\n\
             \x20 esac\n\
             \x20 shift\n\
             done\n\
             [ \"$release\" = 1 ] && [ \"$locked\" = 1 ] || {{ echo 'cargo stand-in: the workflows build --release --locked' >&2; exit 101; }}\n\
             [ ${{#pkgs[@]}} -gt 0 ] || {{ echo 'cargo stand-in: name the packages (-p)' >&2; exit 101; }}\n\
             mkdir -p target/release\n\
             for p in \"${{pkgs[@]}}\"; do\n\
             \x20 case \"$p\" in\n{cases}\
             \x20   *) echo \"cargo stand-in: no binary for package $p\" >&2; exit 101 ;;\n\
             \x20 esac\n\
             done\n"
        ),
    )
    .expect("cargo stand-in");
    for f in [&wrapper, &cargo] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}
