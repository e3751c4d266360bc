//! `status`: the state, DescribeAddresses and a probe of each colour, and how it is
//! shown.

use std::fmt;
use std::time::Duration;

use super::balancer::{self, Balancer};
use super::{describe, eip_holder};
use crate::config::Front;
use crate::health::{self, Endpoints};
use crate::stack::Kind;
use crate::state::{Color, InstanceRecord, ReleaseEvent};
use crate::{Deployer, Error};

/// One colour in `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColorStatus {
    pub color: Color,
    pub instance_id: String,
    pub release: String,
    pub model_version: Option<String>,
    /// The EC2 instance state (`running`, `pending`, ...), or `gone`.
    pub state: String,
    /// `healthy`, or why not (or why it was not probed).
    pub health: String,
    pub retire_after: Option<chrono::DateTime<chrono::Utc>>,
    /// `front = "nlb"`: the instance's state in its colour's target group
    /// (`DescribeTargetHealth`: `healthy`, `initial`, `unhealthy (reason)`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_health: Option<String>,
}

/// `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub active: Option<Color>,
    pub eip_public_ip: Option<String>,
    /// The instance DescribeAddresses shows holding the address.
    pub eip_instance: Option<String>,
    /// Its colour, when it is one of ours.
    pub eip_color: Option<Color>,
    /// One line per instance (a colour of several has several).
    pub colors: Vec<ColorStatus>,
    pub last: Option<ReleaseEvent>,
    /// `front = "nlb"`: the listener's weights (`blue 100%, green 0%`) and the
    /// balancer's addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub balancer_addresses: Vec<String>,
}

impl fmt::Display for ColorStatus {
    /// One line: `  blue  i-… release R model M [running] healthy (retires after T)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  {:5} {} release {} model {} [{}] {}",
            self.color.to_string(),
            self.instance_id,
            self.release,
            self.model_version.as_deref().unwrap_or("-"),
            self.state,
            self.health,
        )?;
        if let Some(t) = &self.target_health {
            write!(f, " target {t}")?;
        }
        if let Some(t) = self.retire_after {
            write!(f, " (retires after {t})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Status {
    /// The human-readable `deployer status`, one line per fact (no final newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Active colour: {}",
            self.active
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        )?;
        if let Some(w) = &self.weights {
            write!(
                f,
                "Balancer aws_lb.api at {}: listener weights {w}",
                self.balancer_addresses.join(", ")
            )?;
        } else {
            write!(
                f,
                "Elastic IP {} -> {} ({})",
                self.eip_public_ip.as_deref().unwrap_or("-"),
                self.eip_instance.as_deref().unwrap_or("no instance"),
                self.eip_color
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "not one of ours".into())
            )?;
        }
        for c in &self.colors {
            write!(f, "\n{c}")?;
        }
        if let Some(l) = &self.last {
            write!(
                f,
                "\nLast: {} {} at {}: {}",
                l.operation, l.release, l.at, l.outcome
            )?;
        }
        Ok(())
    }
}

impl Deployer {
    /// `status`: the state, DescribeAddresses and a probe of each colour.
    pub async fn status(&self, endpoints: &Endpoints) -> Result<Status, Error> {
        let state = self.read_state().await?;
        let (eip_public_ip, eip_instance) = match state.resources.get(&Kind::Eip.address()) {
            Some(r) => eip_holder(&self.clients, &r.id).await?,
            None => (None, None),
        };
        let nlb = match self.cfg.front {
            Front::Nlb if state.resources.contains_key(balancer::LISTENER) => {
                Some(Balancer::of(&self.clients, &state)?)
            }
            _ => None,
        };
        let mut colors = Vec::new();
        let mut eip_color = None;
        let mut weights = None;
        let mut balancer_addresses = Vec::new();
        if let Some(bal) = &nlb {
            weights = Some(balancer::describe_weights(&bal.weights().await?));
            for addr in ["aws_eip.api", "aws_eip.b"] {
                if let Some(r) = state.resources.get(addr)
                    && let (Some(ip), _) = eip_holder(&self.clients, &r.id).await?
                {
                    balancer_addresses.push(ip);
                }
            }
        }
        for (c, rec) in &state.release.instances {
            let targets = match &nlb {
                Some(bal) => Some(bal.health(*c).await?),
                None => None,
            };
            for id in rec.ids() {
                let mut r = rec.clone();
                r.instance_id = id;
                let target_health = targets.as_ref().map(|t| {
                    t.iter()
                        .find(|h| h.instance_id == r.instance_id)
                        .map(|h| match &h.reason {
                            Some(why) if h.state != "healthy" => format!("{} ({why})", h.state),
                            _ => h.state.clone(),
                        })
                        .unwrap_or_else(|| "not registered".into())
                });
                colors.push(self.color_status(*c, &r, endpoints, target_health).await?);
            }
            if eip_instance.as_deref() == Some(rec.instance_id.as_str()) {
                eip_color = Some(*c);
            }
        }
        Ok(Status {
            active: state.release.eip_holder,
            eip_public_ip,
            eip_instance,
            eip_color,
            colors,
            last: state.release.last,
            weights,
            balancer_addresses,
        })
    }

    /// One instance's line: EC2's state and the probe.
    async fn color_status(
        &self,
        c: Color,
        r: &InstanceRecord,
        endpoints: &Endpoints,
        target_health: Option<String>,
    ) -> Result<ColorStatus, Error> {
        let c = &c;
        {
            let d = describe(&self.clients, &r.instance_id).await?;
            let health = match &d {
                Some(d) if d.is_running() => {
                    match endpoints.for_color(*c, &r.instance_id, d.public_ip, self.cfg.api_port) {
                        Ok(t) => match health::check(
                            t,
                            &r.release,
                            r.model_version.as_deref(),
                            Duration::from_secs(3),
                        )
                        .await
                        {
                            Ok(_) => "healthy".to_string(),
                            Err(why) => why.to_string(),
                        },
                        Err(e) => format!("not probed: {e}"),
                    }
                }
                Some(d) => format!("not running ({})", d.state.as_str()),
                None => "gone".into(),
            };
            Ok(ColorStatus {
                color: *c,
                instance_id: r.instance_id.clone(),
                release: r.release.clone(),
                model_version: r.model_version.clone(),
                state: d
                    .map(|d| d.state.as_str().to_string())
                    .unwrap_or_else(|| "gone".into()),
                health,
                retire_after: r.retire_after,
                target_health,
            })
        }
    }
}
