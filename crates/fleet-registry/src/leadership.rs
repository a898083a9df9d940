//! The engine's leadership: one `leader` key on a lease, taken only when absent, and the fence
//! every write of the leader's carries (the key's create revision), so that a deposed leader
//! can write nothing.

use std::time::Duration;

use fleet_unit::MachineId;

use crate::error::Result;
use crate::keys;
use crate::kv::{Compare, EventKind, LeaseId, Op, Revision};
use crate::machines::renewal_interval;
use crate::records::{encode, LeaderRecord};
use crate::registry::Registry;

/// Proof of leadership: writes made with it apply only while this leader key still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub machine: MachineId,
    pub lease: LeaseId,
    pub ttl: Duration,
    /// The create revision of the leader key: a later leader's key has another.
    pub since: Revision,
}

impl Leadership {
    pub(crate) fn fence(&self) -> Compare {
        Compare::CreateRevision(keys::LEADER.into(), self.since)
    }
}

impl Registry {
    /// Becomes the engine leader if there is none. `None`: another machine leads (watch the
    /// `leader` key in the engine scope to learn when it goes).
    pub async fn campaign(
        &self,
        machine: &MachineId,
        ttl: Duration,
        version: &str,
    ) -> Result<Option<Leadership>> {
        let lease = self.kv().grant_lease(ttl).await?;
        let record = LeaderRecord {
            machine: machine.clone(),
            version: version.to_owned(),
        };
        let absent = Compare::Absent(keys::LEADER.into());
        let put = Op::put_with_lease(keys::LEADER, encode(&record), lease);
        let outcome = self.txn(vec![absent], vec![put]).await;
        match outcome {
            Ok(outcome) if outcome.succeeded => Ok(Some(Leadership {
                machine: machine.clone(),
                lease,
                ttl,
                since: outcome.revision,
            })),
            other => {
                let _ = self.kv().revoke_lease(lease).await;
                other.map(|_| None)
            }
        }
    }

    /// Renews leadership; `false` once it is lost.
    pub async fn keep_leading(&self, leadership: &Leadership) -> Result<bool> {
        let renewed = self
            .kv()
            .keep_alive(leadership.lease, renewal_interval(leadership.ttl));
        Ok(renewed.await?.is_some())
    }

    /// Steps down at once, so another engine can take over without waiting for the TTL.
    pub async fn resign(&self, leadership: &Leadership) -> Result<()> {
        self.kv().revoke_lease(leadership.lease).await
    }

    /// Waits until no engine leads: `true` once the leader key is absent or deleted, `false`
    /// when the watch ended before (the caller reads again). Only reads: a follower that
    /// campaigned on a timer would make etcd grant and revoke leases for nothing.
    pub async fn until_no_leader(&self) -> Result<bool> {
        let (ranges, revision) = self.kv().range(&[keys::LEADER]).await?;
        if ranges[0].iter().all(|kv| kv.key != keys::LEADER) {
            return Ok(true);
        }
        let mut watch = self.kv().watch(keys::LEADER, revision + 1).await?;
        while let Some(batch) = watch.next().await {
            let deleted = batch?
                .events
                .iter()
                .any(|e| e.kv.key == keys::LEADER && e.kind == EventKind::Delete);
            if deleted {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
