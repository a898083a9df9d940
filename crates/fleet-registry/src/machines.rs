//! A machine's part of the registry: its presence (`machines/<id>`) and its unit states
//! (`states/<id>/`), both on one lease that the machine's agent keeps alive and ends when it
//! leaves.

use std::time::Duration;

use fleet_unit::{MachineId, UnitName};

use crate::error::{RegistryError, Result};
use crate::keys::{self, RegistryKey};
use crate::kv::{Compare, LeaseId, Op, MAX_TXN_OPS};
use crate::records::{encode, FailureRecord, MachineRecord, RestartsRecord, StateRecord};
use crate::registry::{busy, Registry, CAS_ATTEMPTS};

/// How often a lease holder renews, and how long one renewal may take: a lease survives an
/// outage of up to `ttl - 2 * ttl / RENEWALS_PER_TTL` (the last renewal may have been one
/// interval before it began, and the first one after it may need another), 1.5 s of a 2 s TTL.
pub const RENEWALS_PER_TTL: u32 = 8;

/// The renewal interval (and the bound on one renewal) of a lease of `ttl`.
pub fn renewal_interval(ttl: Duration) -> Duration {
    ttl / RENEWALS_PER_TTL
}

/// A TTL as etcd grants it: whole seconds, rounded up.
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// A machine's presence, held by one lease that also carries its unit states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineLease {
    pub machine: MachineId,
    pub lease: LeaseId,
    pub ttl: Duration,
}

impl Registry {
    /// Announces a machine. With `adopt`, the lease of a previous run of this fleetd is kept if
    /// it is still alive, so a restart neither drops the machine's presence nor its unit
    /// states. A machine ID held by another live lease is refused: two fleetds with one ID
    /// would fight over its units.
    pub async fn register_machine(
        &self,
        machine: &MachineId,
        record: &MachineRecord,
        ttl: Duration,
        adopt: Option<LeaseId>,
    ) -> Result<MachineLease> {
        let key = RegistryKey::Machine(machine.clone()).path();
        // A store only this process writes holds no other live fleetd's lease: the one its
        // machine key is on is an earlier run's (whose lease file was lost), adopted as such.
        let adopt = match (adopt, self.kv().exclusive()) {
            (None, true) => self.kv().get(&key).await?.map(|kv| kv.lease),
            (adopt, _) => adopt,
        };
        let mut replaced = None;
        let adopted = match adopt {
            Some(lease) => match self.kv().keep_alive(lease, renewal_interval(ttl)).await? {
                // A lease of another TTL (agent_ttl changed across a restart) is handed over
                // to a new one: the machine key moves to it and the old one ends.
                Some(granted) if whole_seconds(granted) != whole_seconds(ttl) => {
                    replaced = Some(lease);
                    None
                }
                Some(_) => Some(lease),
                None => None,
            },
            None => None,
        };
        let lease = match adopted {
            Some(lease) => lease,
            None => self.kv().grant_lease(ttl).await?,
        };
        let result = self.claim_machine(&key, record, lease, replaced).await;
        if result.is_err() && adopted.is_none() {
            // Best effort: an unused lease would expire anyway.
            let _ = self.kv().revoke_lease(lease).await;
        }
        result?;
        if let Some(old) = replaced {
            // Only the old states go with it (the machine key is on the new lease now); the
            // agent publishes every state again on a new lease.
            let _ = self.kv().revoke_lease(old).await;
        }
        Ok(MachineLease {
            machine: machine.clone(),
            lease,
            ttl,
        })
    }

    /// Puts the machine's record on `lease`, if the key is free or already on `lease` (or on
    /// `replacing`, the lease it takes over from).
    async fn claim_machine(
        &self,
        key: &str,
        record: &MachineRecord,
        lease: LeaseId,
        replacing: Option<LeaseId>,
    ) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let compare = match self.kv().get(key).await? {
                None => Compare::Absent(key.to_owned()),
                Some(kv) if kv.lease == lease || Some(kv.lease) == replacing => {
                    Compare::ModRevision(key.to_owned(), kv.mod_revision)
                }
                Some(kv) => {
                    return Err(RegistryError::Conflict(format!(
                        "machine ID {} is already in use by another live fleetd (lease {:x}); \
                         give each machine its own ID, or stop the other fleetd and wait for \
                         its lease to expire",
                        key.trim_start_matches(keys::MACHINES),
                        kv.lease
                    )));
                }
            };
            let put = Op::put_with_lease(key, encode(record), lease);
            if self.txn(vec![compare], vec![put]).await?.succeeded {
                return Ok(());
            }
        }
        Err(busy(key))
    }

    /// Renews a machine's lease; `false` when it has expired (presence and states are gone:
    /// register again and re-report).
    pub async fn keep_alive(&self, lease: &MachineLease) -> Result<bool> {
        let renewed = self
            .kv()
            .keep_alive(lease.lease, renewal_interval(lease.ttl));
        Ok(renewed.await?.is_some())
    }

    /// Reports (or with `None` withdraws) a unit's state on the machine.
    pub async fn set_state(
        &self,
        lease: &MachineLease,
        name: &UnitName,
        state: Option<&StateRecord>,
    ) -> Result<()> {
        self.set_states(lease, &[(name.clone(), state.cloned())])
            .await
    }

    /// Reports (or withdraws) several units' states, as few transactions as the limit allows:
    /// a machine that starts many units at once reports them together.
    pub async fn set_states(
        &self,
        lease: &MachineLease,
        states: &[(UnitName, Option<StateRecord>)],
    ) -> Result<()> {
        self.on_lease(lease, states, RegistryKey::State).await
    }

    /// Writes (or, with `None`, deletes) this machine's reports of units that failed here, on
    /// its lease: a machine that is gone reports nothing.
    pub async fn set_failures(
        &self,
        lease: &MachineLease,
        failures: &[(UnitName, Option<FailureRecord>)],
    ) -> Result<()> {
        self.on_lease(lease, failures, RegistryKey::Failure).await
    }

    /// The state `machine` reported for `name`, if it did.
    pub async fn unit_state(
        &self,
        machine: &MachineId,
        name: &UnitName,
    ) -> Result<Option<StateRecord>> {
        let path = RegistryKey::State(machine.clone(), name.clone()).path();
        match self.kv().get(&path).await? {
            Some(kv) => Ok(Some(crate::records::decode(&path, &kv.value)?)),
            None => Ok(None),
        }
    }

    /// Writes (or, with `None`, deletes) this machine's records of the failures it handled
    /// itself, on its lease.
    pub async fn set_restarts(
        &self,
        lease: &MachineLease,
        restarts: &[(UnitName, Option<RestartsRecord>)],
    ) -> Result<()> {
        self.on_lease(lease, restarts, RegistryKey::Restarts).await
    }

    /// Writes (or deletes) records of this machine's units under `key`, on its lease, in as few
    /// transactions as the limit allows.
    async fn on_lease<T: serde::Serialize>(
        &self,
        lease: &MachineLease,
        records: &[(UnitName, Option<T>)],
        key: fn(MachineId, UnitName) -> RegistryKey,
    ) -> Result<()> {
        for chunk in records.chunks(MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|(name, record)| {
                    let path = key(lease.machine.clone(), name.clone()).path();
                    match record {
                        Some(record) => Op::put_with_lease(path, encode(record), lease.lease),
                        None => Op::delete(path),
                    }
                })
                .collect();
            self.txn(vec![], ops).await?;
        }
        Ok(())
    }

    /// Leaves the cluster now: presence and states vanish together.
    pub async fn deregister(&self, lease: &MachineLease) -> Result<()> {
        self.kv().revoke_lease(lease.lease).await
    }

    /// A machine leaves the cluster: its lease ends, and its presence and unit states go with
    /// it at once (not when the lease would have expired).
    pub async fn leave(&self, machine_lease: LeaseId) -> Result<()> {
        self.kv().revoke_lease(machine_lease).await
    }
}
