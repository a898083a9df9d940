//! The states of a unit: the job state fleet drives (`inactive`, `loaded`, `launched`) and the
//! systemd-level state an agent reports (load, active, sub).

use std::fmt;
use std::str::FromStr;

use crate::hash::UnitHash;
use crate::machine::MachineId;

/// fleet's job state: the desired state a user sets, and the current state derived from what
/// the machine running the unit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum JobState {
    /// Known to the cluster, not placed on a machine.
    #[default]
    Inactive,
    /// Placed on a machine and loaded into its init system, not started.
    Loaded,
    /// Placed, loaded and started.
    Launched,
}

impl JobState {
    pub const ALL: [JobState; 3] = [JobState::Inactive, JobState::Loaded, JobState::Launched];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Inactive => "inactive",
            JobState::Loaded => "loaded",
            JobState::Launched => "launched",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidJobState(pub String);

impl fmt::Display for InvalidJobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid job state {:?}: expected inactive, loaded or launched",
            self.0
        )
    }
}

impl std::error::Error for InvalidJobState {}

impl FromStr for JobState {
    type Err = InvalidJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| InvalidJobState(s.to_owned()))
    }
}

/// A unit's state in the init system of one machine, exactly as that init system reports it
/// (systemd's LoadState, ActiveState and SubState, e.g. `loaded`/`active`/`running`), and why
/// it is not running where the init system says so (the native supervisor does: `Dependency
/// failed for ...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SystemdState {
    pub load: String,
    pub active: String,
    pub sub: String,
    pub reason: String,
    /// How many times the unit's own `Restart=` restarted it since it was last started
    /// (where the unit manager tells: the native supervisor).
    pub restarts: u32,
}

impl SystemdState {
    pub fn new(load: &str, active: &str, sub: &str) -> SystemdState {
        SystemdState {
            load: load.to_owned(),
            active: active.to_owned(),
            sub: sub.to_owned(),
            reason: String::new(),
            restarts: 0,
        }
    }

    pub fn with_reason(self, reason: &str) -> SystemdState {
        SystemdState {
            reason: reason.to_owned(),
            ..self
        }
    }

    /// What `fleetctl start` waits for.
    pub fn is_running(&self) -> bool {
        self.load == "loaded" && self.active == "active"
    }

    pub fn is_failed(&self) -> bool {
        self.active == "failed"
    }
}

/// What one machine reports about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub name: String,
    pub machine_id: MachineId,
    /// The hash of the unit file the machine has loaded.
    pub hash: Option<UnitHash>,
    pub systemd: SystemdState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_round_trips_and_refuses_others() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        let err = "bogus".parse::<JobState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid job state \"bogus\": expected inactive, loaded or launched"
        );
        assert!("Launched".parse::<JobState>().is_err());
    }
}
