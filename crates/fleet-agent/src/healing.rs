//! What the agent does about a unit its checks found unhealthy, by its `OnUnhealthy=`:
//! `restart` restarts it where it is, at most `RescheduleAfterRestarts=` times within
//! [`RESTART_WINDOW`] (the local restart budget; past it the unit is left as it is, with the
//! reason, for the engine to move), `none` and `reschedule` leave it to be reported. Pure
//! bookkeeping: the agent issues the restarts.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use fleet_unit::health::{OnUnhealthy, RESTART_WINDOW};
use fleet_unit::UnitName;

/// What to do now about one unhealthy unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    Restart,
    /// Nothing (any more) here, and why: the reason published with its state; and whether
    /// the engine is to move it.
    Leave {
        why: String,
        move_it: bool,
    },
}

/// Restarts of each unit within [`RESTART_WINDOW`], against a budget: the local restart
/// budget of unhealthy units, and of units found stopped outside fleet.
#[derive(Debug, Default)]
pub struct RestartBudget {
    restarts: BTreeMap<UnitName, VecDeque<Instant>>,
}

impl RestartBudget {
    /// Counts a restart of `name` now, unless `budget` restarts were made within the window
    /// already: then how many were.
    pub fn spend(&mut self, name: &UnitName, budget: u32, now: Instant) -> Result<(), usize> {
        let restarts = self.restarts.entry(name.clone()).or_default();
        while restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) >= RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        if restarts.len() >= budget as usize {
            return Err(restarts.len());
        }
        restarts.push_back(now);
        Ok(())
    }

    /// Forgets the units `keep` does not keep (no longer loaded here).
    pub fn retain(&mut self, keep: impl Fn(&UnitName) -> bool) {
        self.restarts.retain(|name, _| keep(name));
    }
}

#[derive(Debug, Default)]
pub struct Healing {
    /// When each unit was restarted for its health, within the window.
    restarts: RestartBudget,
}

impl Healing {
    /// The remedy for `name`, unhealthy now, by its policy; a restart is counted.
    pub fn remedy(
        &mut self,
        name: &UnitName,
        on_unhealthy: OnUnhealthy,
        budget: u32,
        now: Instant,
    ) -> Remedy {
        match on_unhealthy {
            OnUnhealthy::Nothing => {
                return Remedy::Leave {
                    why: "unhealthy; OnUnhealthy=none: only reported".into(),
                    move_it: false,
                }
            }
            OnUnhealthy::Reschedule => {
                return Remedy::Leave {
                    why: "unhealthy; OnUnhealthy=reschedule: to be moved".into(),
                    move_it: true,
                }
            }
            OnUnhealthy::Restart => {}
        }
        match self.restarts.spend(name, budget, now) {
            Ok(()) => Remedy::Restart,
            Err(spent) => Remedy::Leave {
                why: format!(
                    "unhealthy after {spent} restarts within {} minutes (RescheduleAfterRestarts={budget})",
                    RESTART_WINDOW.as_secs() / 60
                ),
                move_it: true,
            },
        }
    }

    /// Forgets the units `keep` does not keep (no longer loaded here).
    pub fn retain(&mut self, keep: impl Fn(&UnitName) -> bool) {
        self.restarts.retain(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(healing: &mut Healing, policy: OnUnhealthy, budget: u32, at: Instant, expected: &str) {
        let name = UnitName::new("web.service").unwrap();
        let got = match healing.remedy(&name, policy, budget, at) {
            Remedy::Restart => "restart".to_owned(),
            Remedy::Leave { why, move_it } => {
                format!("{why}{}", if move_it { " (move)" } else { "" })
            }
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn restarts_are_budgeted_within_the_window() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut healing = Healing::default();
        let spent =
            "unhealthy after 2 restarts within 10 minutes (RescheduleAfterRestarts=2) (move)";
        let rows = [
            (OnUnhealthy::Restart, 2, start, "restart"),
            (OnUnhealthy::Restart, 2, start + minute, "restart"),
            (OnUnhealthy::Restart, 2, start + 2 * minute, spent),
            (OnUnhealthy::Restart, 2, start + 9 * minute, spent),
            // The first restart leaves the window: one more is allowed.
            (OnUnhealthy::Restart, 2, start + 10 * minute, "restart"),
            (
                OnUnhealthy::Nothing,
                2,
                start,
                "unhealthy; OnUnhealthy=none: only reported",
            ),
            (
                OnUnhealthy::Reschedule,
                2,
                start,
                "unhealthy; OnUnhealthy=reschedule: to be moved (move)",
            ),
        ];
        for (policy, budget, at, expected) in rows {
            check(&mut healing, policy, budget, at, expected);
        }
        // Forgotten once it is no longer here: its budget starts anew.
        healing.retain(|_| false);
        check(
            &mut healing,
            OnUnhealthy::Restart,
            2,
            start + 11 * minute,
            "restart",
        );
    }
}

/// Failed global units, restarted where they are (they are never moved): after
/// `RescheduleDelay=` doubled per restart, at most `RescheduleAttempts=` times.
#[derive(Debug, Default)]
pub struct GlobalRestarts {
    /// Since when each failed global unit has been failed.
    failing: BTreeMap<UnitName, Instant>,
    /// Restarts of each for its failures, while it is here.
    restarts: BTreeMap<UnitName, u32>,
}

/// What to do now about a failed global unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRemedy {
    Restart,
    /// Not yet: look again then.
    At(Instant),
    /// No more restarts, and why.
    Leave(String),
}

impl GlobalRestarts {
    /// The remedy for `name`, failed now, by its policy; a restart is counted.
    pub fn failed(
        &mut self,
        name: &UnitName,
        policy: &fleet_unit::health::ReschedulePolicy,
        now: Instant,
    ) -> GlobalRemedy {
        let restarts = self.restarts.get(name).copied().unwrap_or(0);
        if policy.attempts > 0 && restarts >= policy.attempts {
            return GlobalRemedy::Leave(format!(
                "failed; restarted {restarts} times (RescheduleAttempts={})",
                policy.attempts
            ));
        }
        let since = *self.failing.entry(name.clone()).or_insert(now);
        let due = since + fleet_unit::health::reschedule_delay(policy, restarts);
        if now < due {
            return GlobalRemedy::At(due);
        }
        self.failing.remove(name);
        self.restarts.insert(name.clone(), restarts + 1);
        GlobalRemedy::Restart
    }

    /// `name` is not failed (any more).
    pub fn running(&mut self, name: &UnitName) {
        self.failing.remove(name);
    }

    /// Forgets the units `keep` does not keep (no longer here).
    pub fn retain(&mut self, keep: impl Fn(&UnitName) -> bool) {
        self.failing.retain(|name, _| keep(name));
        self.restarts.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod global_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failed_global_units_are_restarted_after_a_doubling_delay_and_not_forever() {
        let policy = fleet_unit::health::ReschedulePolicy {
            on_failure: None,
            after_restarts: 3,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            attempts: 2,
        };
        let name = UnitName::new("mon.service").unwrap();
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut restarts = GlobalRestarts::default();
        let rows = [
            (start, GlobalRemedy::At(start + second)),
            (start + second, GlobalRemedy::Restart),
            // Failed again at once: twice the delay from now.
            (start + second, GlobalRemedy::At(start + 3 * second)),
            (start + 3 * second, GlobalRemedy::Restart),
            (
                start + 10 * second,
                GlobalRemedy::Leave("failed; restarted 2 times (RescheduleAttempts=2)".into()),
            ),
        ];
        for (now, expected) in rows {
            assert_eq!(restarts.failed(&name, &policy, now), expected);
        }
        restarts.retain(|_| false);
        assert_eq!(
            restarts.failed(&name, &policy, start),
            GlobalRemedy::At(start + second)
        );
    }
}

/// The restarts a unit's own `Restart=` made, as the unit manager counts them (since the unit
/// was last started), each stamped when the count was seen to grow: so many within
/// [`RESTART_WINDOW`] make a crash loop.
#[derive(Debug, Default)]
pub struct CrashLoops {
    seen: BTreeMap<UnitName, (u32, VecDeque<Instant>)>,
}

impl CrashLoops {
    /// `name`'s restart count is `restarts` at `now`; its restarts within the window.
    pub fn observe(&mut self, name: &UnitName, restarts: u32, now: Instant) -> usize {
        let (last, at) = self.seen.entry(name.clone()).or_default();
        // A count lower than before: the unit was started anew and its count began again.
        let from = match restarts < *last {
            true => {
                at.clear();
                0
            }
            false => *last,
        };
        at.extend(std::iter::repeat_n(now, (restarts - from) as usize));
        *last = restarts;
        while at
            .front()
            .is_some_and(|seen| now.duration_since(*seen) >= RESTART_WINDOW)
        {
            at.pop_front();
        }
        at.len()
    }

    /// Forgets the units `keep` does not keep.
    pub fn retain(&mut self, keep: impl Fn(&UnitName) -> bool) {
        self.seen.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod crash_loop_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn restarts_count_within_the_window() {
        let name = UnitName::new("loop.service").unwrap();
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut loops = CrashLoops::default();
        let rows = [
            (0, 0, 0),
            (1, 1, 1),
            (3, 2, 3),
            // Ten minutes after the first: it has left the window.
            (3, 11, 2),
            // Counted again from 0: started anew.
            (1, 12, 1),
            (1, 30, 0),
        ];
        for (restarts, at, expected) in rows {
            assert_eq!(
                loops.observe(&name, restarts, start + at * minute),
                expected,
                "{restarts} restarts at minute {at}"
            );
        }
        loops.retain(|_| false);
        assert_eq!(loops.observe(&name, 5, start + 31 * minute), 5);
    }
}
