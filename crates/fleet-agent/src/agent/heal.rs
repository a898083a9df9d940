//! The agent's part in self-healing: which running units have health checks, restarting the
//! unhealthy ones within their budget, restarting failed global units in place, starting again
//! the units stopped outside fleet, recording what it did, and reporting the units that failed
//! here for the engine to move.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use fleet_registry::records::{now_ms, RestartsRecord};
use fleet_registry::RegistryError;
use fleet_unit::health::{health_policy, reschedule_policy, HealthPolicy, ReschedulePolicy};
use fleet_unit::relations::{related, NEEDS};
use fleet_unit::{Requirements, SystemdState, UnitHash, UnitName};

use super::Agent;
use crate::healing::{GlobalRemedy, Remedy};
use crate::jobs::Work;
use crate::manager::Relations;

/// A unit version's self-healing policies.
pub(super) struct Policies {
    /// `None` without `HealthCheck=`.
    pub health: Option<HealthPolicy>,
    pub reschedule: ReschedulePolicy,
}

impl Agent {
    /// The self-healing policies of a unit's version, read once per version (every state
    /// report looks at every unit's).
    pub(super) fn policy(&mut self, hash: &UnitHash) -> Option<Arc<Policies>> {
        if let Some(known) = self.policies.get(hash) {
            return Some(Arc::clone(known));
        }
        let unit = self.units.get(hash)?;
        // Checked at submit; a unit that slipped past (an older fleetd's) runs unchecked, with
        // the default reschedule policy.
        let known = Arc::new(Policies {
            health: health_policy(unit).ok().flatten(),
            reschedule: reschedule_policy(unit).unwrap_or_default(),
        });
        self.policies.insert(*hash, Arc::clone(&known));
        Some(known)
    }

    /// Has the running units with checks watched, and only those.
    pub(super) fn follow_health(&mut self, loaded: &BTreeMap<UnitName, (UnitHash, SystemdState)>) {
        let mut running = BTreeMap::new();
        for (name, (hash, state)) in loaded {
            if state.active != "active" {
                continue;
            }
            if let Some(health) = self.policy(hash).and_then(|p| p.health.clone()) {
                running.insert(name.clone(), (*hash, health));
            }
        }
        self.unhealthy_left
            .retain(|name, _| running.contains_key(name));
        self.healing.retain(|name| loaded.contains_key(name));
        self.health.follow(running);
        let versions: HashSet<&UnitHash> = loaded.values().map(|(hash, _)| hash).collect();
        self.policies.retain(|hash, _| versions.contains(hash));
    }

    /// Restarts the units that turned unhealthy, as their policy and budget allow.
    pub(super) fn heal(&mut self) {
        let now = Instant::now();
        let unhealthy = self.health.unhealthy();
        // Healthy again (or no longer checked): nothing is left about it any more.
        self.unhealthy_left
            .retain(|name, _| unhealthy.contains(name));
        for name in unhealthy {
            if self.busy.contains_key(&name) || self.unhealthy_left.contains_key(&name) {
                continue;
            }
            let Some(hash) = self.loaded_hash(&name) else {
                continue;
            };
            let Some(policies) = self.policy(&hash) else {
                continue;
            };
            let Some(health) = &policies.health else {
                continue;
            };
            let budget = policies.reschedule.after_restarts;
            match self.healing.remedy(&name, health.on_unhealthy, budget, now) {
                Remedy::Restart => {
                    let disconnect = self
                        .units
                        .get(&hash)
                        .is_some_and(|u| Requirements::raw(u).stops_when_disconnected());
                    let said = self
                        .health
                        .health(&name)
                        .map(|h| h.output)
                        .unwrap_or_default();
                    self.handled(
                        &name,
                        &format!("unhealthy: {said}"),
                        "restarted in place (OnUnhealthy=restart)",
                    );
                    // Its checks begin again, start period included, once it runs again.
                    self.health.forget(&name);
                    self.config
                        .health
                        .restarts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let work = BTreeMap::from([(name, (Work::Restart, disconnect))]);
                    self.issue(work, &BTreeMap::new());
                }
                Remedy::Leave { why, move_it } => {
                    tracing::warn!(unit = %name, why, "agent: unhealthy unit left as it is");
                    self.unhealthy_left.insert(name, (why, move_it));
                }
            }
        }
    }

    /// Restarts the failed global units whose delay is over (they are never moved), and says
    /// when the next one is due.
    pub(super) fn restart_failed_globals(
        &mut self,
        loaded: &BTreeMap<UnitName, (UnitHash, SystemdState)>,
    ) {
        let now = Instant::now();
        self.global_restarts
            .retain(|name| loaded.contains_key(name));
        self.given_up.retain(|name, _| loaded.contains_key(name));
        let mut wake_at: Option<Instant> = None;
        for (name, (hash, state)) in loaded {
            if !self.launched_globals.contains(name) || state.active != "failed" {
                self.global_restarts.running(name);
                continue;
            }
            if self.busy.contains_key(name) || self.given_up.contains_key(name) {
                continue;
            }
            let Some(policies) = self.policy(hash) else {
                continue;
            };
            let policy = &policies.reschedule;
            if !policy
                .on_failure
                .unwrap_or(self.config.reschedule_failed_units)
            {
                continue;
            }
            match self.global_restarts.failed(name, policy, now) {
                GlobalRemedy::Restart => {
                    tracing::warn!(unit = %name, "agent: restarting a failed global unit in place");
                    self.handled(
                        name,
                        &failure(state),
                        "restarted in place (a global unit is never moved)",
                    );
                    let disconnect = self
                        .units
                        .get(hash)
                        .is_some_and(|u| Requirements::raw(u).stops_when_disconnected());
                    let work = BTreeMap::from([(name.clone(), (Work::Restart, disconnect))]);
                    self.issue(work, &BTreeMap::new());
                }
                GlobalRemedy::At(due) => wake_at = Some(wake_at.map_or(due, |w| w.min(due))),
                GlobalRemedy::Leave(why) => {
                    tracing::warn!(unit = %name, why, "agent: a failed global unit is left failed");
                    self.handled(name, &failure(state), &format!("left failed: {why}"));
                    self.given_up.insert(name.clone(), why);
                }
            }
        }
        self.wake_at = wake_at;
    }

    /// Reports the units that failed here (to be moved), and withdraws the reports of those
    /// that no longer have.
    pub(super) async fn report_failures(
        &mut self,
        lease: &fleet_registry::MachineLease,
        loaded: &BTreeMap<UnitName, (UnitHash, SystemdState)>,
    ) -> Result<(), RegistryError> {
        let now = Instant::now();
        self.crash_loops.retain(|name| loaded.contains_key(name));
        let mut failing = BTreeMap::new();
        for (name, (hash, state)) in loaded {
            if !self.launched_here.contains(name) {
                continue;
            }
            // A unit that crashes in a loop (`Restart=always`) never shows failed: its own
            // restarts within the window count against the same budget, while it is down
            // between them (one that restarted now and then and runs is not in a loop).
            let budget = self
                .policy(hash)
                .map_or(3, |policies| policies.reschedule.after_restarts);
            let restarts = self.crash_loops.observe(name, state.restarts, now) as u32;
            let what = match self.unhealthy_left.get(name) {
                Some((why, true)) => {
                    let said = self
                        .health
                        .health(name)
                        .map(|h| h.output)
                        .unwrap_or_default();
                    Some(format!("{why}: {said}"))
                }
                _ if state.active == "failed" => Some(failure(state)),
                _ if restarts >= budget && state.active != "active" => Some(format!(
                    "restarted {restarts} times by its Restart= within 10 minutes (RescheduleAfterRestarts={budget})"
                )),
                _ => None,
            };
            if let Some(what) = what {
                failing.insert(name.clone(), (*hash, what));
            }
        }
        let changes = self.reports.changes(&failing, now_ms());
        if changes.is_empty() {
            return Ok(());
        }
        for (name, record) in &changes {
            match record {
                Some(record) => {
                    tracing::warn!(unit = %name, what = record.what, "agent: reporting a failed unit")
                }
                None => tracing::info!(unit = %name, "agent: failure report withdrawn"),
            }
        }
        match self.registry.set_failures(lease, &changes).await {
            Ok(()) => {
                self.reports.written(changes);
                Ok(())
            }
            Err(RegistryError::LeaseNotFound(_)) => {
                let _ = self.expired.try_send(());
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Starts again the units the agent started and wants launched that it finds inactive
    /// because they were ended outside fleet (stopped by hand, their main process killed), as
    /// far as the local budget allows, and records it; a unit that ended by itself (its main
    /// process exited) is left as it is, as systemd leaves it.
    pub(super) async fn restart_stopped_outside(
        &mut self,
        loaded: &BTreeMap<UnitName, (UnitHash, SystemdState)>,
    ) {
        self.ended_by_itself.retain(|name| {
            loaded
                .get(name)
                .is_some_and(|(_, s)| s.active == "inactive")
        });
        self.outside_stops.retain(|name| loaded.contains_key(name));
        self.last_started
            .retain(|name, _| loaded.contains_key(name));
        let now = Instant::now();
        for (name, (hash, state)) in loaded {
            if state.active == "active" {
                // Running again (started by the user): what was given up on is past.
                self.given_up.remove(name);
            }
            let candidate = state.active == "inactive"
                && self.started.contains(name)
                && self.wanted_launched(name)
                && !self.busy.contains_key(name)
                && !self.fence.is_fenced(name)
                && !self.ended_by_itself.contains(name)
                && !self.collateral.values().any(|taken| taken.contains(name));
            if !candidate {
                continue;
            }
            let relations = self
                .units
                .get(hash)
                .map(|unit| relations(unit, name))
                .unwrap_or_default();
            // Down with a fleet unit it needs: it comes back when that one is started again,
            // as a stop of the agent's own takes its dependents with it.
            let down_with = relations
                .needs
                .iter()
                .filter_map(|need| UnitName::new(need).ok())
                .find(|need| loaded.get(need).is_some_and(|(_, s)| s.active != "active"));
            if let Some(need) = down_with {
                if self.wanted_launched(&need) {
                    tracing::info!(unit = %name, with = %need, "agent: a unit went down with one it needs");
                    self.collateral
                        .entry(need)
                        .or_default()
                        .insert(name.clone());
                }
                continue;
            }
            // What ended before the agent's last start of it is past (a start just queued
            // leaves the unit inactive a moment, its last end still on record).
            let since = self.last_started.get(name).copied().unwrap_or(self.began);
            let Some(what) = self.manager.ended_outside(name, &relations, since).await else {
                self.ended_by_itself.insert(name.clone());
                continue;
            };
            let budget = self
                .policy(hash)
                .map_or(3, |policies| policies.reschedule.after_restarts);
            if let Err(spent) = self.outside_stops.spend(name, budget, now) {
                let why = format!("{what}; left stopped after {spent} restarts within 10 minutes (RescheduleAfterRestarts={budget})");
                tracing::warn!(unit = %name, why, "agent: a unit stopped outside fleet again");
                self.handled(name, &what, "left stopped: stopped outside fleet too often");
                self.ended_by_itself.insert(name.clone());
                self.given_up.insert(name.clone(), why);
                continue;
            }
            tracing::warn!(unit = %name, what, "agent: a unit was ended outside fleet; starting it again");
            self.handled(name, &what, "started again");
            self.started.remove(name);
            let disconnect = self
                .units
                .get(hash)
                .is_some_and(|u| Requirements::raw(u).stops_when_disconnected());
            let work = BTreeMap::from([(name.clone(), (Work::Start, disconnect))]);
            self.issue(work, &BTreeMap::new());
        }
    }

    /// Whether `name` is wanted launched here (placed here, or a global unit this machine
    /// runs).
    pub(super) fn wanted_launched(&self, name: &UnitName) -> bool {
        self.launched_here.contains(name) || self.launched_globals.contains(name)
    }

    /// Records that this machine handled a failure of `name`: `what` failed, `action` was done.
    pub(super) fn handled(&mut self, name: &UnitName, what: &str, action: &str) {
        self.history
            .add(&self.config.machine, name, now_ms(), what, action);
    }

    /// Writes the records of handled failures that changed, and drops those of units no longer
    /// here.
    pub(super) async fn write_history(
        &mut self,
        lease: &fleet_registry::MachineLease,
        loaded: &BTreeMap<UnitName, (UnitHash, SystemdState)>,
    ) -> Result<(), RegistryError> {
        self.history.retain(|name| loaded.contains_key(name));
        let changes: Vec<(UnitName, Option<RestartsRecord>)> = self.history.changes();
        if changes.is_empty() {
            return Ok(());
        }
        match self.registry.set_restarts(lease, &changes).await {
            Ok(()) => {
                self.history.written(&changes);
                Ok(())
            }
            Err(RegistryError::LeaseNotFound(_)) => {
                let _ = self.expired.try_send(());
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The version of `name` last published as loaded here.
    pub(super) fn loaded_hash(&self, name: &UnitName) -> Option<UnitHash> {
        self.published.get(name).and_then(|record| record.hash)
    }
}

/// What failed, in the words of a failed unit's state.
fn failure(state: &SystemdState) -> String {
    match state.reason.is_empty() {
        true => format!("failed ({})", state.sub),
        false => state.reason.clone(),
    }
}

/// The units `unit` needs and conflicts with, as its `[Unit]` section names them.
fn relations(unit: &fleet_unit::UnitFile, name: &UnitName) -> Relations {
    Relations {
        needs: related(unit, name.as_str(), NEEDS),
        conflicts: related(unit, name.as_str(), &["Conflicts"]),
    }
}
