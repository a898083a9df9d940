//! The JSON objects of API v1, field for field as fleet 1.0's generated schema wrote them:
//! keys in alphabetical order, empty fields left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitOption {
    pub name: String,
    pub section: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Unit {
    #[serde(
        rename = "currentState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub current_state: String,
    #[serde(
        rename = "desiredState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub desired_state: String,
    #[serde(
        rename = "machineID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<UnitOption>,
    /// Ours, not fleet 1.0's: why the engine cannot place the unit. Present only then, so
    /// fleet 1.0's fleetctl (which ignores unknown fields) and byte comparisons of placeable
    /// units are unaffected.
    #[serde(
        rename = "unplaceableReason",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub unplaceable_reason: String,
    /// Ours: the unit's recent failures and what was done about each, oldest first; absent
    /// when it has had none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<UnitFailure>,
    /// Ours: when it is to be moved after a failure (`rescheduling in 25s`); absent otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rescheduling: String,
    /// Ours: the units its `StartAfter=` names that are not up yet, while it waits to start;
    /// absent otherwise.
    #[serde(rename = "waitingFor", default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
}

/// One failure of a unit: where, when (RFC 3339), what failed, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitFailure {
    #[serde(rename = "machineID")]
    pub machine_id: String,
    pub time: String,
    pub what: String,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitState {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    #[serde(
        rename = "machineID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        rename = "systemdActiveState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_active_state: String,
    #[serde(
        rename = "systemdLoadState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_load_state: String,
    #[serde(
        rename = "systemdSubState",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_sub_state: String,
    /// Why the unit is not where it was sent on its machine (its load or start refused).
    /// Ours; absent when empty, so fleet's clients see fleet's objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What its health checks (`HealthCheck=`) last said: `starting`, `healthy` or
    /// `unhealthy`. Ours; absent for a unit without checks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
    /// What the check round that decided `health` said. Ours; absent when empty.
    #[serde(
        rename = "healthOutput",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub health_output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Machine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(
        rename = "primaryIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitPage {
    #[serde(
        rename = "nextPageToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UnitStatePage {
    #[serde(
        rename = "nextPageToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<UnitState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MachinePage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<Machine>,
    #[serde(
        rename = "nextPageToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
}

impl From<&fleet_unit::UnitOption> for UnitOption {
    fn from(option: &fleet_unit::UnitOption) -> UnitOption {
        UnitOption {
            name: option.name.clone(),
            section: option.section.clone(),
            value: option.value.clone(),
        }
    }
}

impl From<&UnitOption> for fleet_unit::UnitOption {
    fn from(option: &UnitOption) -> fleet_unit::UnitOption {
        fleet_unit::UnitOption::new(&option.section, &option.name, &option.value)
    }
}

/// A unit file's options as the API carries them.
pub fn wire_options(unit: &fleet_unit::UnitFile) -> Vec<UnitOption> {
    unit.options().iter().map(UnitOption::from).collect()
}

impl Unit {
    /// The unit file these options make.
    pub fn unit_file(&self) -> fleet_unit::UnitFile {
        fleet_unit::UnitFile::from_options(self.options.iter().map(Into::into).collect())
    }

    /// Whether its `[X-Fleet]` says `Global=true` (such a unit has no machine and no
    /// currentState: it runs on every eligible machine).
    pub fn is_global(&self) -> bool {
        fleet_unit::Requirements::raw(&self.unit_file()).is_global()
    }
}

/// `{"error":{"code":N,"message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: u16, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// `GET /fleet-rs/v1/journal/<name>` (see [`crate::paths::JOURNAL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    #[serde(rename = "machineID")]
    pub machine_id: String,
    pub lines: Vec<String>,
}

/// `GET /fleet-rs/v1/status/<name>` (see [`crate::paths::STATUS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatusText {
    #[serde(rename = "machineID")]
    pub machine_id: String,
    /// `systemctl status`; null from a machine without systemd.
    pub text: Option<String>,
    #[serde(rename = "exitCode")]
    pub exit_code: i32,
    /// The unit's description as its machine reads it (specifiers resolved), given when
    /// `text` is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One change of `PATCH /fleet/v1/machines`: `{"op":"add|replace|remove",
/// "path":"/<id>/metadata/<key>","value":{"value":"v"}}`. The flat `"value":"v"` that fleet's
/// documentation showed (and its code refused) is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataOp {
    pub op: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl MetadataOp {
    /// `op` (`add` or `replace`) of `key=value` on `machine`, in fleet's wire format (the value
    /// wrapped in an object).
    pub fn set(op: &str, machine: &str, key: &str, value: &str) -> MetadataOp {
        MetadataOp {
            op: op.to_owned(),
            path: format!("/{machine}/metadata/{key}"),
            value: Some(serde_json::json!({ "value": value })),
        }
    }

    pub fn remove(machine: &str, key: &str) -> MetadataOp {
        MetadataOp {
            op: "remove".to_owned(),
            path: format!("/{machine}/metadata/{key}"),
            value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(
        value: &T,
        json: &str,
    ) {
        assert_eq!(serde_json::to_string(value).unwrap(), json);
        assert_eq!(&serde_json::from_str::<T>(json).unwrap(), value);
    }

    #[test]
    fn wire_bytes_as_fleet_wrote_them() {
        check(
            &Unit {
                desired_state: "launched".into(),
                name: "hello.service".into(),
                ..Unit::default()
            },
            r#"{"desiredState":"launched","name":"hello.service"}"#,
        );
        check(
            &Unit {
                current_state: "launched".into(),
                desired_state: "launched".into(),
                machine_id: "3d12".into(),
                name: "a.service".into(),
                options: vec![UnitOption {
                    name: "Description".into(),
                    section: "Unit".into(),
                    value: "Unit a".into(),
                }],
                ..Unit::default()
            },
            r#"{"currentState":"launched","desiredState":"launched","machineID":"3d12","name":"a.service","options":[{"name":"Description","section":"Unit","value":"Unit a"}]}"#,
        );
        check(
            &UnitState {
                hash: "ae87".into(),
                machine_id: "3d12".into(),
                name: "a.service".into(),
                systemd_active_state: "active".into(),
                systemd_load_state: "loaded".into(),
                systemd_sub_state: "running".into(),
                ..UnitState::default()
            },
            r#"{"hash":"ae87","machineID":"3d12","name":"a.service","systemdActiveState":"active","systemdLoadState":"loaded","systemdSubState":"running"}"#,
        );
        check(
            &UnitState {
                name: "a.service".into(),
                systemd_active_state: "active".into(),
                health: "unhealthy".into(),
                health_output: "HTTP/1.1 503 Service Unavailable".into(),
                ..UnitState::default()
            },
            r#"{"name":"a.service","systemdActiveState":"active","health":"unhealthy","healthOutput":"HTTP/1.1 503 Service Unavailable"}"#,
        );
        check(
            &UnitState {
                name: "a.service".into(),
                systemd_active_state: "inactive".into(),
                reason: "Unit nope.service not found.".into(),
                ..UnitState::default()
            },
            r#"{"name":"a.service","systemdActiveState":"inactive","reason":"Unit nope.service not found."}"#,
        );
        check(
            &MachinePage {
                machines: vec![Machine {
                    id: "3d12".into(),
                    metadata: BTreeMap::from([
                        ("region".into(), "us-east".into()),
                        ("disk".into(), "ssd".into()),
                    ]),
                    primary_ip: "127.0.0.1".into(),
                }],
                next_page_token: String::new(),
            },
            r#"{"machines":[{"id":"3d12","metadata":{"disk":"ssd","region":"us-east"},"primaryIP":"127.0.0.1"}]}"#,
        );
        check(&UnitStatePage::default(), "{}");
        check(
            &UnitPage {
                next_page_token: "AgACAA==".into(),
                units: Vec::new(),
            },
            r#"{"nextPageToken":"AgACAA=="}"#,
        );
        check(
            &Unit {
                current_state: "inactive".into(),
                desired_state: "launched".into(),
                name: "mars.service".into(),
                unplaceable_reason: "no machine has region=mars".into(),
                ..Unit::default()
            },
            r#"{"currentState":"inactive","desiredState":"launched","name":"mars.service","unplaceableReason":"no machine has region=mars"}"#,
        );
        check(
            &ErrorBody::new(404, "unit does not exist"),
            r#"{"error":{"code":404,"message":"unit does not exist"}}"#,
        );
    }
}
