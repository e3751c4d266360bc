//! The Elastic IP steps deploy and rollback share: where the address is (two reads
//! that agree, since DescribeAddresses lags an association), the guard that it is
//! where the state says, the move (intent first, then AssociateAddress, then confirmed),
//! settling a move a crashed run began, and the refusal to terminate its holder.

use std::net::IpAddr;
use std::time::Duration;

use super::{ReleaseError, ReleaseOptions};
use crate::aws::{AwsError, Backoff, Clients, retry_while};
use crate::health;
use crate::instances::EC2_PROPAGATION;
use crate::state::{Color, EipMove, State, StateStore};
use crate::{Deployer, Error};

/// The Elastic IP as DescribeAddresses reports it: (public IP, holding instance).
pub async fn eip_holder(
    clients: &Clients,
    allocation: &str,
) -> Result<(Option<String>, Option<String>), AwsError> {
    let out = clients
        .ec2
        .describe_addresses()
        .allocation_ids(allocation)
        .send()
        .await
        .map_err(|e| AwsError::new("aws_eip.api", "DescribeAddresses", e))?;
    let Some(a) = out.addresses().first() else {
        return Err(AwsError::other(
            "aws_eip.api",
            "DescribeAddresses",
            format!("no address {allocation}"),
        ));
    };
    Ok((
        a.public_ip().map(str::to_string),
        a.instance_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    ))
}

impl Deployer {
    /// The probe target of the Elastic IP `allocation`: its public address on the API
    /// port, through the address map if there is one.
    pub(super) async fn eip_target(
        &self,
        allocation: &str,
        release: &str,
        opts: &ReleaseOptions,
    ) -> Result<health::Target, Error> {
        let (ip, _) = eip_holder(&self.clients, allocation).await?;
        let Some(ip) = ip.and_then(|i| i.parse::<IpAddr>().ok()) else {
            return Err(ReleaseError::NoPublicAddress {
                release: release.into(),
            }
            .into());
        };
        let target = opts
            .endpoints
            .elastic_ip(std::net::SocketAddr::new(ip, self.cfg.api_port))
            .map_err(ReleaseError::from)?;
        Ok(target)
    }

    /// The address must be where the state says (or nowhere, before the first deploy).
    pub(super) async fn guard_eip(&self, state: &State, allocation: &str) -> Result<(), Error> {
        let (_, actual) = eip_holder(&self.clients, allocation).await?;
        let expected = state
            .release
            .eip_holder
            .and_then(|c| state.release.instances.get(&c))
            .map(|r| r.instance_id.clone());
        if actual != expected {
            return Err(ReleaseError::EipMoved {
                allocation: allocation.into(),
                expected: expected.unwrap_or_else(|| "no instance".into()),
                actual: actual.unwrap_or_else(|| "no instance".into()),
            }
            .into());
        }
        Ok(())
    }

    /// Moves the Elastic IP to `to`'s `instance`, the intent written to the state
    /// first: `AssociateAddress` (retried while EC2 does not show the instance yet),
    /// then confirmed by polling `DescribeAddresses` until two reads in a row show the
    /// new holder (a single read can still show the old association). Leaves the
    /// intent in `state` for the caller to clear with the new holder.
    pub(super) async fn move_eip(
        &self,
        store: &StateStore,
        state: &mut State,
        allocation: &str,
        to: Color,
        instance: &str,
    ) -> Result<(), Error> {
        state.release.eip_moving = Some(EipMove {
            to,
            instance_id: instance.to_string(),
            at: chrono::Utc::now(),
        });
        store.write(state).await?;
        retry_while(
            Backoff::INSTANCE_VISIBLE,
            |e| e.code == "InvalidInstanceID.NotFound",
            || async {
                self.clients
                    .ec2
                    .associate_address()
                    .allocation_id(allocation)
                    .instance_id(instance)
                    .allow_reassociation(true)
                    .send()
                    .await
                    .map_err(|e| AwsError::new("aws_eip.api", "AssociateAddress", e))
            },
        )
        .await?;
        crate::engine::fault_point("after-associate:aws_eip.api").await;
        let holder = confirmed_holder(&self.clients, allocation, Some(instance)).await?;
        if holder.as_deref() != Some(instance) {
            return Err(AwsError::other(
                "aws_eip.api",
                "AssociateAddress",
                format!(
                    "DescribeAddresses still shows {} {}s after moving it to {instance}",
                    holder.as_deref().unwrap_or("no instance"),
                    EC2_PROPAGATION.as_secs()
                ),
            )
            .into());
        }
        Ok(())
    }

    /// A move the last run began and did not confirm: where the address really is
    /// decides the holder.
    pub(super) async fn settle_eip_move(
        &self,
        store: &StateStore,
        state: &mut State,
        allocation: &str,
    ) -> Result<(), Error> {
        let Some(m) = state.release.eip_moving.clone() else {
            return Ok(());
        };
        let holder = confirmed_holder(&self.clients, allocation, None).await?;
        if holder.as_deref() == Some(m.instance_id.as_str()) {
            tracing::warn!(color = %m.to, instance = %m.instance_id, "the last run moved the Elastic IP and stopped before recording it: recorded now");
            state.release.eip_holder = Some(m.to);
        } else {
            tracing::warn!(color = %m.to, instance = %m.instance_id, "the last run began moving the Elastic IP and stopped: the address did not move");
        }
        state.release.eip_moving = None;
        store.write(state).await?;
        Ok(())
    }

    /// Refuses to terminate `instance` while `DescribeAddresses` shows it holding the
    /// Elastic IP (a stale state must never cost the live colour).
    pub(super) async fn check_not_holding(
        &self,
        allocation: &str,
        instance: &str,
    ) -> Result<(), Error> {
        let (_, holder) = eip_holder(&self.clients, allocation).await?;
        if holder.as_deref() == Some(instance) {
            return Err(ReleaseError::HoldsEip {
                instance: instance.to_string(),
                allocation: allocation.to_string(),
            }
            .into());
        }
        Ok(())
    }
}

/// The Elastic IP's holder once `DescribeAddresses` has answered the same twice in a
/// row (a second apart), polling up to [`EC2_PROPAGATION`] for `expect` if given.
async fn confirmed_holder(
    clients: &Clients,
    allocation: &str,
    expect: Option<&str>,
) -> Result<Option<String>, AwsError> {
    let start = std::time::Instant::now();
    let mut last: Option<Option<String>> = None;
    loop {
        let (_, now) = eip_holder(clients, allocation).await?;
        let settled = last.as_ref() == Some(&now);
        let wanted = expect.is_none_or(|e| now.as_deref() == Some(e));
        if (settled && wanted) || start.elapsed() > EC2_PROPAGATION {
            return Ok(now);
        }
        if !wanted {
            tracing::debug!(
                ?now,
                ?expect,
                "DescribeAddresses does not show the move yet"
            );
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
