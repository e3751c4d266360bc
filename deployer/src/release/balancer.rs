//! `front = "nlb"`: the target groups and the listener's weights, as a release uses
//! them. The stack (`apply`) creates the balancer, the two groups and the listener; the
//! weights are the release's: the live colour's group gets all new connections, a
//! canary a share, the other colour 0 (still registered, for the rollback window).
//!
//! A weight change is written to the state (`release.weights_moving`) before
//! `ModifyListener`, and recorded once it returned; a run that stopped in between is
//! settled by the next one from the listener's real weights ([`Deployer::settle_weights`]).

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetDescription, TargetGroupTuple,
};

use super::ReleaseError;
use crate::aws::{AwsError, Backoff, Clients, retry_while};
use crate::state::{Color, State, StateStore, WeightShift};
use crate::{Deployer, Error};

/// The listener's address in the state.
pub const LISTENER: &str = "aws_lb_listener.api";

/// A colour's target group's address in the state.
pub fn group_address(c: Color) -> String {
    format!("aws_lb_target_group.{c}")
}

/// The balancer's parts a release touches, by their ids (ARNs) in the state.
#[derive(Debug, Clone)]
pub struct Balancer {
    elb: aws_sdk_elasticloadbalancingv2::Client,
    listener: String,
    groups: BTreeMap<Color, String>,
}

/// One target as `DescribeTargetHealth` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    pub instance_id: String,
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`, ...
    pub state: String,
    /// AWS's reason code and description, when not healthy.
    pub reason: Option<String>,
}

fn id_at(state: &State, address: &str) -> Result<String, ReleaseError> {
    state
        .resources
        .get(address)
        .map(|r| r.id.clone())
        .ok_or_else(|| ReleaseError::NoStack(address.to_string()))
}

impl Balancer {
    /// The listener and both groups from the state (`apply` made them).
    pub fn of(clients: &Clients, state: &State) -> Result<Balancer, ReleaseError> {
        let mut groups = BTreeMap::new();
        for c in [Color::Blue, Color::Green] {
            groups.insert(c, id_at(state, &group_address(c))?);
        }
        Ok(Balancer {
            elb: clients.elb.clone(),
            listener: id_at(state, LISTENER)?,
            groups,
        })
    }

    fn group(&self, c: Color) -> &str {
        self.groups.get(&c).map(String::as_str).unwrap_or_default()
    }

    /// Registers `ids` in `color`'s group, retrying while ELB does not see a
    /// just-started instance as running yet (`InvalidTarget`).
    pub async fn register(&self, color: Color, ids: &[String]) -> Result<(), AwsError> {
        retry_while(
            Backoff::INSTANCE_VISIBLE,
            |e| e.code == "InvalidTarget",
            || async {
                self.elb
                    .register_targets()
                    .target_group_arn(self.group(color))
                    .set_targets(Some(descriptions(ids)))
                    .send()
                    .await
                    .map_err(|e| AwsError::new(group_address(color), "RegisterTargets", e))
            },
        )
        .await?;
        Ok(())
    }

    /// Deregisters `ids` from `color`'s group: each drains for the group's
    /// deregistration delay.
    pub async fn deregister(&self, color: Color, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.elb
            .deregister_targets()
            .target_group_arn(self.group(color))
            .set_targets(Some(descriptions(ids)))
            .send()
            .await
            .map_err(|e| AwsError::new(group_address(color), "DeregisterTargets", e))?;
        Ok(())
    }

    /// `DescribeTargetHealth` of `color`'s group.
    pub async fn health(&self, color: Color) -> Result<Vec<TargetHealth>, AwsError> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(self.group(color))
            .send()
            .await
            .map_err(|e| AwsError::new(group_address(color), "DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let h = d.target_health();
                TargetHealth {
                    instance_id: d
                        .target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_string(),
                    state: h
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    reason: h.and_then(|h| {
                        h.reason().map(|r| {
                            format!(
                                "{}: {}",
                                r.as_str(),
                                h.description().unwrap_or("no description")
                            )
                        })
                    }),
                }
            })
            .collect())
    }

    /// The listener's forward weights per colour, as `DescribeListeners` shows them.
    pub async fn weights(&self) -> Result<BTreeMap<Color, i32>, AwsError> {
        let out = self
            .elb
            .describe_listeners()
            .listener_arns(&self.listener)
            .send()
            .await
            .map_err(|e| AwsError::new(LISTENER, "DescribeListeners", e))?;
        let mut w: BTreeMap<Color, i32> = self.groups.keys().map(|c| (*c, 0)).collect();
        let tuples = out
            .listeners()
            .first()
            .into_iter()
            .flat_map(|l| l.default_actions())
            .filter_map(|a| a.forward_config())
            .flat_map(|f| f.target_groups());
        for t in tuples {
            for (c, arn) in &self.groups {
                if t.target_group_arn() == Some(arn.as_str()) {
                    *w.entry(*c).or_default() += t.weight().unwrap_or(1);
                }
            }
        }
        // A plain forward to one group (no ForwardConfig) is that group at 100%.
        if w.values().all(|v| *v == 0) {
            for a in out
                .listeners()
                .first()
                .into_iter()
                .flat_map(|l| l.default_actions())
            {
                for (c, arn) in &self.groups {
                    if a.target_group_arn() == Some(arn.as_str()) {
                        w.insert(*c, 1);
                    }
                }
            }
        }
        Ok(w)
    }

    /// Sets the weights: `to` gets `percent` of new connections, the other colour the
    /// rest (`ModifyListener` with a weighted `ForwardConfig`).
    pub async fn set_weights(&self, to: Color, percent: u8) -> Result<(), AwsError> {
        let pct = i32::from(percent.min(100));
        let mut cfg = ForwardActionConfig::builder();
        for (c, arn) in &self.groups {
            let w = if *c == to { pct } else { 100 - pct };
            cfg = cfg.target_groups(
                TargetGroupTuple::builder()
                    .target_group_arn(arn)
                    .weight(w)
                    .build(),
            );
        }
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(cfg.build())
            .build();
        self.elb
            .modify_listener()
            .listener_arn(&self.listener)
            .default_actions(action)
            .send()
            .await
            .map_err(|e| AwsError::new(LISTENER, "ModifyListener", e))?;
        Ok(())
    }
}

/// `color`'s share of new connections, in percent, from the weights.
pub fn share(weights: &BTreeMap<Color, i32>, color: Color) -> u8 {
    let total: i32 = weights.values().map(|w| (*w).max(0)).sum();
    if total == 0 {
        return 0;
    }
    let w = weights.get(&color).copied().unwrap_or(0).max(0);
    u8::try_from(w * 100 / total).unwrap_or(100)
}

/// The targets of `ids`, for `RegisterTargets` and `DeregisterTargets`.
fn descriptions(ids: &[String]) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).build())
        .collect()
}

/// The weights as one line: `blue 100%, green 0%`.
pub fn describe_weights(weights: &BTreeMap<Color, i32>) -> String {
    weights
        .keys()
        .map(|c| format!("{c} {}%", share(weights, *c)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Deployer {
    /// Shifts `percent` of new connections to `to`, the intent written to the state
    /// first. Leaves the intent in `state` for the caller to record and clear.
    pub(super) async fn shift(
        &self,
        store: &StateStore,
        state: &mut State,
        bal: &Balancer,
        to: Color,
        percent: u8,
    ) -> Result<(), Error> {
        state.release.weights_moving = Some(WeightShift {
            to,
            percent,
            at: chrono::Utc::now(),
        });
        store.write(state).await?;
        bal.set_weights(to, percent).await?;
        crate::engine::fault_point("after-modify-listener:aws_lb_listener.api").await;
        tracing::info!(color = %to, percent, "listener weights set");
        Ok(())
    }

    /// A weight change the last run began and did not record: the listener's real
    /// weights decide. All of them on the colour it went to: that colour is live.
    /// Anything less (a canary cut short, or the change never made): the weights go
    /// back to the live colour, which nothing validated otherwise.
    pub(super) async fn settle_weights(
        &self,
        store: &StateStore,
        state: &mut State,
        bal: &Balancer,
    ) -> Result<(), Error> {
        let Some(m) = state.release.weights_moving.clone() else {
            return Ok(());
        };
        let w = bal.weights().await?;
        if share(&w, m.to) == 100 {
            tracing::warn!(color = %m.to, "the last run shifted the listener and stopped before recording it: recorded now");
            state.release.eip_holder = Some(m.to);
        } else if let Some(live) = state.release.eip_holder {
            tracing::warn!(color = %m.to, weights = %describe_weights(&w), "the last run began shifting the listener and stopped: all traffic back to {live}");
            bal.set_weights(live, 100).await?;
        }
        state.release.weights_moving = None;
        store.write(state).await?;
        Ok(())
    }

    /// The weights must be where the state says: the live colour at 100% (any, before
    /// the first deploy).
    pub(super) async fn guard_weights(&self, state: &State, bal: &Balancer) -> Result<(), Error> {
        let Some(live) = state.release.eip_holder else {
            return Ok(());
        };
        let w = bal.weights().await?;
        if share(&w, live) != 100 {
            return Err(ReleaseError::WeightsMoved {
                expected: live,
                actual: describe_weights(&w),
            }
            .into());
        }
        Ok(())
    }

    /// Refuses to terminate `color`'s instances while the listener sends it traffic.
    pub(super) async fn check_not_live(&self, bal: &Balancer, color: Color) -> Result<(), Error> {
        let w = bal.weights().await?;
        if share(&w, color) > 0 {
            return Err(ReleaseError::ColorLive {
                color,
                weights: describe_weights(&w),
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_weights() {
        let w: BTreeMap<Color, i32> = [(Color::Blue, 90), (Color::Green, 10)].into();
        assert_eq!(share(&w, Color::Green), 10);
        assert_eq!(describe_weights(&w), "blue 90%, green 10%");
        let w: BTreeMap<Color, i32> = [(Color::Blue, 1), (Color::Green, 0)].into();
        assert_eq!(share(&w, Color::Blue), 100);
        let none: BTreeMap<Color, i32> = [(Color::Blue, 0), (Color::Green, 0)].into();
        assert_eq!(share(&none, Color::Blue), 0);
    }
}
