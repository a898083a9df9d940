//! fleetctl's waits for a unit: every one bounded (`Bound`), polled quickly at first, and
//! ended early by a state the unit cannot leave without a change; what a wait shows as it goes
//! is `progress`'s.

use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

use fleet_api::client::Client;
use fleet_api::schema::{Unit, UnitState};

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
    let mut unplaceable_since: Option<Instant> = None;
    let mut refused_since: Option<Instant> = None;
    let placement_limit = bound.limit(PLACEMENT_BOUND);
    let mut progress = Progress::new(name, io.terminal);
    let outcome = poll(bound.limit(STATE_BOUND), || {
        let unit = match client.unit(name) {
            Ok(Some(unit)) => unit,
            _ => return None,
        };
        // A global unit has no currentState: its desired state is all there is to wait for.
        let reached = match unit.is_global() {
            true => unit.desired_state == state,
            false => unit.current_state == state,
        };
        if reached {
            return Some(Placement::Reached(unit));
        }
        let phase = match unit.machine_id.is_empty() {
            true => format!("{}, waiting for a machine", unit.current_state),
            false => format!(
                "{} on {}",
                unit.current_state,
                machine_column(&unit.machine_id, None, false)
            ),
        };
        let _ = progress.at(&phase, io.err);
        if !unit.unplaceable_reason.is_empty() {
            // fleet waited in silence; say why the unit does not move, once per reason.
            if unit.unplaceable_reason != told {
                told = unit.unplaceable_reason.clone();
                let _ = progress.done(io.err);
                let _ = writeln!(io.err, "Unit {name} cannot be placed yet: {told}");
            }
            let since = *unplaceable_since.get_or_insert_with(Instant::now);
            if placement_limit.is_some_and(|limit| since.elapsed() >= limit) {
                return Some(Placement::Unplaceable(told.clone()));
            }
            return None;
        }
        unplaceable_since = None;
        // Placed, not started, inactive with a reason, for a while (not the state of an
        // earlier run): its machine refused the start.
        if !unit.machine_id.is_empty() && state == "launched" {
            let refusal = match client.state(name) {
                Ok(Some(s)) if s.systemd_active_state == "inactive" && !s.reason.is_empty() => {
                    Some(s)
                }
                _ => None,
            };
            match refusal {
                Some(s) => {
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= SETTLED_FOR {
                        return Some(Placement::Refused(s));
                    }
                }
                None => refused_since = None,
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
    let reached = |unit: &Unit| match unit.is_global() {
        true => unit.desired_state == state,
        false => unit.current_state == state,
    };
    poll(bound.limit(STATE_BOUND), || match client.unit(name) {
        Ok(Some(unit)) if reached(&unit) => Some(unit),
        _ => None,
    })
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
    // Since when the unit has shown the same settled state (failed, or inactive).
    let mut settled: Option<(String, Instant)> = None;
    let outcome = poll(bound.limit(STATE_BOUND), || {
        let s = match client.state(name) {
            Ok(Some(s)) => s,
            _ => {
                settled = None;
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
        let active = s.systemd_active_state.clone();
        if active != "failed" && active != "inactive" {
            settled = None;
            return None;
        }
        let since = match &settled {
            Some((seen, since)) if *seen == active => *since,
            _ => {
                settled = Some((active.clone(), Instant::now()));
                Instant::now()
            }
        };
        if since.elapsed() < SETTLED_FOR {
            return None;
        }
        // Settled: failed, never run (its start refused, a dependency failed: the state says
        // why), or ran and ended.
        Some(match (active.as_str(), s.reason.is_empty()) {
            ("failed", _) => Activation::Failed(s),
            (_, false) => Activation::Refused(s),
            (_, true) => Activation::Ended(s),
        })
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
    let mut last: Option<(usize, Instant)> = None;
    let mut count = 0;
    poll(bound.limit(PLACEMENT_BOUND), || {
        let states = client.states_of(&unit.name).ok()?;
        count = states.iter().filter(|s| there(s)).count();
        if states.is_empty() || count < states.len() {
            last = None;
            return None;
        }
        if expected.is_some_and(|expected| count >= expected) {
            return Some(());
        }
        match last {
            Some((seen, since)) if seen == count => (since.elapsed() >= SETTLED_FOR).then_some(()),
            _ => {
                last = Some((count, Instant::now()));
                None
            }
        }
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
