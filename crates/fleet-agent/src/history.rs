//! This machine's record of the failures it handled itself (`restarts/<machine>/<name>`): a
//! unit restarted for its health, found stopped outside fleet or gone and started again, a
//! failed global unit restarted or given up on. The engine records the failures it moves
//! units for; these are the rest of a unit's history. Written when a failure is handled (an
//! idle machine writes nothing), kept while the unit is here, gone with the machine's lease.

use std::collections::{BTreeMap, BTreeSet};

use fleet_registry::records::{MoveEntry, RestartsRecord};
use fleet_unit::{MachineId, UnitName};

#[derive(Debug, Default)]
pub struct History {
    records: BTreeMap<UnitName, RestartsRecord>,
    /// Units whose record changed (or went) since it was written.
    unwritten: BTreeSet<UnitName>,
    /// Whether the registry's records were read yet (a restarted fleetd carries on with the
    /// records of its previous run, on the lease it adopts).
    known: bool,
}

impl History {
    /// Takes the records the registry holds, the first time it is read.
    pub fn adopt(&mut self, existing: Option<&BTreeMap<UnitName, RestartsRecord>>) {
        if !self.known {
            let mut existing = existing.cloned().unwrap_or_default();
            // What was added before they were read is kept after them.
            for (name, record) in std::mem::take(&mut self.records) {
                let merged = record
                    .history
                    .into_iter()
                    .fold(existing.remove(&name).unwrap_or_default(), |r, e| r.with(e));
                existing.insert(name, merged);
            }
            self.records = existing;
            self.known = true;
        }
    }

    /// A new lease holds no records: every one is written again.
    pub fn lease_changed(&mut self) {
        self.unwritten.extend(self.records.keys().cloned());
    }

    /// Records that `machine` handled a failure of `name` at `at_ms`: `what` failed, `action`
    /// was done.
    pub fn add(
        &mut self,
        machine: &MachineId,
        name: &UnitName,
        at_ms: u64,
        what: &str,
        action: &str,
    ) {
        let entry = MoveEntry {
            machine: machine.to_string(),
            at_ms,
            what: what.to_owned(),
            action: action.to_owned(),
        };
        let record = self.records.entry(name.clone()).or_default();
        *record = record.with(entry);
        self.unwritten.insert(name.clone());
    }

    /// Forgets the units `keep` does not keep (no longer here), in the registry too.
    pub fn retain(&mut self, keep: impl Fn(&UnitName) -> bool) {
        let gone: Vec<UnitName> = self.records.keys().filter(|n| !keep(n)).cloned().collect();
        for name in gone {
            self.records.remove(&name);
            self.unwritten.insert(name);
        }
    }

    /// The writes that make the registry hold these records.
    pub fn changes(&self) -> Vec<(UnitName, Option<RestartsRecord>)> {
        self.unwritten
            .iter()
            .map(|name| (name.clone(), self.records.get(name).cloned()))
            .collect()
    }

    /// Records that `changes` were written.
    pub fn written(&mut self, changes: &[(UnitName, Option<RestartsRecord>)]) {
        for (name, _) in changes {
            self.unwritten.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> UnitName {
        UnitName::new(n).unwrap()
    }

    /// The pending writes as `unit: action, action` or `unit: deleted`.
    fn check(history: &History, expected: &[&str]) {
        let got: Vec<String> = history
            .changes()
            .iter()
            .map(|(name, record)| match record {
                Some(r) => {
                    let actions: Vec<&str> = r.history.iter().map(|e| e.action.as_str()).collect();
                    format!("{name}: {}", actions.join(", "))
                }
                None => format!("{name}: deleted"),
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn records_are_written_when_they_change_and_deleted_when_the_unit_leaves() {
        let me = MachineId::new("m1").unwrap();
        let mut history = History::default();
        // Before the registry was read: kept after what an earlier run recorded.
        history.add(&me, &name("a.service"), 2, "gone", "started again");
        let earlier = RestartsRecord::default().with(MoveEntry {
            machine: "m1".into(),
            at_ms: 1,
            what: "unhealthy".into(),
            action: "restarted in place".into(),
        });
        let existing = BTreeMap::from([
            (name("a.service"), earlier.clone()),
            (name("b.service"), earlier),
        ]);
        history.adopt(Some(&existing));
        check(&history, &["a.service: restarted in place, started again"]);
        history.written(&history.changes());
        check(&history, &[]);
        // Read once: a later listing changes nothing.
        history.adopt(None);
        check(&history, &[]);
        for n in 0..12 {
            history.add(
                &me,
                &name("b.service"),
                10 + n,
                "stopped",
                &format!("again {n}"),
            );
        }
        let changes = history.changes();
        let kept = changes[0].1.as_ref().unwrap();
        assert_eq!(kept.history.len(), MovesRecord::KEPT);
        assert_eq!(kept.history[0].action, "again 2");
        history.written(&changes);
        history.retain(|n| n.as_str() == "b.service");
        check(&history, &["a.service: deleted"]);
        history.written(&history.changes());
        history.lease_changed();
        check(
            &history,
            &[&format!(
                "b.service: {}",
                (2..12)
                    .map(|n| format!("again {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )],
        );
    }

    use fleet_registry::records::MovesRecord;
}
