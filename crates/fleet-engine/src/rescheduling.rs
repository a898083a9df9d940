//! Moving units that failed: a pure function of what the machines reported (a unit failed
//! there: `reschedule/<machine>/<name>`), what the engine recorded before (`moves/<name>`), the
//! unit's `Reschedule*=` policy and the time. It says whether the unit leaves its machine now,
//! must wait before it is placed again, which machines to avoid, what to record, and when to
//! look again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fleet_registry::records::{FailureRecord, MoveEntry, MovesRecord};
use fleet_unit::health::{reschedule_delay, ReschedulePolicy};
use fleet_unit::MachineId;

/// What the engine does about one unit's failures in this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// It leaves its machine now, and why.
    pub evict: Option<String>,
    /// Not to be placed yet (the machine it left still has it), and why.
    pub hold: Option<String>,
    /// Machines where it failed lately.
    pub avoid: BTreeSet<MachineId>,
    /// The record of its failures and moves, when this pass changes it.
    pub record: Option<MovesRecord>,
    /// When to look at it again (milliseconds since the epoch): a move not yet due.
    pub wake_at_ms: Option<u64>,
}

/// The unit's situation.
pub struct Failures<'a> {
    /// Where it is placed now.
    pub placed: Option<&'a MachineId>,
    /// The machines reporting it failed there (of the unit's current version).
    pub reports: BTreeMap<&'a MachineId, &'a FailureRecord>,
    pub record: Option<&'a MovesRecord>,
    pub policy: &'a ReschedulePolicy,
    /// The policy's `Reschedule=`, or the cluster's default when it says nothing.
    pub enabled: bool,
    /// Global units are never moved (their agents restart them in place).
    pub global: bool,
    pub now_ms: u64,
}

pub fn verdict(failures: &Failures<'_>) -> Verdict {
    let record = failures.record.cloned().unwrap_or_default();
    let mut verdict = Verdict {
        avoid: record
            .history
            .iter()
            .filter_map(|e| MachineId::new(&e.machine).ok())
            .collect(),
        ..Verdict::default()
    };
    if failures.global {
        return verdict;
    }
    let here = failures
        .placed
        .and_then(|m| failures.reports.get(m).map(|r| (m, *r)));
    let Some((machine, report)) = here else {
        // Not placed, or placed where it runs: while a machine it left still reports it, it
        // is not placed again (it would run twice).
        if failures.placed.is_none() {
            if let Some(machine) = failures.reports.keys().next() {
                verdict.hold = Some(format!("failed on {machine}; waiting for it to stop there"));
            }
        }
        return verdict;
    };
    let told = |action: &str| {
        record.history.last().is_some_and(|e| {
            e.at_ms == report.at_ms && e.machine == machine.as_str() && e.action.starts_with(action)
        })
    };
    let entry = |action: String| MoveEntry {
        machine: machine.to_string(),
        at_ms: report.at_ms,
        what: report.what.clone(),
        action,
    };
    if !failures.enabled {
        if !told("left") {
            let entry = entry("left where it failed: Reschedule=no".into());
            verdict.record = Some(record.with(entry, false));
        }
        return verdict;
    }
    let attempts = failures.policy.attempts;
    if attempts > 0 && record.moves >= attempts {
        if !told("left") {
            let action = format!("left where it failed: gave up after {attempts} moves (RescheduleAttempts={attempts})");
            verdict.record = Some(record.with(entry(action), false));
        }
        return verdict;
    }
    let delay = reschedule_delay(failures.policy, record.moves);
    let due = report.at_ms.saturating_add(duration_ms(delay));
    if failures.now_ms < due {
        verdict.wake_at_ms = Some(due);
        if record.due_ms != Some(due) {
            verdict.record = Some(MovesRecord {
                due_ms: Some(due),
                ..record
            });
        }
        return verdict;
    }
    verdict.evict = Some(format!("failed on {machine}: {}", report.what));
    verdict.record = Some(record.with(entry(MoveEntry::MOVED_AWAY.into()), true));
    verdict.avoid.insert(machine.clone());
    verdict
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(delay_s: u64, attempts: u32) -> ReschedulePolicy {
        ReschedulePolicy {
            on_failure: None,
            after_restarts: 3,
            delay: Duration::from_secs(delay_s),
            max_delay: Duration::from_secs(3600),
            attempts,
        }
    }

    fn report(at_ms: u64) -> FailureRecord {
        FailureRecord {
            hash: None,
            at_ms,
            what: "exited 1".into(),
        }
    }

    fn moved(machines: &[&str]) -> MovesRecord {
        MovesRecord {
            history: machines
                .iter()
                .map(|m| MoveEntry {
                    machine: m.to_string(),
                    at_ms: 1,
                    what: "exited 1".into(),
                    action: "moved away".into(),
                })
                .collect(),
            moves: machines.len() as u32,
            due_ms: None,
        }
    }

    fn at<'a>(
        placed: Option<&'a MachineId>,
        reports: &[(&'a MachineId, &'a FailureRecord)],
        record: Option<&'a MovesRecord>,
        policy: &'a ReschedulePolicy,
        now_ms: u64,
    ) -> Failures<'a> {
        Failures {
            placed,
            reports: reports.iter().copied().collect(),
            record,
            policy,
            enabled: true,
            global: false,
            now_ms,
        }
    }

    /// The verdict as `evict | hold | avoid | what is recorded | wake`.
    fn check(failures: Failures<'_>, expected: &str) {
        let v = verdict(&failures);
        let got = format!(
            "{} | {} | {} | {} | {}",
            v.evict.as_deref().unwrap_or("-"),
            v.hold.as_deref().unwrap_or("-"),
            v.avoid
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(","),
            match &v.record {
                None => "-".to_owned(),
                Some(MovesRecord {
                    due_ms: Some(due), ..
                }) => format!("due {due}"),
                Some(r) => r
                    .history
                    .last()
                    .map_or("-".to_owned(), |e| format!("{} {}", e.machine, e.action)),
            },
            v.wake_at_ms.map_or("-".to_owned(), |w| w.to_string()),
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn failed_units_move_after_their_delay_and_not_forever() {
        let (m1, m2) = (MachineId::new("m1").unwrap(), MachineId::new("m2").unwrap());
        let failed = report(10_000);
        let (fast, limited) = (policy(30, 0), policy(1, 2));
        let none = moved(&[]);
        let once = moved(&["m2"]);
        let twice = moved(&["m2", "m3"]);
        let rows = vec![
            // Healthy where it is: nothing.
            (at(Some(&m1), &[], None, &fast, 0), "- | - |  | - | -"),
            // Failed, the delay not over: look again when it is.
            (at(Some(&m1), &[(&m1, &failed)], None, &fast, 20_000), "- | - |  | due 40000 | 40000"),
            // Due: it leaves, and m1 is to be avoided.
            (
                at(Some(&m1), &[(&m1, &failed)], Some(&none), &fast, 40_000),
                "failed on m1: exited 1 | - | m1 | m1 moved away | -",
            ),
            // Moved once before: twice the delay.
            (at(Some(&m1), &[(&m1, &failed)], Some(&once), &fast, 40_000), "- | - | m2 | due 70000 | 70000"),
            // Unplaced, and m1 still has it: held.
            (
                at(None, &[(&m1, &failed)], Some(&once), &fast, 90_000),
                "- | failed on m1; waiting for it to stop there | m2 | - | -",
            ),
            // Placed elsewhere meanwhile: the old report holds nothing up.
            (at(Some(&m2), &[(&m1, &failed)], Some(&once), &fast, 90_000), "- | - | m2 | - | -"),
            // Attempts spent: left, said once.
            (
                at(Some(&m1), &[(&m1, &failed)], Some(&twice), &limited, 90_000),
                "- | - | m2,m3 | m1 left where it failed: gave up after 2 moves (RescheduleAttempts=2) | -",
            ),
        ];
        for (failures, expected) in rows {
            check(failures, expected);
        }
        // Reschedule=no: left, recorded once.
        let off = Failures {
            enabled: false,
            ..at(Some(&m1), &[(&m1, &failed)], None, &fast, 90_000)
        };
        let said = verdict(&off).record.expect("recorded");
        assert_eq!(
            said.history[0].action,
            "left where it failed: Reschedule=no"
        );
        let again = Failures {
            record: Some(&said),
            ..off
        };
        assert_eq!(verdict(&again).record, None, "said once");
        // Global units are never moved.
        let global = Failures {
            global: true,
            ..at(Some(&m1), &[(&m1, &failed)], None, &fast, 90_000)
        };
        assert_eq!(verdict(&global).evict, None);
    }
}
