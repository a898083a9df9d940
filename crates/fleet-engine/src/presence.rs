//! Which machines the engine schedules on. Normally those in the registry. But a machine's
//! lease also expires when nobody could reach etcd (an etcd outage, this host cut off): its
//! absence then says nothing about the machine, and moving its units would restart them for
//! nothing (fleet's single-node connectivity-loss test). So for one agent TTL after this engine
//! last failed to reach the registry, machines it saw before that and that have vanished since
//! are still counted, with the metadata they had; an agent that lived through the outage
//! announces itself again well within that time. A machine that is really gone loses its units
//! when the grace ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleet_unit::MachineId;

use crate::scheduler::MachineInfo;

pub struct Presence {
    grace: Duration,
    /// When this engine last failed to reach the registry.
    trouble: Option<Instant>,
    /// Every machine counted in the last pass, with its metadata.
    counted: BTreeMap<MachineId, BTreeMap<String, String>>,
}

impl Presence {
    pub fn new(grace: Duration) -> Presence {
        Presence {
            grace,
            trouble: None,
            counted: BTreeMap::new(),
        }
    }

    pub fn registry_failed(&mut self, at: Instant) {
        self.trouble = Some(at);
    }

    /// When the grace for vanished machines ends, if it has not yet.
    pub fn grace_ends(&self, now: Instant) -> Option<Instant> {
        self.trouble
            .map(|at| at + self.grace)
            .filter(|end| *end > now)
    }

    /// The machines to schedule on at `now`, given those in the registry: also, during the
    /// grace, the vanished ones (logged).
    pub fn machines(&mut self, registered: Vec<MachineInfo>, now: Instant) -> Vec<MachineInfo> {
        let mut counted: BTreeMap<MachineId, BTreeMap<String, String>> =
            registered.into_iter().map(|m| (m.id, m.metadata)).collect();
        if let Some(end) = self.grace_ends(now) {
            for (id, metadata) in std::mem::take(&mut self.counted) {
                if let std::collections::btree_map::Entry::Vacant(entry) = counted.entry(id) {
                    tracing::info!(
                        machine = %entry.key(),
                        left = ?end - now,
                        "engine: machine gone from the registry right after the registry was \
                         unreachable; its units stay until it is back or the grace ends"
                    );
                    entry.insert(metadata);
                }
            }
        }
        self.counted = counted.clone();
        counted
            .into_iter()
            .map(|(id, metadata)| MachineInfo { id, metadata })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str) -> MachineInfo {
        MachineInfo {
            id: MachineId::new(id).unwrap(),
            metadata: BTreeMap::from([("role".to_owned(), id.to_owned())]),
        }
    }

    /// Passes of (seconds since start, registry failed at this moment?, machines registered)
    /// → the machines counted after each pass.
    fn check(passes: &[(u64, bool, &[&str])], expected: &[&[&str]]) {
        let start = Instant::now();
        let mut presence = Presence::new(Duration::from_secs(2));
        let mut counted = Vec::new();
        for (at, failed, registered) in passes {
            let now = start + Duration::from_secs(*at);
            if *failed {
                presence.registry_failed(now);
            }
            let machines = presence.machines(registered.iter().map(|m| machine(m)).collect(), now);
            for m in &machines {
                assert_eq!(m.metadata["role"], m.id.to_string(), "metadata kept");
            }
            counted.push(
                machines
                    .iter()
                    .map(|m| m.id.to_string())
                    .collect::<Vec<_>>(),
            );
        }
        let expected: Vec<Vec<String>> = expected
            .iter()
            .map(|e| e.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(counted, expected);
    }

    #[test]
    fn vanished_machines_count_only_for_a_while_after_the_registry_failed() {
        // No trouble: a vanished machine is gone at once.
        check(
            &[(0, false, &["a", "b"]), (1, false, &["a"])],
            &[&["a", "b"], &["a"]],
        );
        // Trouble at 1 s: b, gone at 2 s, still counts until 3 s.
        check(
            &[
                (0, false, &["a", "b"]),
                (1, true, &["a", "b"]),
                (2, false, &["a"]),
                (3, false, &["a"]),
            ],
            &[&["a", "b"], &["a", "b"], &["a", "b"], &["a"]],
        );
        // A machine that comes back during the grace is simply there; new ones count at once.
        check(
            &[
                (0, true, &["a", "b"]),
                (1, false, &["c"]),
                (1, false, &["b", "c"]),
                (5, false, &["c"]),
            ],
            &[&["a", "b"], &["a", "b", "c"], &["a", "b", "c"], &["c"]],
        );
    }
}
