//! The key layout (format 1), relative to the backend's key prefix. ARCHITECTURE.md documents
//! it; this module is the only place that builds or parses a key.
//!
//! ```text
//! version                      "1"                       format of everything below
//! registry-id                  random hex                this registry's identity (continuity)
//! units/<hash>                 unit file text            content-addressed, immutable
//! jobs/<name>                  JobRecord                 a non-global unit: what the user wants
//! global/<name>                JobRecord                 a global unit (every matching machine)
//! schedule/<machine>/<name>    JobRecord                 engine: the unit is placed there
//! reasons/<name>               ReasonRecord              engine: why the unit is not placed
//! reschedule/<machine>/<name>  FailureRecord             agent, on the machine lease: it failed here
//! moves/<name>                 MovesRecord               engine: the unit's failures and moves
//! restarts/<machine>/<name>    RestartsRecord            agent, on the machine lease: failures handled there
//! states/<machine>/<name>      StateRecord               agent, on the machine lease
//! machines/<machine>           MachineRecord             agent, on the machine lease
//! metadata/<machine>/<key>     value text                dynamic metadata (API), no lease
//! leader                       LeaderRecord              engine, on the leader lease
//! ```

use fleet_unit::{MachineId, UnitHash, UnitName};

use crate::error::{RegistryError, Result};

pub const VERSION: &str = "version";
/// Written once, when the registry is created: a registry wiped and created again, or another
/// cluster's, has another (see `continuity`).
pub const IDENTITY: &str = "registry-id";
pub const LEADER: &str = "leader";
pub const UNITS: &str = "units/";
pub const JOBS: &str = "jobs/";
pub const GLOBAL: &str = "global/";
pub const SCHEDULE: &str = "schedule/";
pub const REASONS: &str = "reasons/";
pub const RESCHEDULE: &str = "reschedule/";
pub const MOVES: &str = "moves/";
pub const RESTARTS: &str = "restarts/";
pub const STATES: &str = "states/";
pub const MACHINES: &str = "machines/";
pub const METADATA: &str = "metadata/";

/// A parsed registry key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RegistryKey {
    Version,
    Identity,
    Leader,
    Unit(UnitHash),
    Job(UnitName),
    Global(UnitName),
    Schedule(MachineId, UnitName),
    Reason(UnitName),
    /// A machine's report that a unit failed there (to be moved).
    Failure(MachineId, UnitName),
    /// The engine's record of a unit's failures and moves.
    Moves(UnitName),
    /// A machine's record of the unit's failures it handled itself (restarted it there).
    Restarts(MachineId, UnitName),
    State(MachineId, UnitName),
    Machine(MachineId),
    Metadata(MachineId, String),
}

impl RegistryKey {
    pub fn path(&self) -> String {
        match self {
            RegistryKey::Version => VERSION.to_owned(),
            RegistryKey::Identity => IDENTITY.to_owned(),
            RegistryKey::Leader => LEADER.to_owned(),
            RegistryKey::Unit(hash) => format!("{UNITS}{hash}"),
            RegistryKey::Job(name) => format!("{JOBS}{name}"),
            RegistryKey::Global(name) => format!("{GLOBAL}{name}"),
            RegistryKey::Schedule(machine, name) => format!("{}{name}", schedule_of(machine)),
            RegistryKey::Reason(name) => format!("{REASONS}{name}"),
            RegistryKey::Failure(machine, name) => format!("{}{name}", failures_of(machine)),
            RegistryKey::Moves(name) => format!("{MOVES}{name}"),
            RegistryKey::Restarts(machine, name) => format!("{}{name}", restarts_of(machine)),
            RegistryKey::State(machine, name) => format!("{}{name}", states_of(machine)),
            RegistryKey::Machine(machine) => format!("{MACHINES}{machine}"),
            RegistryKey::Metadata(machine, key) => format!("{}{key}", metadata_of(machine)),
        }
    }

    /// Parses a stored key; a key this format does not know is a `Corrupt` error naming it.
    pub fn parse(key: &str) -> Result<RegistryKey> {
        parse(key).map_err(|reason| RegistryError::Corrupt {
            key: key.to_owned(),
            reason,
        })
    }
}

impl std::fmt::Display for RegistryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// Where the units placed on `machine` live: the agent's watch scope.
pub fn schedule_of(machine: &MachineId) -> String {
    format!("{SCHEDULE}{machine}/")
}

/// Where a machine reports the units that failed on it.
pub fn failures_of(machine: &MachineId) -> String {
    format!("{RESCHEDULE}{machine}/")
}

/// Where a machine records the failures it handled itself.
pub fn restarts_of(machine: &MachineId) -> String {
    format!("{RESTARTS}{machine}/")
}

pub fn states_of(machine: &MachineId) -> String {
    format!("{STATES}{machine}/")
}

pub fn metadata_of(machine: &MachineId) -> String {
    format!("{METADATA}{machine}/")
}

/// A dynamic metadata key: non-empty, at most 255 bytes of `[A-Za-z0-9_.-]`, so it can be one
/// key segment and a `MachineMetadata=` name.
pub fn validate_metadata_key(key: &str) -> Result<()> {
    match metadata_key_problem(key) {
        Some(problem) => Err(RegistryError::Invalid(problem)),
        None => Ok(()),
    }
}

fn metadata_key_problem(key: &str) -> Option<String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    (key.is_empty() || key.len() > 255 || !key.chars().all(valid)).then(|| {
        format!("invalid metadata key {key:?}: use 1 to 255 characters from [A-Za-z0-9_.-]")
    })
}

fn two(rest: &str) -> std::result::Result<(&str, &str), String> {
    rest.split_once('/')
        .ok_or_else(|| "expected <machine>/<name>".to_owned())
}

fn parse(key: &str) -> std::result::Result<RegistryKey, String> {
    let name = |s: &str| UnitName::new(s).map_err(|e| e.to_string());
    let machine = |s: &str| MachineId::new(s).map_err(|e| e.to_string());
    if key == VERSION {
        return Ok(RegistryKey::Version);
    }
    if key == LEADER {
        return Ok(RegistryKey::Leader);
    }
    if key == IDENTITY {
        return Ok(RegistryKey::Identity);
    }
    let Some((collection, rest)) = key.split_once('/') else {
        return Err("not a key of registry format 1".into());
    };
    match collection {
        "units" => rest
            .parse()
            .map(RegistryKey::Unit)
            .map_err(|e: fleet_unit::hash::InvalidHash| e.to_string()),
        "jobs" => Ok(RegistryKey::Job(name(rest)?)),
        "global" => Ok(RegistryKey::Global(name(rest)?)),
        "reasons" => Ok(RegistryKey::Reason(name(rest)?)),
        "moves" => Ok(RegistryKey::Moves(name(rest)?)),
        "reschedule" => {
            let (m, n) = two(rest)?;
            Ok(RegistryKey::Failure(machine(m)?, name(n)?))
        }
        "restarts" => {
            let (m, n) = two(rest)?;
            Ok(RegistryKey::Restarts(machine(m)?, name(n)?))
        }
        "machines" => Ok(RegistryKey::Machine(machine(rest)?)),
        "schedule" => {
            let (m, n) = two(rest)?;
            Ok(RegistryKey::Schedule(machine(m)?, name(n)?))
        }
        "states" => {
            let (m, n) = two(rest)?;
            Ok(RegistryKey::State(machine(m)?, name(n)?))
        }
        "metadata" => {
            let (m, k) = two(rest)?;
            if let Some(problem) = metadata_key_problem(k) {
                return Err(problem);
            }
            Ok(RegistryKey::Metadata(machine(m)?, k.to_owned()))
        }
        _ => Err("not a key of registry format 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expected: std::result::Result<&str, &str>) {
        let parsed = RegistryKey::parse(key);
        match (parsed, expected) {
            (Ok(parsed), Ok(debug)) => {
                assert_eq!(format!("{parsed:?}"), debug, "{key}");
                assert_eq!(parsed.path(), key, "round trip");
            }
            (Err(RegistryError::Corrupt { key: named, reason }), Err(why)) => {
                assert_eq!(named, key);
                assert_eq!(reason, why, "{key}");
            }
            (other, _) => panic!("{key}: unexpected {other:?}"),
        }
    }

    #[test]
    fn keys_parse_and_round_trip() {
        let rows: &[(&str, std::result::Result<&str, &str>)] = &[
            ("version", Ok("Version")),
            ("leader", Ok("Leader")),
            ("registry-id", Ok("Identity")),
            ("jobs/web.service", Ok("Job(UnitName(\"web.service\"))")),
            (
                "global/mon.service",
                Ok("Global(UnitName(\"mon.service\"))"),
            ),
            (
                "reasons/a@1.service",
                Ok("Reason(UnitName(\"a@1.service\"))"),
            ),
            ("machines/m1", Ok("Machine(MachineId(\"m1\"))")),
            (
                "reschedule/m1/a.service",
                Ok("Failure(MachineId(\"m1\"), UnitName(\"a.service\"))"),
            ),
            ("moves/a.service", Ok("Moves(UnitName(\"a.service\"))")),
            (
                "restarts/m1/a.service",
                Ok("Restarts(MachineId(\"m1\"), UnitName(\"a.service\"))"),
            ),
            ("restarts/a.service", Err("expected <machine>/<name>")),
            (
                "schedule/m1/a.service",
                Ok("Schedule(MachineId(\"m1\"), UnitName(\"a.service\"))"),
            ),
            (
                "states/m2/b.socket",
                Ok("State(MachineId(\"m2\"), UnitName(\"b.socket\"))"),
            ),
            (
                "metadata/m1/region",
                Ok("Metadata(MachineId(\"m1\"), \"region\")"),
            ),
            ("jobs/web", Err("unit name must contain \".\"")),
            ("schedule/m1", Err("expected <machine>/<name>")),
            (
                "schedule/m 1/a.service",
                Err("invalid machine ID \"m 1\": use 1 to 64 characters from [A-Za-z0-9_-]"),
            ),
            (
                "metadata/m1/a/b",
                Err("invalid metadata key \"a/b\": use 1 to 255 characters from [A-Za-z0-9_.-]"),
            ),
            (
                "units/zz",
                Err("invalid unit hash \"zz\": expected 40 hex digits"),
            ),
            ("other/x", Err("not a key of registry format 1")),
            ("leaderx", Err("not a key of registry format 1")),
        ];
        for (key, expected) in rows {
            check(key, *expected);
        }
    }
}
