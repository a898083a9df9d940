//! A registry snapshot with its listings in the API's orders and where each unit is placed,
//! each made once per snapshot when first asked for. fleetctl reads a listing a hundred items
//! at a time (fleet's page size), so 10,000 units are a hundred requests against one unchanged
//! snapshot: sorting every unit and state again for each page cost more than the pages
//! themselves, and finding a unit's machine by asking every machine's schedule made a listing
//! of 100,000 units on 5,000 machines take 48 s.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use fleet_registry::Snapshot;
use fleet_unit::{MachineId, UnitName};

pub struct Listed {
    snapshot: Arc<Snapshot>,
    units: OnceLock<Vec<UnitName>>,
    states: OnceLock<Vec<(UnitName, MachineId)>>,
    placed: OnceLock<BTreeMap<UnitName, Vec<MachineId>>>,
}

impl Listed {
    pub fn new(snapshot: impl Into<Arc<Snapshot>>) -> Listed {
        Listed {
            snapshot: snapshot.into(),
            units: OnceLock::new(),
            states: OnceLock::new(),
            placed: OnceLock::new(),
        }
    }

    /// Every unit (jobs and global units), by name.
    pub fn units(&self) -> &[UnitName] {
        self.units.get_or_init(|| {
            let mut names: Vec<UnitName> = self
                .snapshot
                .jobs
                .keys()
                .chain(self.snapshot.global.keys())
                .cloned()
                .collect();
            names.sort();
            names.dedup();
            names
        })
    }

    /// Every reported state, by unit and then machine.
    pub fn states(&self) -> &[(UnitName, MachineId)] {
        self.states.get_or_init(|| {
            let mut states: Vec<(UnitName, MachineId)> = self
                .snapshot
                .states
                .iter()
                .flat_map(|(machine, units)| {
                    units
                        .keys()
                        .map(move |name| (name.clone(), machine.clone()))
                })
                .collect();
            states.sort();
            states
        })
    }

    /// The machines `unit` is placed on: one, unless a broken writer placed it twice.
    pub fn placed_on(&self, unit: &UnitName) -> impl Iterator<Item = &MachineId> {
        let placed = self.placed.get_or_init(|| {
            self.snapshot
                .placed_units()
                .into_iter()
                .map(|(name, machines)| (name.clone(), machines.into_iter().cloned().collect()))
                .collect()
        });
        placed.get(unit).into_iter().flatten()
    }
}

impl Deref for Listed {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_registry::records::{JobRecord, StateRecord};
    use fleet_unit::JobState;

    fn check(
        jobs: &[&str],
        global: &[&str],
        states: &[(&str, &str)],
        units: &[&str],
        ordered: &[(&str, &str)],
    ) {
        let mut snapshot = Snapshot::default();
        let record = JobRecord {
            hash: fleet_unit::UnitFile::parse(b"").unwrap().hash(),
            desired: JobState::Launched,
        };
        for name in jobs {
            snapshot
                .jobs
                .insert(UnitName::new(*name).unwrap(), record.clone());
        }
        for name in global {
            snapshot
                .global
                .insert(UnitName::new(*name).unwrap(), record.clone());
        }
        for (unit, machine) in states {
            snapshot
                .states
                .entry(MachineId::new(*machine).unwrap())
                .or_default()
                .insert(
                    UnitName::new(*unit).unwrap(),
                    StateRecord {
                        hash: None,
                        load: "loaded".into(),
                        active: "active".into(),
                        sub: "running".into(),
                        launched: true,
                        ..StateRecord::default()
                    },
                );
        }
        let listed = Listed::new(snapshot);
        let names: Vec<&str> = listed.units().iter().map(UnitName::as_str).collect();
        assert_eq!(names, units);
        let pairs: Vec<(&str, &str)> = listed
            .states()
            .iter()
            .map(|(u, m)| (u.as_str(), m.as_str()))
            .collect();
        assert_eq!(pairs, ordered);
        for (unit, machine) in listed.states() {
            assert!(listed.state(unit, machine).is_some());
        }
        for name in listed.units() {
            let theirs: Vec<&MachineId> = listed.snapshot.placements(name).collect();
            let ours: Vec<&MachineId> = listed.placed_on(name).collect();
            assert_eq!(ours, theirs, "{name}");
        }
    }

    #[test]
    fn listings_are_in_the_api_order() {
        check(&[], &[], &[], &[], &[]);
        check(
            &["b.service", "a.service"],
            &["c.service", "a.service"],
            &[
                ("b.service", "m2"),
                ("b.service", "m1"),
                ("a.service", "m2"),
            ],
            &["a.service", "b.service", "c.service"],
            &[
                ("a.service", "m2"),
                ("b.service", "m1"),
                ("b.service", "m2"),
            ],
        );
    }
}
