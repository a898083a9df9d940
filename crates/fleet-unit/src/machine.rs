//! Machines: identity, address and metadata, and how `[X-Fleet]` constraints are matched
//! against them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The length of the short machine ID shown by fleetctl and accepted by `MachineID=`.
pub const SHORT_ID_LEN: usize = 8;

/// A machine's ID, normally the 32 hex digits of `/etc/machine-id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMachineId(pub String);

impl fmt::Display for InvalidMachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid machine ID {:?}: use 1 to 64 characters from [A-Za-z0-9_-]",
            self.0
        )
    }
}

impl std::error::Error for InvalidMachineId {}

impl MachineId {
    /// IDs become registry keys and file names, so only a safe alphabet is allowed.
    pub fn new(id: impl Into<String>) -> Result<MachineId, InvalidMachineId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(MachineId(id))
        } else {
            Err(InvalidMachineId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(SHORT_ID_LEN)]
    }

    /// Whether `MachineID=<id>` names this machine: the full ID or its short form.
    pub fn matches(&self, id: &str) -> bool {
        self.0 == id || self.short() == id
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for MachineId {
    type Err = InvalidMachineId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MachineId::new(s)
    }
}

/// A machine of the cluster as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: MachineId,
    /// The address users reach it at; empty when unknown (no default route).
    pub public_ip: String,
    pub metadata: BTreeMap<String, String>,
    pub version: String,
}

impl Machine {
    pub fn new(id: MachineId) -> Machine {
        Machine {
            id,
            public_ip: String::new(),
            metadata: BTreeMap::new(),
            version: String::new(),
        }
    }

    /// Whether the machine has, for every required key, one of the allowed values.
    pub fn has_metadata(&self, required: &BTreeMap<String, BTreeSet<String>>) -> bool {
        metadata_satisfies(&self.metadata, required)
    }
}

/// Whether `metadata` has, for every required key, one of the allowed values.
pub fn metadata_satisfies(
    metadata: &BTreeMap<String, String>,
    required: &BTreeMap<String, BTreeSet<String>>,
) -> bool {
    required.iter().all(|(key, allowed)| {
        metadata
            .get(key)
            .is_some_and(|value| allowed.contains(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn metadata_same_key_is_or_different_keys_are_and() {
        let mut machine = Machine::new(MachineId::new("2444264c0a2e4b9d").unwrap());
        machine.metadata.insert("region".into(), "us-east".into());
        machine.metadata.insert("disk".into(), "ssd".into());
        assert!(machine.has_metadata(&required(&[])));
        assert!(machine.has_metadata(&required(&[("region", &["eu", "us-east"])])));
        assert!(machine.has_metadata(&required(&[("region", &["us-east"]), ("disk", &["ssd"])])));
        assert!(!machine.has_metadata(&required(&[("region", &["us-east"]), ("disk", &["hdd"])])));
        assert!(!machine.has_metadata(&required(&[("role", &["web"])])));
    }

    #[test]
    fn ids_match_full_or_short_and_refuse_unsafe_text() {
        let id = MachineId::new("2444264c0a2e4b9d8c5e1f3a7b6d9e01").unwrap();
        assert!(id.matches("2444264c0a2e4b9d8c5e1f3a7b6d9e01"));
        assert!(id.matches("2444264c"));
        assert!(!id.matches("2444264"));
        assert_eq!(id.short(), "2444264c");
        for bad in ["", "../etc", "a/b", "a b", &"x".repeat(65)] {
            assert!(MachineId::new(bad).is_err(), "{bad:?}");
        }
    }
}
