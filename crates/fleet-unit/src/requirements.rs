//! `[X-Fleet]`: where a unit may run. Parsing of the section into requirements (with quoted
//! multi-values, legacy names and the `%n %N %p %i` specifiers), the placement constraints the
//! scheduler uses, and the API's validation of impossible combinations.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::glob::glob_match;
use crate::go_quote::quote_str;
use crate::name::NameInfo;
use crate::unit_file::{split_multivalue, UnitFile};

pub const XFLEET_SECTION: &str = "X-Fleet";

pub const MACHINE_ID: &str = "MachineID";
pub const MACHINE_OF: &str = "MachineOf";
pub const MACHINE_METADATA: &str = "MachineMetadata";
pub const CONFLICTS: &str = "Conflicts";
pub const GLOBAL: &str = "Global";
pub const REPLACES: &str = "Replaces";
/// Ours, not fleet's (fleet 1.0's fleetctl warns about it and submits the unit all the same):
/// the unit is stopped on a machine that has lost its lease, so that it never runs on two.
pub const STOP_WHEN_DISCONNECTED: &str = "StopWhenDisconnected";
/// Ours: units that must be active somewhere in the cluster (and healthy, where checked)
/// before this one starts, wherever it is placed.
pub const START_AFTER: &str = "StartAfter";
pub const LEGACY_MACHINE_ID: &str = "X-ConditionMachineID";
pub const LEGACY_MACHINE_BOOT_ID: &str = "X-ConditionMachineBootID";
pub const LEGACY_MACHINE_OF: &str = "X-ConditionMachineOf";
pub const LEGACY_MACHINE_METADATA: &str = "X-ConditionMachineMetadata";
pub const LEGACY_CONFLICTS: &str = "X-Conflicts";

const KNOWN_KEYS: &[&str] = &[
    MACHINE_ID,
    MACHINE_OF,
    MACHINE_METADATA,
    CONFLICTS,
    GLOBAL,
    REPLACES,
    STOP_WHEN_DISCONNECTED,
    START_AFTER,
    LEGACY_MACHINE_ID,
    LEGACY_MACHINE_BOOT_ID,
    LEGACY_MACHINE_OF,
    LEGACY_MACHINE_METADATA,
    LEGACY_CONFLICTS,
];

/// The `[X-Fleet]` options of a unit: key -> values, in file order, quoted multi-values split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    values: BTreeMap<String, Vec<String>>,
}

impl Requirements {
    /// The requirements as written, without specifier substitution (what the API validates).
    pub fn raw(unit: &UnitFile) -> Requirements {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for option in unit
            .options()
            .iter()
            .filter(|o| o.section == XFLEET_SECTION)
        {
            values
                .entry(option.name.clone())
                .or_default()
                .extend(split_multivalue(&option.value));
        }
        Requirements { values }
    }

    /// The requirements of `unit` submitted under the name `name`, with `%n %N %p %i`
    /// replaced (a name without a dot substitutes nothing).
    pub fn for_unit(unit: &UnitFile, name: &str) -> Requirements {
        let mut requirements = Requirements::raw(unit);
        if let Some(info) = NameInfo::parse(name) {
            for values in requirements.values.values_mut() {
                for value in values.iter_mut() {
                    *value = substitute_specifiers(value, &info);
                }
            }
        }
        requirements
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn as_map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.values
    }

    /// Units this one must share a machine with (`X-ConditionMachineOf`, then `MachineOf`).
    pub fn peers(&self) -> Vec<String> {
        let mut peers = self.get(LEGACY_MACHINE_OF).to_vec();
        peers.extend_from_slice(self.get(MACHINE_OF));
        peers
    }

    /// Glob patterns of units this one must not share a machine with (`X-Conflicts`, then
    /// `Conflicts`; each value is split on whitespace).
    pub fn conflicts(&self) -> Vec<String> {
        [LEGACY_CONFLICTS, CONFLICTS]
            .iter()
            .flat_map(|key| self.get(key))
            .flat_map(|value| value.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    /// Glob patterns of units this one takes the place of.
    pub fn replaces(&self) -> Vec<String> {
        self.get(REPLACES).to_vec()
    }

    /// The machine the unit is pinned to: the first `MachineID`, else the first legacy
    /// `X-ConditionMachineID`, else the first `X-ConditionMachineBootID` (compared with machine
    /// IDs, as fleet did). An empty `MachineID=` still pins, to a machine that cannot exist.
    pub fn required_machine(&self) -> Option<&str> {
        [MACHINE_ID, LEGACY_MACHINE_ID, LEGACY_MACHINE_BOOT_ID]
            .iter()
            .find_map(|key| self.values.get(*key).and_then(|v| v.first()))
            .map(String::as_str)
    }

    /// Metadata the machine must have: for every key, one of the allowed values. Pairs that
    /// are not exactly one `key=value` with both sides non-empty are ignored, as in fleet.
    pub fn required_metadata(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut metadata: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for pair in [LEGACY_MACHINE_METADATA, MACHINE_METADATA]
            .iter()
            .flat_map(|key| self.get(key))
        {
            let mut parts = pair.split('=');
            if let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) {
                if !key.is_empty() && !value.is_empty() {
                    metadata
                        .entry(key.to_owned())
                        .or_default()
                        .insert(value.to_owned());
                }
            }
        }
        metadata
    }

    /// `Global=`: the last value decides; true, yes, 1, on and t (any case) mean global.
    pub fn is_global(&self) -> bool {
        self.flag(GLOBAL)
    }

    /// `StopWhenDisconnected=`, read as `Global=` is. A machine that has surely lost its lease
    /// (so the engine may be placing the unit elsewhere) stops such a unit until it is back in
    /// the registry; other units keep running through a partition, as in fleet.
    pub fn stops_when_disconnected(&self) -> bool {
        self.flag(STOP_WHEN_DISCONNECTED)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).last().is_some_and(|v| {
            ["true", "yes", "1", "on", "t"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t))
        })
    }

    /// `StartAfter=`: the units this one starts after, each value split on whitespace.
    pub fn start_after(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for name in self
            .get(START_AFTER)
            .iter()
            .flat_map(|v| v.split_whitespace())
        {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Keys of `[X-Fleet]` that fleet does not know, with fleet's warning text.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.values
            .keys()
            .filter(|k| {
                !KNOWN_KEYS.contains(&k.as_str()) && !crate::health::KEYS.contains(&k.as_str())
            })
            .map(|k| {
                format!(
                    "unrecognized requirement in [X-Fleet] section: {}",
                    quote_str(k)
                )
            })
            .collect()
    }

    /// The placement constraints the scheduler enforces.
    pub fn constraints(&self) -> Constraints {
        Constraints {
            machine_id: self.required_machine().map(str::to_owned),
            peers: self.peers(),
            metadata: self.required_metadata(),
            conflicts: self.conflicts(),
            replaces: self.replaces(),
            global: self.is_global(),
        }
    }
}

/// How a unit placed but not started says what its `StartAfter=` waits for.
pub fn waiting_reason(waiting_for: &[String]) -> String {
    format!(
        "waiting for {} to be up (StartAfter=)",
        waiting_for.join(", ")
    )
}

/// Everything that decides where a unit may be placed, ready for the scheduler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    pub machine_id: Option<String>,
    pub peers: Vec<String>,
    pub metadata: BTreeMap<String, BTreeSet<String>>,
    pub conflicts: Vec<String>,
    pub replaces: Vec<String>,
    pub global: bool,
}

impl Constraints {
    /// Whether this unit's `Conflicts=` patterns match the unit `name` (malformed patterns
    /// match nothing, as in fleet).
    pub fn conflicts_with(&self, name: &str) -> bool {
        self.conflicts
            .iter()
            .any(|pattern| glob_match(pattern, name).unwrap_or(false))
    }

    /// Whether this unit's `Replaces=` patterns match the unit `name`.
    pub fn replaces_unit(&self, name: &str) -> bool {
        self.replaces
            .iter()
            .any(|pattern| glob_match(pattern, name).unwrap_or(false))
    }
}

/// fleet's specifier substitution in `[X-Fleet]`: `%n` full name, `%N` name without suffix,
/// `%p` prefix, `%i` instance, in one left-to-right pass. Nothing else is special, not even
/// `%%` (`%%i` becomes `%` followed by the instance).
pub fn substitute_specifiers(value: &str, info: &NameInfo<'_>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(percent) = rest.find('%') {
        out.push_str(&rest[..percent]);
        let after = &rest[percent + 1..];
        let replacement = match after.chars().next() {
            Some('n') => Some(info.full),
            Some('N') => Some(info.name),
            Some('p') => Some(info.prefix),
            Some('i') => Some(info.instance),
            _ => None,
        };
        match replacement {
            Some(text) => {
                out.push_str(text);
                rest = &after[1..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why a unit's `[X-Fleet]` requirements can never be met. `Display` gives fleet's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequirementsError {
    PeerMatchesConflict {
        peer: String,
        conflict: String,
    },
    PeerMatchesReplace {
        peer: String,
        replace: String,
    },
    MachineIdWithPeers,
    MachineIdWithConflicts,
    MachineIdWithGlobal,
    MachineIdWithReplaces,
    GlobalWithPeers,
    GlobalWithReplaces,
    ConflictsWithReplaces,
    /// Ours: a self-healing key (`HealthCheck=`, `OnUnhealthy=`, ...) with a value that
    /// cannot be used.
    Health(crate::health::InvalidKey),
}

impl fmt::Display for RequirementsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RequirementsError::*;
        match self {
            PeerMatchesConflict { peer, conflict } => write!(
                f,
                "unresolvable requirements: peer {} matches conflict {}",
                quote_str(peer),
                quote_str(conflict)
            ),
            PeerMatchesReplace { peer, replace } => write!(
                f,
                "unresolvable requirements: peer {} matches replace {}",
                quote_str(peer),
                quote_str(replace)
            ),
            MachineIdWithPeers => f.write_str("MachineID cannot be used with Peers"),
            MachineIdWithConflicts => f.write_str("MachineID cannot be used with Conflicts"),
            MachineIdWithGlobal => f.write_str("MachineID cannot be used with Global"),
            MachineIdWithReplaces => f.write_str("MachineID cannot be used with Replaces"),
            GlobalWithPeers => f.write_str("Global cannot be used with Peers"),
            GlobalWithReplaces => f.write_str("Global cannot be used with Replaces"),
            ConflictsWithReplaces => f.write_str("Conflicts cannot be used with Replaces"),
            Health(invalid) => invalid.fmt(f),
        }
    }
}

impl std::error::Error for RequirementsError {}

/// fleet's API check of `[X-Fleet]` combinations, on the requirements as written (without
/// specifier substitution). Global may be combined with MachineMetadata and Conflicts.
/// Where fleet's answer depended on Go map order, we report the first peer and pattern in
/// file order.
pub fn validate_requirements(unit: &UnitFile) -> Result<(), RequirementsError> {
    use RequirementsError::*;
    crate::health::validate(unit).map_err(Health)?;
    let requirements = Requirements::raw(unit);
    let peers = dedup(requirements.peers());
    let conflicts = dedup(requirements.conflicts());
    let replaces = dedup(requirements.replaces());
    for peer in &peers {
        if let Some(conflict) = first_match(&conflicts, peer) {
            return Err(PeerMatchesConflict {
                peer: peer.clone(),
                conflict,
            });
        }
        if let Some(replace) = first_match(&replaces, peer) {
            return Err(PeerMatchesReplace {
                peer: peer.clone(),
                replace,
            });
        }
    }
    let pinned = requirements.required_machine().is_some();
    let global = requirements.is_global();
    let (has_peers, has_conflicts, has_replaces) = (
        !peers.is_empty(),
        !conflicts.is_empty(),
        !replaces.is_empty(),
    );
    let problem = if pinned && has_peers {
        Some(MachineIdWithPeers)
    } else if pinned && has_conflicts {
        Some(MachineIdWithConflicts)
    } else if pinned && global {
        Some(MachineIdWithGlobal)
    } else if pinned && has_replaces {
        Some(MachineIdWithReplaces)
    } else if global && has_peers {
        Some(GlobalWithPeers)
    } else if global && has_replaces {
        Some(GlobalWithReplaces)
    } else if has_conflicts && has_replaces {
        Some(ConflictsWithReplaces)
    } else {
        None
    };
    problem.map_or(Ok(()), Err)
}

fn dedup(values: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

fn first_match(patterns: &[String], name: &str) -> Option<String> {
    patterns
        .iter()
        .find(|p| glob_match(p, name).unwrap_or(false))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, value: &str, expected: &str) {
        let info = NameInfo::parse(name).unwrap();
        assert_eq!(
            substitute_specifiers(value, &info),
            expected,
            "{value:?} for {name}"
        );
    }

    #[test]
    fn specifiers() {
        check(
            "web@8080.service",
            "%p-db@%i.service",
            "web-db@8080.service",
        );
        check("web@8080.service", "%n|%N", "web@8080.service|web@8080");
        check("web@1.service", "x=%%i", "x=%1");
        check("web@1.service", "%H %m 100%", "%H %m 100%");
        check("plain.service", "%p-%i", "plain-");
    }

    #[test]
    fn stop_when_disconnected_is_read_as_global_is() {
        let flag = |text: &str| {
            let unit = UnitFile::parse(text).unwrap();
            Requirements::raw(&unit).stops_when_disconnected()
        };
        assert!(flag("[X-Fleet]\nStopWhenDisconnected=yes\n"));
        assert!(flag(
            "[X-Fleet]\nStopWhenDisconnected=no\nStopWhenDisconnected=On\n"
        ));
        assert!(!flag(
            "[X-Fleet]\nStopWhenDisconnected=true\nStopWhenDisconnected=0\n"
        ));
        assert!(!flag("[X-Fleet]\nGlobal=true\n"));
        let unknown =
            Requirements::raw(&UnitFile::parse("[X-Fleet]\nStopWhenDisconnected=true\n").unwrap())
                .unknown_keys();
        assert_eq!(unknown, Vec::<String>::new());
    }
}
