//! The values stored under each key (format 1): JSON objects, except unit files (their text)
//! and dynamic metadata (the value's text). Readers ignore fields they do not know, so a later
//! format-1 writer may add optional fields; anything else is a new format.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use fleet_unit::{JobState, MachineId, SystemdState, UnitHash};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{RegistryError, Result};

/// The stored format this code reads and writes (the value of the `version` key).
pub const FORMAT: &str = "1";

/// What a unit should be: under `jobs/` and `global/` as the user asked, under `schedule/` as
/// the engine passed it on to one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(with = "text")]
    pub hash: UnitHash,
    #[serde(with = "text")]
    pub desired: JobState,
}

/// Why the engine cannot place a unit, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonRecord {
    pub reason: String,
    /// Ours: a placed unit not started yet, for the units its `StartAfter=` names that are
    /// not up yet (the reason says so too); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// A unit's state as the agent of its machine last saw it in the init system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateRecord {
    #[serde(with = "optional_text", default)]
    pub hash: Option<UnitHash>,
    pub load: String,
    pub active: String,
    pub sub: String,
    /// The agent started the unit and has not stopped it since (fleet's job-state heartbeat):
    /// the unit's currentState is launched whatever became of it (failed, exited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub launched: bool,
    /// Why the unit is not where the agent was told to take it: the init system refused to
    /// load it, or to start it (`Unit nope.service not found.`). Ours; absent when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What the unit's health checks last said (`HealthCheck=`). Ours; absent for a unit
    /// without checks. Written only when it changes, as every state is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRecord>,
}

/// A machine's report that a unit failed there and should be moved: which version, since
/// when (milliseconds since the epoch), and what failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    #[serde(with = "optional_text", default)]
    pub hash: Option<UnitHash>,
    pub at_ms: u64,
    pub what: String,
}

/// Now, in milliseconds since the epoch: the clock failure reports and moves are stamped with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The engine's record of a unit's recent failures and what it did about each, newest last
/// (at most [`MovesRecord::KEPT`]), and how many times it has moved the unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MovesRecord {
    #[serde(default)]
    pub history: Vec<MoveEntry>,
    #[serde(default)]
    pub moves: u32,
    /// When the failure it is waiting on is due to be acted on (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
}

impl MovesRecord {
    pub const KEPT: usize = 10;

    /// The record with `entry` added (the oldest dropped past [`MovesRecord::KEPT`]).
    pub fn with(&self, entry: MoveEntry, moved: bool) -> MovesRecord {
        let mut history = self.history.clone();
        history.push(entry);
        if history.len() > Self::KEPT {
            history.drain(..history.len() - Self::KEPT);
        }
        MovesRecord {
            history,
            moves: self.moves + u32::from(moved),
            due_ms: None,
        }
    }
}

/// One failure and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveEntry {
    pub machine: String,
    pub at_ms: u64,
    pub what: String,
    /// [`MoveEntry::MOVED_AWAY`], then `moved to M` once placed; `restarted in place`, `left
    /// where it failed: ...`, ...
    pub action: String,
}

impl MoveEntry {
    /// The action of a move whose unit is not placed again yet.
    pub const MOVED_AWAY: &'static str = "moved away";

    /// Whether the unit was moved for this failure.
    pub fn is_move(&self) -> bool {
        self.action == Self::MOVED_AWAY || self.action.starts_with("moved to ")
    }
}

impl MovesRecord {
    /// The record once the unit moved away is placed on `machine`; `None` when its last move
    /// is told already.
    pub fn landed(&self, machine: &MachineId) -> Option<MovesRecord> {
        let last = self.history.last()?;
        if last.action != MoveEntry::MOVED_AWAY {
            return None;
        }
        let mut record = self.clone();
        if let Some(entry) = record.history.last_mut() {
            entry.action = format!("moved to {machine}");
        }
        Some(record)
    }
}

/// A machine's record of a unit's failures it handled itself (a health restart, a unit
/// found stopped or gone and started again, a failed global unit restarted), newest last (at
/// most [`MovesRecord::KEPT`]): the rest of the unit's history, beside the engine's moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RestartsRecord {
    #[serde(default)]
    pub history: Vec<MoveEntry>,
}

impl RestartsRecord {
    /// The record with `entry` added (the oldest dropped past [`MovesRecord::KEPT`]).
    pub fn with(&self, entry: MoveEntry) -> RestartsRecord {
        let mut history = self.history.clone();
        history.push(entry);
        if history.len() > MovesRecord::KEPT {
            history.drain(..history.len() - MovesRecord::KEPT);
        }
        RestartsRecord { history }
    }
}

/// A unit's health as its machine's checks found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HealthRecord {
    /// `starting`, `healthy` or `unhealthy`.
    pub state: String,
    /// What the round that decided it said (a status line, an error, a command's output).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

impl StateRecord {
    pub fn systemd(&self) -> SystemdState {
        SystemdState::new(&self.load, &self.active, &self.sub)
    }

    /// What `StartAfter=` waits for: active, and healthy where its checks say.
    pub fn is_up(&self) -> bool {
        self.active == "active" && self.health.as_ref().is_none_or(|h| h.state == "healthy")
    }
}

/// A machine's presence: what its fleetd announces while it is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MachineRecord {
    #[serde(default)]
    pub public_ip: String,
    /// Metadata from the machine's configuration (dynamic metadata lives under `metadata/`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
    /// What this fleetd can do (`systemd`, `native`, ...), so newer engines can place work
    /// only where it can run.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    #[serde(with = "text")]
    pub machine: MachineId,
    #[serde(default)]
    pub version: String,
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize: plain fields, string keys")
}

/// Decodes the record stored at `key`; a value that is not one is `Corrupt`, naming the key.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| RegistryError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A value stored as text: UTF-8 or `Corrupt`.
pub fn decode_text(key: &str, value: &[u8]) -> Result<String> {
    String::from_utf8(value.to_vec()).map_err(|_| RegistryError::Corrupt {
        key: key.to_owned(),
        reason: "value is not UTF-8 text".into(),
    })
}

/// Fields stored as their `Display` text and read back with `FromStr`.
mod text {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod optional_text {
    use super::*;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.collect_str(value),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: DeserializeOwned + Serialize + std::fmt::Debug + PartialEq>(
        stored: &str,
        expected: std::result::Result<T, &str>,
    ) {
        let decoded = decode::<T>("k", stored.as_bytes());
        match (decoded, expected) {
            (Ok(record), Ok(expected)) => {
                assert_eq!(record, expected);
                let again: T = decode("k", &encode(&record)).unwrap();
                assert_eq!(again, record, "round trip");
            }
            (Err(RegistryError::Corrupt { key, reason }), Err(why)) => {
                assert_eq!(key, "k");
                assert!(
                    reason.starts_with(why),
                    "{reason:?} should start with {why:?}"
                );
            }
            (other, _) => panic!("{stored}: unexpected {other:?}"),
        }
    }

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn job_records() {
        let job = JobRecord {
            hash: HASH.parse().unwrap(),
            desired: JobState::Launched,
        };
        check(
            &format!(r#"{{"hash":"{HASH}","desired":"launched"}}"#),
            Ok(job.clone()),
        );
        check(
            &format!(r#"{{"hash":"{HASH}","desired":"launched","later":1}}"#),
            Ok(job),
        );
        check::<JobRecord>(
            &format!(r#"{{"hash":"{HASH}","desired":"running"}}"#),
            Err("invalid job state \"running\""),
        );
        check::<JobRecord>(r#"{"desired":"loaded"}"#, Err("missing field `hash`"));
        check::<JobRecord>("not json", Err("expected ident"));
    }

    #[test]
    fn state_and_machine_records() {
        let state = StateRecord {
            hash: None,
            load: "loaded".into(),
            active: "active".into(),
            sub: "running".into(),
            launched: false,
            ..StateRecord::default()
        };
        check(
            r#"{"load":"loaded","active":"active","sub":"running"}"#,
            Ok(state.clone()),
        );
        check(
            r#"{"load":"loaded","active":"active","sub":"running","health":{"state":"unhealthy","output":"HTTP/1.1 503"}}"#,
            Ok(StateRecord {
                health: Some(HealthRecord {
                    state: "unhealthy".into(),
                    output: "HTTP/1.1 503".into(),
                }),
                ..state.clone()
            }),
        );
        check(
            r#"{"load":"loaded","active":"active","sub":"running","launched":true}"#,
            Ok(StateRecord {
                launched: true,
                ..state.clone()
            }),
        );
        check(
            r#"{"load":"loaded","active":"inactive","sub":"dead","reason":"Unit nope.service not found."}"#,
            Ok(StateRecord {
                active: "inactive".into(),
                sub: "dead".into(),
                reason: "Unit nope.service not found.".into(),
                ..state
            }),
        );
        check(
            r#"{"machine":"m1"}"#,
            Ok(LeaderRecord {
                machine: MachineId::new("m1").unwrap(),
                version: String::new(),
            }),
        );
        check::<LeaderRecord>(r#"{"machine":"m/1"}"#, Err("invalid machine ID \"m/1\""));
        check(r#"{}"#, Ok(MachineRecord::default()));
    }

    #[test]
    fn a_move_says_where_the_unit_went_once_it_is_placed() {
        let entry = |action: &str| MoveEntry {
            machine: "m1".into(),
            at_ms: 1,
            what: "exited 1".into(),
            action: action.into(),
        };
        let m2 = MachineId::new("m2").unwrap();
        let away = MovesRecord::default().with(entry(MoveEntry::MOVED_AWAY), true);
        let landed = away.landed(&m2).expect("told where");
        assert_eq!(landed.history[0].action, "moved to m2");
        assert!(landed.history[0].is_move());
        assert_eq!(landed.moves, 1);
        assert_eq!(landed.landed(&m2), None, "told once");
        let left = away.with(entry("left where it failed: Reschedule=no"), false);
        assert_eq!(left.landed(&m2), None);
        assert!(!left.history[1].is_move());
    }
}
