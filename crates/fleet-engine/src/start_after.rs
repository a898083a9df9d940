//! `StartAfter=` (ours): a unit wanted launched is placed loaded, not started, until every fleet
//! unit it names is up somewhere in the cluster (active, and healthy where it has checks), and
//! then launched; one already started is left running whatever becomes of them. The engine
//! does not follow unit states (they change most): it reads the states of the named units
//! where the schedule has them, only for units that wait, and looks again every
//! [`RECHECK`] while any does.

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_registry::{Registry, RegistryError, Snapshot};
use fleet_unit::{MachineId, UnitName};

/// How often the engine looks again while a unit waits.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Whether units are up, as read in one pass (each read once).
pub struct Readiness<'a> {
    registry: &'a Registry,
    snapshot: &'a Snapshot,
    placed: &'a BTreeMap<&'a UnitName, Vec<&'a MachineId>>,
    known: BTreeMap<String, bool>,
}

impl<'a> Readiness<'a> {
    pub fn new(
        registry: &'a Registry,
        snapshot: &'a Snapshot,
        placed: &'a BTreeMap<&'a UnitName, Vec<&'a MachineId>>,
    ) -> Readiness<'a> {
        Readiness {
            registry,
            snapshot,
            placed,
            known: BTreeMap::new(),
        }
    }

    /// The fleet units of `names` that are not up anywhere (names of no fleet unit are not
    /// waited for).
    pub async fn waiting_for(&mut self, names: &[String]) -> Result<Vec<String>, RegistryError> {
        let mut waiting = Vec::new();
        for name in names {
            if !self.up(name).await? {
                waiting.push(name.clone());
            }
        }
        Ok(waiting)
    }

    async fn up(&mut self, name: &str) -> Result<bool, RegistryError> {
        if let Some(known) = self.known.get(name) {
            return Ok(*known);
        }
        let Ok(unit) = UnitName::new(name) else {
            return Ok(true);
        };
        // Where it may run: its machine; a global unit's, any machine.
        let machines: Vec<&MachineId> = if self.snapshot.jobs.contains_key(&unit) {
            self.placed.get(&unit).cloned().unwrap_or_default()
        } else if self.snapshot.global.contains_key(&unit) {
            self.snapshot.machines.keys().collect()
        } else {
            return Ok(true);
        };
        let mut up = false;
        for machine in machines {
            if self
                .registry
                .unit_state(machine, &unit)
                .await?
                .is_some_and(|state| state.is_up())
            {
                up = true;
                break;
            }
        }
        self.known.insert(name.to_owned(), up);
        Ok(up)
    }
}
