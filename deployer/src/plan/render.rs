//! The plan in Terraform's words, with the notes a front switch calls for.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Action, Change, Plan};

fn show(v: &Option<Value>, unknown: bool) -> String {
    if unknown {
        return "(known after apply)".into();
    }
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Counts of changes as one phrase in `words` (add, change, destroy, record):
/// `3 to add, 1 to change, 0 to destroy, 2 to record in the state`, the last part only
/// when something is recorded. The plan's PR comment and `apply`'s closing line.
pub fn counts(n: [usize; 4], words: [&str; 4]) -> String {
    let mut out = format!(
        "{} {}, {} {}, {} {}",
        n[0], words[0], n[1], words[1], n[2], words[2]
    );
    if n[3] > 0 {
        let _ = write!(out, ", {} {}", n[3], words[3]);
    }
    out
}

/// The plan in Terraform's words.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let visible: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp || c.adopted)
        .collect();
    if visible.is_empty() {
        out.push_str("No changes. The infrastructure matches the configuration.\n");
        return out;
    }
    out.push_str("Resource actions are indicated with the following symbols:\n");
    out.push_str(
        "  + create\n  ~ update in-place\n-/+ destroy and then create replacement\n  - destroy\n\n",
    );
    out.push_str("deployer will perform the following actions:\n\n");
    for c in visible {
        let (kind, name) = c
            .address
            .split_once('.')
            .unwrap_or((c.resource_type.as_str(), ""));
        let (headline, sym) = match c.action {
            Action::Create => ("will be created", "  +"),
            Action::Update => ("will be updated in-place", "  ~"),
            Action::Replace => ("must be replaced", "-/+"),
            Action::Delete => ("will be destroyed", "  -"),
            Action::NoOp => ("", "   "),
        };
        if c.action == Action::NoOp {
            let _ = writeln!(
                out,
                "  # {} ({}) was found by its tags and will be recorded in the state\n",
                c.address,
                c.id.as_deref().unwrap_or("?")
            );
            continue;
        }
        let _ = write!(out, "  # {} {headline}", c.address);
        if let Some(r) = &c.reason {
            let _ = write!(out, " ({r})");
        } else if c.adopted {
            out.push_str(" (found by its tags; it will be recorded in the state)");
        }
        out.push('\n');
        let _ = writeln!(out, "{sym} resource \"{kind}\" \"{name}\" {{");
        let width = c
            .attributes
            .iter()
            .map(|a| a.name.len())
            .chain(std::iter::once(2))
            .max()
            .unwrap_or(2);
        match c.action {
            Action::Create => {
                let _ = writeln!(out, "      + {:width$} = (known after apply)", "id");
                for a in &c.attributes {
                    let _ = writeln!(
                        out,
                        "      + {:width$} = {}",
                        a.name,
                        show(&a.after, a.after_unknown)
                    );
                }
            }
            Action::Delete => {
                let _ = writeln!(
                    out,
                    "      - {:width$} = {}",
                    "id",
                    show(&c.id.clone().map(Value::String), false)
                );
            }
            Action::Update | Action::Replace => {
                let _ = writeln!(
                    out,
                    "        {:width$} = {}",
                    "id",
                    show(&c.id.clone().map(Value::String), false)
                );
                for a in &c.attributes {
                    let _ = writeln!(
                        out,
                        "      ~ {:width$} = {} -> {}{}",
                        a.name,
                        show(&a.before, false),
                        show(&a.after, a.after_unknown),
                        if a.forces_replacement {
                            " # forces replacement"
                        } else {
                            ""
                        }
                    );
                }
            }
            Action::NoOp => {}
        }
        out.push_str("    }\n\n");
    }
    let s = plan.summary;
    let _ = write!(
        out,
        "Plan: {} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    );
    if s.adopt > 0 {
        let _ = write!(out, " {} found by tags, to record in the state.", s.adopt);
    }
    out.push('\n');
    for note in &plan.notes {
        let _ = writeln!(out, "\nNote: {note}");
    }
    out
}
