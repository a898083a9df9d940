//! A decoded, consistent picture of (part of) the registry at one revision, kept current by
//! applying watch events. Reconcilers read it; they never re-read whole collections.

use std::collections::BTreeMap;

use fleet_unit::{MachineId, UnitName};

use crate::error::Result;
use crate::keys::RegistryKey;
use crate::kv::{Event, EventKind, KeyValue, Revision};
use crate::records::{
    decode, decode_text, FailureRecord, JobRecord, LeaderRecord, MachineRecord, MovesRecord,
    ReasonRecord, RestartsRecord, StateRecord,
};

/// Records per machine, then per name.
pub type Nested<K, V> = BTreeMap<MachineId, BTreeMap<K, V>>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Everything up to and including this revision is reflected. (A view that watches
    /// several prefixes, an agent's, gets their events in no common order: its revision stays
    /// that of its last full read.)
    pub revision: Revision,
    pub jobs: BTreeMap<UnitName, JobRecord>,
    pub global: BTreeMap<UnitName, JobRecord>,
    /// Units placed by the engine, per machine.
    pub schedule: Nested<UnitName, JobRecord>,
    pub reasons: BTreeMap<UnitName, ReasonRecord>,
    /// Units that failed, per machine that reports it (to be moved).
    pub failures: Nested<UnitName, FailureRecord>,
    /// The engine's record of each unit's failures and moves.
    pub moves: BTreeMap<UnitName, MovesRecord>,
    /// The failures each machine handled itself, per unit.
    pub restarts: Nested<UnitName, RestartsRecord>,
    /// Unit states reported by each machine's agent.
    pub states: Nested<UnitName, StateRecord>,
    pub machines: BTreeMap<MachineId, MachineRecord>,
    /// Dynamic metadata per machine, as set through the API.
    pub metadata: Nested<String, String>,
    pub leader: Option<LeaderRecord>,
    /// Stored records that could not be decoded, by key, with the reason. They are left out
    /// of the maps above (and logged), so one bad record does not stop a reconciler.
    pub problems: BTreeMap<String, String>,
}

impl Snapshot {
    /// Builds a snapshot from listed key-values at `revision`.
    pub fn from_listing<'a>(
        revision: Revision,
        kvs: impl IntoIterator<Item = &'a KeyValue>,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in kvs {
            snapshot.record(&kv.key, Some(&kv.value));
        }
        snapshot
    }

    /// Applies watched changes; returns the keys they changed (undecodable ones included, as
    /// their raw text, in `problems`). The caller, who knows up to which revision it has seen
    /// every change, moves `revision`.
    pub fn apply(&mut self, events: &[Event]) -> Vec<RegistryKey> {
        let mut changed = Vec::with_capacity(events.len());
        for event in events {
            let value = match event.kind {
                EventKind::Put => Some(event.kv.value.as_slice()),
                EventKind::Delete => None,
            };
            if let Some(key) = self.record(&event.kv.key, value) {
                changed.push(key);
            }
        }
        changed
    }

    /// Puts (or with `None` removes) the record at `key`. A record that does not decode is
    /// noted in `problems` and any earlier good value for the key is dropped.
    fn record(&mut self, key: &str, value: Option<&[u8]>) -> Option<RegistryKey> {
        self.problems.remove(key);
        let parsed = match RegistryKey::parse(key) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.note(key, value, e);
                return None;
            }
        };
        self.remove(&parsed);
        if let Some(value) = value {
            if let Err(e) = self.insert(&parsed, key, value) {
                self.note(key, Some(value), e);
            }
        }
        Some(parsed)
    }

    fn note(&mut self, key: &str, value: Option<&[u8]>, error: crate::RegistryError) {
        if value.is_some() {
            tracing::warn!(key, %error, "ignoring a registry record that cannot be read");
            self.problems.insert(key.to_owned(), error.to_string());
        }
    }

    fn insert(&mut self, parsed: &RegistryKey, key: &str, value: &[u8]) -> Result<()> {
        match parsed.clone() {
            RegistryKey::Job(name) => {
                self.jobs.insert(name, decode(key, value)?);
            }
            RegistryKey::Global(name) => {
                self.global.insert(name, decode(key, value)?);
            }
            RegistryKey::Schedule(machine, name) => {
                let record = decode(key, value)?;
                self.schedule
                    .entry(machine)
                    .or_default()
                    .insert(name, record);
            }
            RegistryKey::Reason(name) => {
                self.reasons.insert(name, decode(key, value)?);
            }
            RegistryKey::Failure(machine, name) => {
                let record = decode(key, value)?;
                self.failures
                    .entry(machine)
                    .or_default()
                    .insert(name, record);
            }
            RegistryKey::Moves(name) => {
                self.moves.insert(name, decode(key, value)?);
            }
            RegistryKey::Restarts(machine, name) => {
                let record = decode(key, value)?;
                self.restarts
                    .entry(machine)
                    .or_default()
                    .insert(name, record);
            }
            RegistryKey::State(machine, name) => {
                let record = decode(key, value)?;
                self.states.entry(machine).or_default().insert(name, record);
            }
            RegistryKey::Machine(machine) => {
                self.machines.insert(machine, decode(key, value)?);
            }
            RegistryKey::Metadata(machine, name) => {
                let text = decode_text(key, value)?;
                self.metadata.entry(machine).or_default().insert(name, text);
            }
            RegistryKey::Leader => self.leader = Some(decode(key, value)?),
            // Unit files are fetched by hash and cached, not held in snapshots; the format
            // version is checked once, when the registry is opened.
            RegistryKey::Unit(_) | RegistryKey::Version | RegistryKey::Identity => {}
        }
        Ok(())
    }

    fn remove(&mut self, parsed: &RegistryKey) {
        match parsed {
            RegistryKey::Job(name) => drop(self.jobs.remove(name)),
            RegistryKey::Global(name) => drop(self.global.remove(name)),
            RegistryKey::Schedule(machine, name) => {
                remove_nested(&mut self.schedule, machine, name)
            }
            RegistryKey::Reason(name) => drop(self.reasons.remove(name)),
            RegistryKey::Failure(machine, name) => remove_nested(&mut self.failures, machine, name),
            RegistryKey::Moves(name) => drop(self.moves.remove(name)),
            RegistryKey::Restarts(machine, name) => {
                remove_nested(&mut self.restarts, machine, name)
            }
            RegistryKey::State(machine, name) => remove_nested(&mut self.states, machine, name),
            RegistryKey::Machine(machine) => drop(self.machines.remove(machine)),
            RegistryKey::Metadata(machine, name) => {
                remove_nested(&mut self.metadata, machine, name)
            }
            RegistryKey::Leader => self.leader = None,
            RegistryKey::Unit(_) | RegistryKey::Version | RegistryKey::Identity => {}
        }
    }

    /// Where each unit is placed: the schedule turned around, for a caller that asks of many
    /// units (asking [`Snapshot::placements`] of each looks at every machine each time).
    pub fn placed_units(&self) -> BTreeMap<&UnitName, Vec<&MachineId>> {
        let mut placed: BTreeMap<&UnitName, Vec<&MachineId>> = BTreeMap::new();
        for (machine, units) in &self.schedule {
            for name in units.keys() {
                placed.entry(name).or_default().push(machine);
            }
        }
        placed
    }

    /// The machines a unit is placed on: one, unless a broken writer placed it twice.
    pub fn placements<'a>(&'a self, name: &'a UnitName) -> impl Iterator<Item = &'a MachineId> {
        self.schedule
            .iter()
            .filter(move |(_, units)| units.contains_key(name))
            .map(|(machine, _)| machine)
    }

    /// What the engine placed on `machine` as `unit`.
    pub fn placed(&self, unit: &UnitName, machine: &MachineId) -> Option<&JobRecord> {
        self.schedule.get(machine)?.get(unit)
    }

    /// The state `machine` reported for `unit`.
    pub fn state(&self, unit: &UnitName, machine: &MachineId) -> Option<&StateRecord> {
        self.states.get(machine)?.get(unit)
    }

    /// The units placed on `machine`.
    pub fn scheduled_on(
        &self,
        machine: &MachineId,
    ) -> impl Iterator<Item = (&UnitName, &JobRecord)> {
        self.schedule.get(machine).into_iter().flatten()
    }

    /// A machine's metadata: its configured values, overridden by dynamic ones.
    pub fn machine_metadata(&self, machine: &MachineId) -> BTreeMap<String, String> {
        let mut metadata = self
            .machines
            .get(machine)
            .map(|m| m.metadata.clone())
            .unwrap_or_default();
        if let Some(dynamic) = self.metadata.get(machine) {
            metadata.extend(dynamic.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        metadata
    }
}

fn remove_nested<K: Ord, V>(map: &mut Nested<K, V>, machine: &MachineId, key: &K) {
    if let Some(inner) = map.get_mut(machine) {
        inner.remove(key);
        if inner.is_empty() {
            map.remove(machine);
        }
    }
}
