//! `deployer comment` against a loopback fake of the GitHub REST API that keeps the
//! pull request's comments and records every request (there is no GitHub here).

use std::process::{Command, Output};

use chrono::Utc;
use deployer::github::{COMMENT_LIMIT, marker, render_comment};
use deployer::plan::{Action, AttrChange, Change, Operation, PLAN_FORMAT, Plan, Summary};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

mod common;

use common::github::Comments as FakeComments;

async fn fake_github() -> (MockServer, FakeComments) {
    common::github::start().await
}

#[test]
fn a_drifted_resource_is_listed_once() {
    let mut p = plan("shop", 3);
    p.changes[0].reason = Some("ingress rule added by hand".into());
    let body = render_comment(&p, None);
    let drift = body
        .split("**Drift**")
        .nth(1)
        .and_then(|d| d.split("<details>").next())
        .expect("a drift section");
    assert_eq!(
        drift.matches("aws_security_group_rule.r0").count(),
        1,
        "{drift}"
    );
    assert!(drift.contains("ingress rule added by hand"), "{drift}");
    assert!(!drift.contains("r1`"), "creates are not drift: {drift}");
}

fn plan(app: &str, n_changes: usize) -> Plan {
    let changes: Vec<Change> = (0..n_changes)
        .map(|i| Change {
            address: format!("aws_security_group_rule.r{i}"),
            resource_type: "aws_security_group_rule".into(),
            action: if i == 0 {
                Action::Update
            } else {
                Action::Create
            },
            id: (i == 0).then(|| "sg-0123".to_string()),
            adopted: false,
            reason: None,
            attributes: vec![AttrChange {
                name: "description".into(),
                before: (i == 0).then(|| json!("old")),
                after: Some(json!(format!("rule number {i} with a long description"))),
                after_unknown: false,
                forces_replacement: false,
            }],
        })
        .collect();
    Plan {
        format: PLAN_FORMAT,
        operation: Operation::Apply,
        app: app.into(),
        state_serial: 7,
        state_lineage: "5b1c".into(),
        config_digest: "abc".into(),
        created: Utc::now(),
        summary: Summary {
            add: n_changes.saturating_sub(1),
            change: 1,
            destroy: 0,
            adopt: 0,
        },
        changes,
        notes: vec![],
    }
}

fn comment_cli(api: &str, plan_file: &std::path::Path, pr: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["comment", "--pr", pr, "--plan"])
        .arg(plan_file)
        .env("GITHUB_API_URL", api)
        .env("GITHUB_REPOSITORY", "acme/shop")
        .env("GITHUB_TOKEN", harness::unique("fake-token"))
        .env("GITHUB_SHA", "0123456789abcdef")
        .env_remove("DEPLOYER_CONFIG")
        .output()
        .expect("run deployer comment")
}

/// [`comment_cli`], insisting on success; the fake's comments after it.
fn comment_ok<'a>(
    api: &str,
    plan_file: &std::path::Path,
    pr: &str,
    comments: &'a FakeComments,
) -> std::sync::MutexGuard<'a, Vec<(u64, String)>> {
    let out = comment_cli(api, plan_file, pr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    comments.0.lock().expect("lock")
}

fn write_plan(dir: &tempfile::TempDir, p: &Plan) -> std::path::PathBuf {
    let f = dir.path().join("plan.json");
    std::fs::write(&f, serde_json::to_vec(p).expect("json")).expect("write plan");
    f
}

#[tokio::test]
async fn first_run_creates_a_comment_and_the_second_edits_it() {
    let (server, comments) = fake_github().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_plan(&dir, &plan("shop", 3));

    {
        // The guard is dropped at the block's end: the fake takes the lock again.
        let c = comment_ok(&server.uri(), &f, "42", &comments);
        assert_eq!(c.len(), 1);
        assert!(c[0].1.contains(&marker("shop")));
        assert!(
            c[0].1.contains("2 to add, 1 to change, 0 to destroy"),
            "{}",
            c[0].1
        );
        assert!(c[0].1.contains("<details>"));
        assert!(c[0].1.contains("state serial 7"));
        assert!(c[0].1.contains("`0123456789abcdef`"));
        assert!(c[0].1.contains("**Drift**"));
    }

    let f = write_plan(&dir, &plan("shop", 5));
    {
        // The guard is dropped at the block's end: the fake takes the lock again.
        let c = comment_ok(&server.uri(), &f, "42", &comments);
        assert_eq!(c.len(), 1, "the second run edits, it does not add");
        assert!(c[0].1.contains("4 to add, 1 to change"), "{}", c[0].1);
    }

    let reqs = server.received_requests().await.expect("recording on");
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "PATCH"]);
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("authorization").is_some()),
        "every request carries the token"
    );
}

#[test]
fn an_oversized_plan_is_cut_under_the_limit_keeping_head_and_tail() {
    let p = plan("shop", 2_000);
    let full = deployer::plan::render(&p);
    assert!(
        full.chars().count() > COMMENT_LIMIT,
        "the test plan must be oversized"
    );
    let body = render_comment(&p, Some("abc"));
    assert!(
        body.chars().count() <= COMMENT_LIMIT,
        "{}",
        body.chars().count()
    );
    assert!(
        body.contains("aws_security_group_rule.r0"),
        "keeps the head"
    );
    assert!(
        body.contains("aws_security_group_rule.r1999"),
        "keeps the tail"
    );
    assert!(body.contains("lines cut here"), "says it was cut");
    assert!(body.contains("</details>"), "the fold is closed");
}

#[tokio::test]
async fn api_errors_exit_non_zero_with_the_status_and_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_plan(&dir, &plan("shop", 2));
    for (status, message) in [
        (403, "Resource not accessible by integration"),
        (404, "Not Found"),
        (422, "Validation Failed"),
    ] {
        let server = MockServer::start().await;
        // Listing works; creating fails (403/422), or the pull request is unknown (404).
        if status == 404 {
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": message})))
                .mount(&server)
                .await;
        } else {
            Mock::given(method("GET"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
                .mount(&server)
                .await;
            Mock::given(method("POST"))
                .respond_with(
                    ResponseTemplate::new(status).set_body_json(json!({"message": message})),
                )
                .mount(&server)
                .await;
        }
        let out = comment_cli(&server.uri(), &f, "9");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{status}: {err}");
        assert!(err.contains(&status.to_string()), "{status}: {err}");
        assert!(err.contains(message), "{status}: {err}");
    }
}

#[test]
fn missing_environment_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_plan(&dir, &plan("shop", 2));
    let out = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["comment", "--pr", "1", "--plan"])
        .arg(&f)
        .env_remove("GITHUB_TOKEN")
        .env("GITHUB_REPOSITORY", "acme/shop")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITHUB_TOKEN is not set"));
}
