//! A unit manager that runs nothing: it records loads, starts and stops and flips states at
//! once. For fast tests of the agent and engine logic (clusters of many machines in one
//! process), in addition to the real managers' own tests, never instead of them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use fleet_unit::{SystemdState, UnitFile, UnitHash, UnitName};

use crate::manager::{ManagerKind, Result, UnitManager};

#[derive(Default)]
pub struct FakeManager {
    units: Mutex<BTreeMap<UnitName, (UnitHash, bool)>>,
    calls: Mutex<Vec<String>>,
}

impl FakeManager {
    /// The units currently active.
    pub fn active(&self) -> Vec<String> {
        let units = self.units.lock().unwrap_or_else(|e| e.into_inner());
        units
            .iter()
            .filter(|(_, (_, active))| *active)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Every call made, in order (`load a.service`, `start a.service`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: String) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    fn with_units<T>(&self, f: impl FnOnce(&mut BTreeMap<UnitName, (UnitHash, bool)>) -> T) -> T {
        f(&mut self.units.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Marks a loaded unit running or not; an unknown one is ignored, as systemd would refuse it.
    fn set_active(&self, name: &UnitName, active: bool) {
        self.with_units(|units| {
            if let Some(unit) = units.get_mut(name) {
                unit.1 = active;
            }
        });
    }
}

#[async_trait]
impl UnitManager for FakeManager {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Native
    }

    async fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<()> {
        self.record(format!("load {name}"));
        self.with_units(|units| units.insert(name.clone(), (unit.hash(), false)));
        Ok(())
    }

    async fn unload(&self, name: &UnitName) -> Result<()> {
        self.record(format!("unload {name}"));
        self.with_units(|units| units.remove(name));
        Ok(())
    }

    async fn start(&self, name: &UnitName) -> Result<()> {
        self.record(format!("start {name}"));
        self.set_active(name, true);
        Ok(())
    }

    async fn stop(&self, name: &UnitName) -> Result<()> {
        self.record(format!("stop {name}"));
        self.set_active(name, false);
        Ok(())
    }

    async fn loaded(&self) -> Result<BTreeMap<UnitName, UnitHash>> {
        Ok(self.with_units(|units| units.iter().map(|(n, (h, _))| (n.clone(), *h)).collect()))
    }

    async fn state(&self, name: &UnitName) -> Result<SystemdState> {
        Ok(self.with_units(|units| match units.get(name) {
            Some((_, true)) => SystemdState::new("loaded", "active", "running"),
            Some((_, false)) => SystemdState::new("loaded", "inactive", "dead"),
            None => SystemdState::new("not-found", "inactive", "dead"),
        }))
    }

    async fn journal(&self, _name: &UnitName, _lines: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn follow(&self, _name: &UnitName) -> Result<tokio::sync::mpsc::Receiver<String>> {
        // Nothing is ever written: a receiver whose sender is gone ends at once.
        Ok(tokio::sync::mpsc::channel(1).1)
    }
}
