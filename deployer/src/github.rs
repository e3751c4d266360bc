//! Plan comments on pull requests (`deployer comment --pr N --plan FILE`).
//!
//! One comment per app per pull request: the deployer finds its own earlier comment by
//! a hidden marker and edits it in place, so a pull request with twenty pushes still has
//! one plan comment, always the latest. Repository, token and API address come from the
//! standard GitHub Actions environment (`GITHUB_REPOSITORY`, `GITHUB_TOKEN`,
//! `GITHUB_API_URL`).

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::plan::{Action, Change, Plan, counts, render};

/// GitHub refuses comment bodies longer than this (characters).
pub const COMMENT_LIMIT: usize = 65_536;
/// What we aim under, leaving room for GitHub's own counting quirks.
const BUDGET: usize = COMMENT_LIMIT - 1_024;
/// Longest list of resources per group in the summary (the full plan has them all).
const LIST_MAX: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("{0} is not set (it comes from the GitHub Actions environment)")]
    MissingEnv(&'static str),
    #[error("GITHUB_REPOSITORY must be OWNER/NAME, not {0:?}")]
    BadRepository(String),
    #[error("GitHub answered {status} to {action}: {message}")]
    Api {
        action: String,
        status: u16,
        message: String,
    },
    #[error("{action}: {source}")]
    Client {
        action: String,
        #[source]
        source: octocrab::Error,
    },
    #[error("{action}: unexpected answer from GitHub: {detail}")]
    Unexpected { action: String, detail: String },
}

/// Where to post, from the environment.
#[derive(Debug, Clone)]
pub struct GithubTarget {
    pub api_url: String,
    pub owner: String,
    pub repo: String,
    pub token: String,
}

impl GithubTarget {
    pub fn from_env() -> Result<GithubTarget, GithubError> {
        let var = |k: &'static str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let full = var("GITHUB_REPOSITORY").ok_or(GithubError::MissingEnv("GITHUB_REPOSITORY"))?;
        let (owner, repo) = full
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| GithubError::BadRepository(full.clone()))?;
        Ok(GithubTarget {
            api_url: var("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()),
            owner: owner.into(),
            repo: repo.into(),
            token: var("GITHUB_TOKEN").ok_or(GithubError::MissingEnv("GITHUB_TOKEN"))?,
        })
    }
}

/// The hidden marker that identifies the deployer's comment for `app`.
pub fn marker(app: &str) -> String {
    format!("<!-- deployer-plan app={app} -->")
}

/// The plan's fingerprint as shown in the comment: SHA-256 of its JSON.
pub fn plan_hash(plan: &Plan) -> String {
    let json = serde_json::to_vec(plan).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::NoOp => "=",
    }
}

fn heading(a: Action) -> &'static str {
    match a {
        Action::Create => "Create",
        Action::Update => "Update in place",
        Action::Replace => "Replace",
        Action::Delete => "Destroy",
        Action::NoOp => "Record in state",
    }
}

/// The comment's Markdown: summary, resources grouped by action, drift, the full plan
/// folded in `<details>`, and the plan's hash, state serial and commit. Always under
/// GitHub's limit: an oversized plan text is cut keeping its head and tail.
pub fn render_comment(plan: &Plan, commit: Option<&str>) -> String {
    let s = plan.summary;
    let mut head = String::new();
    let _ = writeln!(head, "{}", marker(&plan.app));
    let _ = writeln!(head, "### deployer plan: `{}`\n", plan.app);
    if plan.has_changes() {
        let n = [s.add, s.change, s.destroy, s.adopt];
        let words = [
            "to add",
            "to change",
            "to destroy",
            "to record in the state",
        ];
        let _ = writeln!(head, "**Plan: {}.**\n", counts(n, words));
    } else {
        head.push_str("**No changes.** The infrastructure matches the configuration.\n\n");
    }
    for action in [
        Action::Create,
        Action::Update,
        Action::Replace,
        Action::Delete,
        Action::NoOp,
    ] {
        let group: Vec<&Change> = plan
            .changes
            .iter()
            .filter(|c| c.action == action && (action != Action::NoOp || c.adopted))
            .collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(head, "**{} (`{}`)**", heading(action), symbol(action));
        let more = group.len().saturating_sub(LIST_MAX);
        for c in group.into_iter().take(LIST_MAX) {
            let _ = write!(head, "- `{}`", c.address);
            if let Some(id) = &c.id {
                let _ = write!(head, " ({id})");
            }
            head.push('\n');
        }
        if more > 0 {
            let _ = writeln!(head, "- ... and {more} more (see the full plan)");
        }
        head.push('\n');
    }
    // Drift: resources that exist but differ (update/replace), or that were found by
    // their tags or carry a reason (a duplicate, a leak). Each listed once.
    let drift: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| match c.action {
            Action::Update | Action::Replace => true,
            Action::Create => false,
            Action::Delete => c.reason.is_some() || c.adopted,
            Action::NoOp => c.adopted,
        })
        .collect();
    if !drift.is_empty() {
        head.push_str(
            "**Drift** (real resources that differ from the configuration or the state)\n",
        );
        for c in drift.iter().take(LIST_MAX) {
            let what = c.reason.clone().unwrap_or_else(|| {
                let names: Vec<&str> = c.attributes.iter().map(|a| a.name.as_str()).collect();
                if c.adopted {
                    "found by its tags, not in the state".into()
                } else {
                    format!("differs in {}", names.join(", "))
                }
            });
            let _ = writeln!(head, "- `{}`: {what}", c.address);
        }
        if drift.len() > LIST_MAX {
            let _ = writeln!(head, "- ... and {} more", drift.len() - LIST_MAX);
        }
        head.push('\n');
    }

    let mut tail = String::new();
    let _ = writeln!(
        tail,
        "\nplan `sha256:{}` · state serial {}{} · commit {}",
        plan_hash(plan),
        plan.state_serial,
        if plan.state_lineage.is_empty() {
            String::new()
        } else {
            format!(" (lineage `{}`)", plan.state_lineage)
        },
        commit
            .map(|c| format!("`{c}`"))
            .unwrap_or_else(|| "unknown".into())
    );

    let open = "<details><summary>Full plan</summary>\n\n```text\n";
    let close = "```\n</details>\n";
    let fixed = head.chars().count() + tail.chars().count() + open.len() + close.len();
    let text = fit(&render(plan), BUDGET.saturating_sub(fixed));
    format!("{head}{open}{text}{close}{tail}")
}

/// Cuts `text` to at most `budget` characters, keeping whole lines from its head and
/// tail and saying in the middle what was cut.
pub fn fit(text: &str, budget: usize) -> String {
    if text.chars().count() <= budget {
        return text.to_string();
    }
    let lines: Vec<&str> = text.lines().collect();
    let note_room = 200;
    let half = budget.saturating_sub(note_room) / 2;
    let mut head = Vec::new();
    let mut used = 0;
    for l in &lines {
        let n = l.chars().count() + 1;
        if used + n > half {
            break;
        }
        used += n;
        head.push(*l);
    }
    let mut tail = Vec::new();
    used = 0;
    for l in lines[head.len()..].iter().rev() {
        let n = l.chars().count() + 1;
        if used + n > half {
            break;
        }
        used += n;
        tail.push(*l);
    }
    tail.reverse();
    let cut = lines.len() - head.len() - tail.len();
    format!(
        "{}\n... {cut} lines cut here: the plan is longer than GitHub's {COMMENT_LIMIT}-character \
         comment limit; run `deployer plan` to see all of it ...\n{}\n",
        head.join("\n"),
        tail.join("\n")
    )
}

/// What `post` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    Created { id: u64 },
    Updated { id: u64 },
}

fn client_err(action: &str) -> impl FnOnce(octocrab::Error) -> GithubError + '_ {
    move |e| match e {
        octocrab::Error::GitHub { source, .. } => GithubError::Api {
            action: action.to_string(),
            status: source.status_code.as_u16(),
            message: source.message.clone(),
        },
        other => GithubError::Client {
            action: action.to_string(),
            source: other,
        },
    }
}

/// Creates the plan comment on pull request `pr`, or edits the deployer's earlier one
/// for the same app.
pub async fn post(
    target: &GithubTarget,
    pr: u64,
    app: &str,
    body: &str,
) -> Result<Posted, GithubError> {
    let crab = octocrab::Octocrab::builder()
        .base_uri(target.api_url.as_str())
        .map_err(client_err("configuring the GitHub client"))?
        .personal_token(target.token.clone())
        .build()
        .map_err(client_err("configuring the GitHub client"))?;
    let base = format!("/repos/{}/{}", target.owner, target.repo);
    let mark = marker(app);

    // Find our earlier comment, page by page.
    let list_action = format!("listing the comments of pull request #{pr}");
    let mut existing = None;
    for page in 1.. {
        let comments: Value = crab
            .get(
                format!("{base}/issues/{pr}/comments?per_page=100&page={page}"),
                None::<&()>,
            )
            .await
            .map_err(client_err(&list_action))?;
        let items = comments.as_array().ok_or_else(|| GithubError::Unexpected {
            action: list_action.clone(),
            detail: "not a list".into(),
        })?;
        existing = items.iter().find_map(|c| {
            let body = c.get("body")?.as_str()?;
            body.contains(&mark).then(|| c.get("id")?.as_u64())?
        });
        if existing.is_some() || items.len() < 100 {
            break;
        }
    }

    let payload = serde_json::json!({ "body": body });
    match existing {
        Some(id) => {
            let action = format!("editing comment {id} on pull request #{pr}");
            let _: Value = crab
                .patch(format!("{base}/issues/comments/{id}"), Some(&payload))
                .await
                .map_err(client_err(&action))?;
            Ok(Posted::Updated { id })
        }
        None => {
            let action = format!("commenting on pull request #{pr}");
            let created: Value = crab
                .post(format!("{base}/issues/{pr}/comments"), Some(&payload))
                .await
                .map_err(client_err(&action))?;
            let id = created.get("id").and_then(Value::as_u64).ok_or_else(|| {
                GithubError::Unexpected {
                    action,
                    detail: "no comment id in the answer".into(),
                }
            })?;
            Ok(Posted::Created { id })
        }
    }
}
