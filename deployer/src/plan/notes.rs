//! The notes a front switch calls for: which fixed address stays and which is new.

use serde_json::Value;

use super::{Action, Change, Observed};
use crate::config::{Config, Front};
use crate::stack::Kind;

/// The public address `kind` was read with, if any.
fn public_ip(observed: &[Observed], kind: Kind) -> Option<String> {
    observed
        .iter()
        .find(|o| o.kind == kind)
        .and_then(|o| o.actual.as_ref())
        .and_then(|a| a.get("public_ip"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn action_of(changes: &[Change], kind: Kind) -> Option<Action> {
    let addr = kind.address();
    changes.iter().find(|c| c.address == addr).map(|c| c.action)
}

/// The notes of a plan that switches `front` (none otherwise).
pub(super) fn front_switch(cfg: &Config, observed: &[Observed], changes: &[Change]) -> Vec<String> {
    let kept = matches!(
        action_of(changes, Kind::Eip),
        Some(Action::NoOp | Action::Update)
    );
    let ip = public_ip(observed, Kind::Eip);
    let mut notes = Vec::new();
    match cfg.front {
        Front::Nlb if action_of(changes, Kind::LoadBalancer) == Some(Action::Create) => {
            match (kept, ip) {
                (true, Some(ip)) => notes.push(format!(
                    "front = \"nlb\": the fixed address {ip} (aws_eip.api) stays: if the live \
                     instance holds it, the balancer starts in zone b alone, the instance is \
                     registered in its colour's target group and waited healthy, then {ip} is \
                     disassociated from it and mapped onto the balancer in zone a (a moment \
                     without an answer at {ip}, none at zone b's address). Without that move \
                     the fixed address would change. aws_eip.b is the balancer's second, new \
                     address: give clients both."
                )),
                _ => notes.push(
                    "front = \"nlb\": the balancer's addresses are aws_eip.api and aws_eip.b, \
                     both known after apply."
                        .to_string(),
                ),
            }
        }
        Front::Eip
            if changes.iter().any(|c| {
                c.address == Kind::LoadBalancer.address() && c.action == Action::Delete
            }) =>
        {
            let b = public_ip(observed, Kind::EipB).unwrap_or_else(|| "its address".into());
            match (kept, ip) {
                (true, Some(ip)) => notes.push(format!(
                    "front = \"eip\": the balancer side is destroyed and aws_eip.b ({b}) \
                     released. The fixed address stays {ip} only because aws_eip.api survives \
                     (kept by this plan): once the balancer lets go of it, the next deploy \
                     associates it with the live instance; until then nothing answers at {ip}."
                )),
                _ => notes.push(format!(
                    "front = \"eip\": the balancer side is destroyed and aws_eip.b ({b}) \
                     released; aws_eip.api does not survive this plan, so the fixed address \
                     changes."
                )),
            }
        }
        _ => {}
    }
    notes
}
