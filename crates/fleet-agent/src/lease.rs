//! The machine lease, kept on a task of its own: announcing the machine, renewing the lease
//! every eighth of its TTL, and deciding when it is taken for lost. Nothing here waits for a
//! unit manager, a reconcile or a registry listing, so however busy the machine is, the lease
//! is renewed on time.
//!
//! The agent and the fence read the lease through a `watch` channel of [`LeaseStatus`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::AgentError;
use fleet_registry::records::MachineRecord;
use fleet_registry::{renewal_interval, MachineLease, Registry, RegistryError};
use fleet_unit::MachineId;
use tokio::sync::{mpsc, watch};

/// What the machine holds, as last known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease presence and states ride on; `None` until announced, and after it expired.
    pub lease: Option<MachineLease>,
    /// When the last successful renewal (or the announcement) was sent: etcd took it later, so
    /// the lease lasts at least until this plus the TTL.
    pub renewed_at: Option<Instant>,
    /// The lease is about to expire unrenewed, or etcd said it has: the engine may soon place
    /// this machine's units elsewhere. Cleared by the next renewal or announcement.
    pub lost: bool,
}

impl LeaseStatus {
    /// The machine holds a lease that is not taken for lost.
    pub fn held(&self) -> Option<&MachineLease> {
        self.lease.as_ref().filter(|_| !self.lost)
    }
}

pub struct LeaseConfig {
    pub machine: MachineId,
    pub record: MachineRecord,
    pub ttl: Duration,
    /// Where the lease's ID is kept, so that the next fleetd adopts it.
    pub lease_file: PathBuf,
    /// New announcements of this machine (metadata or address changed).
    pub updates: Option<watch::Receiver<MachineRecord>>,
}

/// The lease ID a fleetd of this machine wrote down, if any.
pub fn recorded(lease_file: &std::path::Path) -> Option<fleet_registry::LeaseId> {
    std::fs::read_to_string(lease_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// Keeps the machine lease until `shutdown` turns true. `expired` is how the agent says the
/// registry refused a write on the lease (it is gone: announce again). `Err` only for what no
/// retry fixes: the machine ID is held by another live fleetd.
pub async fn keep(
    registry: Registry,
    mut config: LeaseConfig,
    status: watch::Sender<LeaseStatus>,
    mut expired: mpsc::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let interval = renewal_interval(config.ttl);
    let mut renewals = tokio::time::interval(interval);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at: Option<Instant> = None;
    loop {
        let current = status.borrow().clone();
        if current.lease.is_none() && retry_at.is_none_or(|at| at <= Instant::now()) {
            match announce(&registry, &config, None).await {
                Ok(lease) => {
                    status.send_replace(LeaseStatus {
                        lease: Some(lease),
                        renewed_at: Some(Instant::now()),
                        lost: false,
                    });
                    retry_at = None;
                    continue;
                }
                Err(RegistryError::Conflict(why)) => return Err(AgentError::MachineTaken(why)),
                Err(error) => {
                    tracing::warn!(%error, "agent: cannot announce this machine; retrying");
                    retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        tokio::select! {
            _ = renewals.tick() => renew(&registry, &status).await,
            _ = until(fence_deadline(&current, config.ttl)) => {
                if let Some(at) = current.renewed_at {
                    tracing::warn!(since_renewal = ?at.elapsed(), "agent: the machine lease is taken for lost");
                }
                status.send_modify(|s| s.lost = true);
            }
            _ = until(retry_at) => {}
            Some(()) = expired.recv() => {
                tracing::warn!("agent: the registry no longer knows the machine lease; announcing again");
                status.send_modify(|s| { s.lease = None; s.lost = true; });
            }
            Some(record) = next_update(&mut config.updates) => {
                tracing::info!("agent: announcing the machine's new configuration");
                config.record = record;
                match announce(&registry, &config, current.lease.as_ref()).await {
                    Ok(lease) => {
                        status.send_replace(LeaseStatus { lease: Some(lease), renewed_at: Some(Instant::now()), lost: false });
                    }
                    Err(RegistryError::Conflict(why)) => return Err(AgentError::MachineTaken(why)),
                    Err(error) => tracing::warn!(%error, "agent: cannot announce the new configuration; retrying"),
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Announces the machine on `current` (a new record on the lease it holds), else on the
/// lease of the previous fleetd when that is still alive with the same TTL, else on a new
/// one. The lease's ID is written down for the next fleetd.
async fn announce(
    registry: &Registry,
    config: &LeaseConfig,
    current: Option<&MachineLease>,
) -> Result<MachineLease, RegistryError> {
    let previous = match current {
        Some(lease) => Some(lease.lease),
        None => recorded(&config.lease_file),
    };
    let lease = registry
        .register_machine(&config.machine, &config.record, config.ttl, previous)
        .await?;
    if current.is_none() {
        if let Err(error) = std::fs::write(&config.lease_file, lease.lease.to_string()) {
            tracing::warn!(%error, path = %config.lease_file.display(), "agent: cannot keep the lease ID");
        }
        let adopted = Some(lease.lease) == previous;
        tracing::info!(machine = %config.machine, lease = lease.lease, adopted, "agent: machine announced");
    }
    Ok(lease)
}

/// One renewal, bounded by the renewal interval (the store gives up after it).
async fn renew(registry: &Registry, status: &watch::Sender<LeaseStatus>) {
    let Some(lease) = status.borrow().lease.clone() else {
        return;
    };
    let sent = Instant::now();
    match registry.keep_alive(&lease).await {
        Ok(true) => {
            let was_lost = status.borrow().lost;
            status.send_modify(|s| {
                if s.lease.as_ref() == Some(&lease) {
                    s.renewed_at = Some(sent);
                    s.lost = false;
                }
            });
            if was_lost {
                tracing::info!("agent: the machine lease is renewed again");
            }
        }
        Ok(false) => {
            tracing::warn!("agent: the machine lease expired; announcing again");
            status.send_modify(|s| {
                s.lease = None;
                s.lost = true;
            });
        }
        Err(error) => tracing::warn!(%error, "agent: keep-alive failed; units keep running"),
    }
}

/// When the lease is taken for lost unless renewed first: three renewal intervals (one for
/// a renewal under way, one for the stops of `StopWhenDisconnected` units, one for a busy
/// machine's late timers) before the earliest moment etcd can let it expire, after which the
/// engine may start its units elsewhere. `None` while there is no lease or it is lost already.
pub fn fence_deadline(status: &LeaseStatus, ttl: Duration) -> Option<Instant> {
    status.held()?;
    status
        .renewed_at
        .map(|at| at + ttl.saturating_sub(3 * renewal_interval(ttl)))
}

/// The next machine record to announce; never resolves without an update channel.
async fn next_update(
    updates: &mut Option<watch::Receiver<MachineRecord>>,
) -> Option<MachineRecord> {
    let Some(receiver) = updates else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => Some(receiver.borrow_and_update().clone()),
        Err(_) => {
            *updates = None;
            None
        }
    }
}

/// Sleeps until `deadline`; never resolves without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_comes_three_renewals_before_expiry() {
        let now = Instant::now();
        let lease = MachineLease {
            machine: MachineId::new("a").unwrap(),
            lease: 1,
            ttl: Duration::from_secs(8),
        };
        let check = |status: LeaseStatus, expected: Option<Instant>| {
            assert_eq!(
                fence_deadline(&status, Duration::from_secs(8)),
                expected,
                "{status:?}"
            );
        };
        let held = LeaseStatus {
            lease: Some(lease.clone()),
            renewed_at: Some(now),
            lost: false,
        };
        check(held.clone(), Some(now + Duration::from_secs(5)));
        check(
            LeaseStatus {
                lost: true,
                ..held.clone()
            },
            None,
        );
        check(LeaseStatus::default(), None);
    }
}
