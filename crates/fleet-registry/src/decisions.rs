//! The engine's decisions as values ([`EngineWrite`]), and how the registry commits them: in
//! as few fenced transactions as etcd's limit allows, a group never split, several in flight
//! when no key is written twice. The engine decides; only this module knows the keys.

use fleet_unit::{MachineId, UnitName};

use crate::error::{RegistryError, Result};
use crate::keys::RegistryKey;
use crate::kv::{Op, Revision, MAX_TXN_OPS};
use crate::leadership::Leadership;
use crate::records::{encode, JobRecord, MovesRecord, ReasonRecord};
use crate::registry::Registry;

/// One write the engine decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineWrite {
    /// `unit` is placed on `machine`, with what it should be there.
    Place {
        machine: MachineId,
        unit: UnitName,
        record: JobRecord,
    },
    Unplace {
        machine: MachineId,
        unit: UnitName,
    },
    /// Why `unit` cannot be placed, or (waiting for units) started.
    Unplaceable {
        unit: UnitName,
        reason: ReasonRecord,
    },
    /// `unit` has no reason not to be placed (any more).
    Placeable {
        unit: UnitName,
    },
    /// What the engine records of `unit`'s failures and moves (`None`: nothing any more).
    Moves {
        unit: UnitName,
        record: Option<MovesRecord>,
    },
}

impl EngineWrite {
    pub fn place(machine: &MachineId, unit: &UnitName, record: &JobRecord) -> EngineWrite {
        EngineWrite::Place {
            machine: machine.clone(),
            unit: unit.clone(),
            record: record.clone(),
        }
    }

    pub fn unplace(machine: &MachineId, unit: &UnitName) -> EngineWrite {
        EngineWrite::Unplace {
            machine: machine.clone(),
            unit: unit.clone(),
        }
    }

    pub fn unplaceable(unit: &UnitName, reason: &str) -> EngineWrite {
        EngineWrite::Unplaceable {
            unit: unit.clone(),
            reason: ReasonRecord {
                reason: reason.to_owned(),
                waiting_for: Vec::new(),
            },
        }
    }

    /// `unit` is placed but not started: the units its `StartAfter=` names in `waiting_for`
    /// are not up yet.
    pub fn waiting(unit: &UnitName, waiting_for: &[String]) -> EngineWrite {
        EngineWrite::Unplaceable {
            unit: unit.clone(),
            reason: ReasonRecord {
                reason: fleet_unit::requirements::waiting_reason(waiting_for),
                waiting_for: waiting_for.to_vec(),
            },
        }
    }

    pub fn placeable(unit: &UnitName) -> EngineWrite {
        EngineWrite::Placeable { unit: unit.clone() }
    }

    pub fn moves(unit: &UnitName, record: Option<MovesRecord>) -> EngineWrite {
        EngineWrite::Moves {
            unit: unit.clone(),
            record,
        }
    }

    fn op(&self) -> Op {
        match self {
            EngineWrite::Place {
                machine,
                unit,
                record,
            } => Op::put(
                RegistryKey::Schedule(machine.clone(), unit.clone()).path(),
                encode(record),
            ),
            EngineWrite::Unplace { machine, unit } => {
                Op::delete(RegistryKey::Schedule(machine.clone(), unit.clone()).path())
            }
            EngineWrite::Unplaceable { unit, reason } => {
                Op::put(RegistryKey::Reason(unit.clone()).path(), encode(reason))
            }
            EngineWrite::Placeable { unit } => Op::delete(RegistryKey::Reason(unit.clone()).path()),
            EngineWrite::Moves { unit, record } => {
                let key = RegistryKey::Moves(unit.clone()).path();
                match record {
                    Some(record) => Op::put(key, encode(record)),
                    None => Op::delete(key),
                }
            }
        }
    }
}

impl Registry {
    /// Applies the engine's writes as few transactions as the limit allows, each fenced on
    /// `leadership`. A group's operations always land in the same transaction. Returns the last
    /// revision written, or `None` as soon as leadership turns out to be lost (groups before
    /// it were applied; the next leader re-reads and corrects).
    pub async fn commit_decisions(
        &self,
        leadership: &Leadership,
        groups: Vec<Vec<EngineWrite>>,
    ) -> Result<Option<Revision>> {
        // When no key is written twice, the order of the groups does not matter, so: grouped
        // by key (by machine, for placements), each machine's agent hears of all its new
        // units in one or two transactions rather than one per unit; and several transactions
        // in flight let etcd commit them in one round.
        let mut groups: Vec<Vec<Op>> = groups
            .iter()
            .map(|group| group.iter().map(EngineWrite::op).collect())
            .collect();
        let independent = writes_each_key_once(&groups);
        if independent {
            groups.sort_by(|a, b| first_key(a).cmp(first_key(b)));
        }
        let batches = pack(groups)?;
        let in_flight = match independent {
            true => DECISIONS_IN_FLIGHT,
            false => 1,
        };
        let mut revision = 0;
        for wave in batches.chunks(in_flight) {
            let sent = wave
                .iter()
                .map(|batch| self.txn(vec![leadership.fence()], batch.clone()));
            for outcome in futures_util::future::join_all(sent).await {
                let outcome = outcome?;
                if !outcome.succeeded {
                    return Ok(None);
                }
                revision = revision.max(outcome.revision);
            }
        }
        Ok(Some(revision))
    }
}

/// How many of the engine's decision transactions are sent at once.
const DECISIONS_IN_FLIGHT: usize = 8;

/// Whether no key is the target of two operations (a prefix deletion counts as touching
/// everything).
fn writes_each_key_once(groups: &[Vec<Op>]) -> bool {
    let mut seen = std::collections::HashSet::new();
    groups.iter().flatten().all(|op| match op {
        Op::Put { key, .. } | Op::Delete { key } => seen.insert(key.as_str()),
        Op::DeletePrefix { .. } => false,
    })
}

fn first_key(group: &[Op]) -> &str {
    match group.first() {
        Some(Op::Put { key, .. } | Op::Delete { key }) => key,
        Some(Op::DeletePrefix { prefix }) => prefix,
        None => "",
    }
}

/// Packs operation groups into transactions of at most [`MAX_TXN_OPS`] operations, keeping
/// each group whole.
fn pack(groups: Vec<Vec<Op>>) -> Result<Vec<Vec<Op>>> {
    let mut batches: Vec<Vec<Op>> = Vec::new();
    for group in groups {
        if group.len() > MAX_TXN_OPS {
            return Err(RegistryError::Invalid(format!(
                "a decision of {} operations does not fit one transaction",
                group.len()
            )));
        }
        match batches.last_mut() {
            Some(batch) if batch.len() + group.len() <= MAX_TXN_OPS => batch.extend(group),
            _ => batches.push(group),
        }
    }
    batches.retain(|b| !b.is_empty());
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(groups: &[usize], expected: &[usize]) {
        let groups = groups
            .iter()
            .enumerate()
            .map(|(g, &n)| (0..n).map(|i| Op::delete(format!("{g}/{i}"))).collect())
            .collect();
        let sizes: Vec<usize> = pack(groups).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, expected);
    }

    #[test]
    fn decisions_pack_into_transactions_without_splitting_a_group() {
        check(&[], &[]);
        check(&[1; 128], &[128]);
        check(&[1; 129], &[128, 1]);
        check(&[2; 64], &[128]);
        check(&[2, 127, 1], &[2, 128]);
        check(&[0, 3, 0], &[3]);
        assert!(pack(vec![vec![Op::delete("x"); 129]]).is_err());
    }
}
