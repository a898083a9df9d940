//! fleetctl's waits for a unit: every one bounded (`Bound`), polled quickly at first, and
//! ended early by a state the unit cannot leave without a change; what a wait shows as it goes
//! is `progress`'s.

use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use fleet_wire::client::Client;
use fleet_wire::schema::{Unit, UnitState};

use crate::commands::list_units::machine_column;
use crate::commands::progress::Progress;
use crate::Io;

/// The pause between polls once a state is slow to come (fleet's, always).
const POLL: Duration = Duration::from_millis(250);
/// The first pause, doubled after each poll up to `POLL`: a unit usually gets where it is
/// sent within tens of milliseconds, and a flat 250 ms made that a quarter of a second.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// One "block attempt": a window of polls.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Without `--block-attempts`, how long a unit that no machine can take is waited for (fleet
/// waited for ever, in silence).
const PLACEMENT_BOUND: Duration = Duration::from_secs(10);
/// Without `--block-attempts`, how long any other state is waited for.
pub const STATE_BOUND: Duration = Duration::from_secs(300);

/// How long the waits may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// No `--block-attempts`: `PLACEMENT_BOUND` for a placement, `STATE_BOUND` otherwise.
    Default,
    /// `--block-attempts=N`: N windows of `ATTEMPT`; 0 is no limit (fleet's meaning).
    Attempts(u32),
}

impl Bound {
    /// The longest a wait may last, given its default; `None`: no limit.
    pub fn limit(self, default: Duration) -> Option<Duration> {
        match self {
            Bound::Default => Some(default),
            Bound::Attempts(0) => None,
            Bound::Attempts(n) => Some(ATTEMPT.saturating_mul(n)),
        }
    }
}

/// Where a wait for a unit's currentState ended.
pub enum Placement {
    Reached(Unit),
    /// No machine can take it (the engine's reason), for longer than the wait's bound.
    Unplaceable(String),
    /// Its machine's init system refused it (the state says why).
    Refused(UnitState),
    TimedOut,
}

/// Waits until the unit reports `state`, telling once per reason why it cannot be placed.
pub fn wait_placed(
    client: &Client,
    name: &str,
    state: &str,
    bound: Bound,
    io: &mut Io<'_>,
) -> io::Result<Placement> {
    let mut told = String::new();
    let mut waited = String::new();
    let mut unplaceable = Steady::new();
    let mut refused = Steady::new();
    let placement_limit = bound.limit(PLACEMENT_BOUND);
    let mut progress = Progress::new(name, io.terminal);
    let outcome = poll(bound.limit(STATE_BOUND), || {
        let unit = match client.unit(name) {
            Ok(Some(unit)) => unit,
            _ => return None,
        };
        if reached(&unit, state) {
            return Some(Placement::Reached(unit));
        }
        let mut phase = match unit.machine_id.is_empty() {
            true => format!("{}, waiting for a machine", unit.current_state),
            false => format!(
                "{} on {}",
                unit.current_state,
                machine_column(&unit.machine_id, None, false)
            ),
        };
        // Ours: placed, not started before what its `StartAfter=` names is up.
        if !unit.waiting_for.is_empty() {
            let waiting = fleet_unit::requirements::waiting_reason(&unit.waiting_for);
            phase = format!("{phase}, {waiting}");
            if waiting != waited {
                let _ = progress.done(io.err);
                let _ = writeln!(io.err, "Unit {name} is not started yet: {waiting}");
                waited = waiting;
            }
        }
        let _ = progress.at(&phase, io.err);
        if !unit.unplaceable_reason.is_empty() {
            // fleet waited in silence; say why the unit does not move, once per reason.
            if unit.unplaceable_reason != told {
                told = unit.unplaceable_reason.clone();
                let _ = progress.done(io.err);
                let _ = writeln!(io.err, "Unit {name} cannot be placed yet: {told}");
            }
            let held = unplaceable.held(Some(()));
            if placement_limit.is_some_and(|limit| held >= limit) {
                return Some(Placement::Unplaceable(told.clone()));
            }
            return None;
        }
        unplaceable.held(None);
        // Loaded (its machine reported it), not started, inactive with a reason, for a while
        // (not the state of an earlier run): its machine refused the start. Until its machine
        // has reported it there is no state to ask for.
        if unit.current_state == "loaded" && state == "launched" {
            let refusal = match client.state(name) {
                Ok(Some(s)) if s.systemd_active_state == "inactive" && !s.reason.is_empty() => {
                    Some(s)
                }
                _ => None,
            };
            if refused.held(refusal.as_ref().map(|_| ())) >= SETTLED_FOR {
                return refusal.map(Placement::Refused);
            }
        }
        None
    });
    progress.done(io.err)?;
    Ok(outcome.unwrap_or(match told.is_empty() {
        true => Placement::TimedOut,
        false => Placement::Unplaceable(told),
    }))
}

/// Polls until the unit's currentState is `state` (a global unit's desired state: it has no
/// currentState), within the bound.
pub fn wait_for(client: &Client, name: &str, state: &str, bound: Bound) -> Option<Unit> {
    poll(bound.limit(STATE_BOUND), || match client.unit(name) {
        Ok(Some(unit)) if reached(&unit, state) => Some(unit),
        _ => None,
    })
}

/// Whether `unit` shows `state`. A global unit has no currentState: its desired state is all
/// there is to wait for.
fn reached(unit: &Unit, state: &str) -> bool {
    match unit.is_global() {
        true => unit.desired_state == state,
        false => unit.current_state == state,
    }
}

/// How long what a wait sees at each look has stayed the same (a failed state that is not an
/// earlier run's, a count of machines that no longer grows).
struct Steady<T> {
    since: Option<(T, Instant)>,
}

impl<T: PartialEq> Steady<T> {
    fn new() -> Steady<T> {
        Steady { since: None }
    }

    /// What is seen now (`None`: nothing to hold); how long the same has been seen.
    fn held(&mut self, seen: Option<T>) -> Duration {
        self.held_at(seen, Instant::now())
    }

    fn held_at(&mut self, seen: Option<T>, now: Instant) -> Duration {
        let Some(seen) = seen else {
            self.since = None;
            return Duration::ZERO;
        };
        match &self.since {
            Some((last, at)) if *last == seen => now.saturating_duration_since(*at),
            _ => {
                self.since = Some((seen, now));
                Duration::ZERO
            }
        }
    }
}

/// How long a launched unit must stay failed (or ended) before fleetctl stops waiting for it:
/// the state of an earlier run is still reported for a moment after the new start.
const SETTLED_FOR: Duration = Duration::from_secs(2);

pub enum Activation {
    Active,
    /// Inactive for `SETTLED_FOR` after its start: it ran and ended by itself.
    Ended(UnitState),
    /// Failed for `SETTLED_FOR` (fleet waited forever on such a unit).
    Failed(UnitState),
    /// Inactive for `SETTLED_FOR` with a reason: it never ran (its start was refused, a
    /// dependency failed) or was stopped for another unit's sake (`BindsTo=`).
    Refused(UnitState),
    TimedOut,
}

pub fn wait_active(
    client: &Client,
    name: &str,
    bound: Bound,
    progress: &mut Progress,
    err: &mut dyn io::Write,
) -> Activation {
    // How long the unit has shown the same settled state (failed, or inactive).
    let mut settled = Steady::new();
    let outcome = poll(bound.limit(STATE_BOUND), || {
        let s = match client.state(name) {
            Ok(Some(s)) => s,
            _ => {
                settled.held(None);
                return None;
            }
        };
        if s.systemd_active_state == "active" && s.systemd_load_state == "loaded" {
            return Some(Activation::Active);
        }
        let phase = format!(
            "{} ({}) on {}",
            s.systemd_active_state,
            s.systemd_sub_state,
            machine_column(&s.machine_id, None, false)
        );
        let _ = progress.at(&phase, err);
        let active = s.systemd_active_state.as_str();
        let at_rest = matches!(active, "failed" | "inactive").then(|| active.to_owned());
        if settled.held(at_rest) < SETTLED_FOR {
            return None;
        }
        // Settled: failed, never run (its start refused, a dependency failed: the state says
        // why), or ran and ended.
        Some(
            match (s.systemd_active_state.as_str(), s.reason.is_empty()) {
                ("failed", _) => Activation::Failed(s),
                (_, false) => Activation::Refused(s),
                (_, true) => Activation::Ended(s),
            },
        )
    });
    outcome.unwrap_or(Activation::TimedOut)
}

/// Waits until a global unit reports `state` (`launched`: active; `loaded`: loaded) on every
/// machine that reports it, and on as many as have its metadata (when it conflicts with
/// nothing; a conflicting one runs where it wins, so the count is taken once it has held for
/// `SETTLED_FOR`); how many. `None` when no machine reports it within the bound (10 s unless
/// `--block-attempts`).
pub fn wait_global(client: &Client, unit: &Unit, state: &str, bound: Bound) -> Option<usize> {
    let requirements = fleet_unit::Requirements::for_unit(&unit.unit_file(), &unit.name);
    let expected = match requirements.conflicts().is_empty() {
        true => client.machines().ok().map(|machines| {
            let required = requirements.required_metadata();
            machines
                .iter()
                .filter(|m| fleet_unit::machine::metadata_satisfies(&m.metadata, &required))
                .count()
        }),
        false => None,
    };
    let there = |s: &UnitState| match state {
        "launched" => s.systemd_active_state == "active",
        _ => s.systemd_load_state == "loaded",
    };
    let mut steady = Steady::new();
    let mut count = 0;
    poll(bound.limit(PLACEMENT_BOUND), || {
        let states = client.states_of(&unit.name).ok()?;
        count = states.iter().filter(|s| there(s)).count();
        let everywhere = !states.is_empty() && count == states.len();
        if everywhere && expected.is_some_and(|expected| count >= expected) {
            return Some(());
        }
        (steady.held(everywhere.then_some(count)) >= SETTLED_FOR).then_some(())
    });
    (count > 0).then_some(count)
}

/// Polls `check` until it answers, for at most `limit` (`None`: no limit).
pub fn poll<T>(limit: Option<Duration>, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = limit.map(|limit| Instant::now() + limit);
    let mut pause = FIRST_POLL;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return None;
        }
        sleep(pause);
        pause = (pause * 2).min(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks (milliseconds into the wait, what is seen) and how long the last has held.
    fn check(looks: &[(u64, Option<&str>)], held: u64) {
        let mut steady = Steady::new();
        let began = Instant::now();
        let mut last = Duration::ZERO;
        for (at, seen) in looks {
            last = steady.held_at(*seen, began + Duration::from_millis(*at));
        }
        assert_eq!(last, Duration::from_millis(held), "{looks:?}");
    }

    #[test]
    fn what_is_seen_holds_until_it_changes_or_goes() {
        check(&[], 0);
        check(&[(0, Some("failed"))], 0);
        check(&[(0, Some("failed")), (1500, Some("failed"))], 1500);
        check(
            &[
                (0, Some("failed")),
                (1000, Some("inactive")),
                (2500, Some("inactive")),
            ],
            1500,
        );
        check(
            &[(0, Some("failed")), (1000, None), (2000, Some("failed"))],
            0,
        );
        check(
            &[
                (0, Some("failed")),
                (1000, None),
                (2000, Some("failed")),
                (3000, Some("failed")),
            ],
            1000,
        );
    }
}
