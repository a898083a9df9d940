//! This machine's reports of units that failed here, for the engine to move them: a unit
//! placed here (not a global one) and wanted launched that the init system reports failed
//! (its own `Restart=` gave up, or it was killed), or that stays unhealthy past its restart
//! budget (or with `OnUnhealthy=reschedule`). A failure is reported once, stamped with when it
//! was first seen (the engine's delay counts from then), and withdrawn when the unit runs
//! again or leaves the machine.

use std::collections::BTreeMap;

use fleet_registry::records::FailureRecord;
use fleet_unit::{UnitHash, UnitName};

#[derive(Debug, Default)]
pub struct Reports {
    /// What the registry holds of this machine's reports, as far as this agent knows.
    reported: BTreeMap<UnitName, FailureRecord>,
    /// Whether `reported` was read from the registry yet (a restarted fleetd finds the
    /// reports of its previous run on the lease it adopts).
    known: bool,
}

impl Reports {
    /// Takes the reports the registry holds, the first time it is read.
    pub fn adopt(&mut self, existing: Option<&BTreeMap<UnitName, FailureRecord>>) {
        if !self.known {
            self.reported = existing.cloned().unwrap_or_default();
            self.known = true;
        }
    }

    /// A new lease holds no reports yet.
    pub fn lease_changed(&mut self) {
        self.reported.clear();
    }

    /// The writes that make the reports say `failing` (each unit's version and what failed),
    /// a new failure stamped `now_ms`.
    pub fn changes(
        &self,
        failing: &BTreeMap<UnitName, (UnitHash, String)>,
        now_ms: u64,
    ) -> Vec<(UnitName, Option<FailureRecord>)> {
        let mut changes: Vec<(UnitName, Option<FailureRecord>)> = failing
            .iter()
            .filter(|(name, (hash, _))| {
                self.reported
                    .get(*name)
                    .is_none_or(|r| r.hash != Some(*hash))
            })
            .map(|(name, (hash, what))| {
                let record = FailureRecord {
                    hash: Some(*hash),
                    at_ms: now_ms,
                    what: what.clone(),
                };
                (name.clone(), Some(record))
            })
            .collect();
        changes.extend(
            self.reported
                .keys()
                .filter(|name| !failing.contains_key(*name))
                .map(|name| (name.clone(), None)),
        );
        changes
    }

    /// Records that `changes` were written.
    pub fn written(&mut self, changes: Vec<(UnitName, Option<FailureRecord>)>) {
        for (name, record) in changes {
            match record {
                Some(record) => self.reported.insert(name, record),
                None => self.reported.remove(&name),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reports: &mut Reports, failing: &[(&str, &str)], now_ms: u64, expected: &[&str]) {
        let hash = fleet_unit::UnitFile::parse("").unwrap().hash();
        let failing: BTreeMap<UnitName, (UnitHash, String)> = failing
            .iter()
            .map(|(name, what)| (UnitName::new(*name).unwrap(), (hash, what.to_string())))
            .collect();
        let changes = reports.changes(&failing, now_ms);
        let shown: Vec<String> = changes
            .iter()
            .map(|(name, record)| match record {
                Some(r) => format!("{name} {} {}", r.at_ms, r.what),
                None => format!("{name} withdrawn"),
            })
            .collect();
        assert_eq!(shown, expected);
        reports.written(changes);
    }

    #[test]
    fn a_failure_is_reported_once_and_withdrawn_when_it_ends() {
        let mut reports = Reports::default();
        reports.adopt(None);
        check(
            &mut reports,
            &[("a.service", "exited 1")],
            10,
            &["a.service 10 exited 1"],
        );
        // Still failing (even saying otherwise): not written again, its time kept.
        check(&mut reports, &[("a.service", "killed by KILL")], 20, &[]);
        check(
            &mut reports,
            &[("a.service", "exited 1"), ("b.service", "unhealthy")],
            30,
            &["b.service 30 unhealthy"],
        );
        check(
            &mut reports,
            &[("b.service", "unhealthy")],
            40,
            &["a.service withdrawn"],
        );
        // A new lease carries none: written again.
        reports.lease_changed();
        check(
            &mut reports,
            &[("b.service", "unhealthy")],
            50,
            &["b.service 50 unhealthy"],
        );
    }
}
