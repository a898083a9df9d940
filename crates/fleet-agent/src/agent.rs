//! The agent: makes this machine's init system match what the registry says for it, and
//! reports unit states — a level-triggered reconciler over the agent-scope view (the units
//! placed here, global units, this machine's metadata).
//!
//! Presence and states ride on one machine lease. Its ID is kept in a file so a restarted
//! fleetd adopts the lease of its previous run: nothing disappears, nothing restarts. When the
//! registry is unreachable, units keep running as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::records::{JobRecord, MachineRecord, StateRecord};
use fleet_registry::{renewal_interval, MachineLease, Registry, RegistryError, Scope, Snapshot};
use fleet_unit::{
    JobState, Machine, MachineId, Requirements, SystemdState, UnitFile, UnitHash, UnitName,
};
use tokio::sync::watch;

use crate::manager::UnitManager;
use crate::started::Started;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub machine: MachineId,
    pub record: MachineRecord,
    /// The machine lease's TTL (fleet's agent_ttl); keep-alives go at a third of it.
    pub ttl: Duration,
    /// Where the machine lease's ID is kept across restarts.
    pub lease_file: PathBuf,
    /// Where the units this agent started are remembered across restarts (see `started`).
    pub started_file: Option<PathBuf>,
    /// How often local unit states are compared with what was last published.
    pub state_poll: Duration,
    /// The safety-net full reconcile period.
    pub resync: Duration,
    /// New announcements of this machine (a configuration reload changed its metadata or
    /// address): the agent announces them on the same lease.
    pub updates: Option<watch::Receiver<MachineRecord>>,
}

/// Runs the agent until `shutdown` turns true. Units are left as they are on the way out
/// (fleetd decides whether a shutdown unloads them). `Err` only for what no retry can fix: the
/// machine ID is in use by another live fleetd.
pub async fn run(
    registry: Registry,
    manager: Arc<dyn UnitManager>,
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut agent = Agent {
        registry,
        manager,
        lease: None,
        published: BTreeMap::new(),
        units: BTreeMap::new(),
        started: Started::open(config.started_file.clone()),
        renewed_at: None,
        disconnected: false,
        fenced: BTreeSet::new(),
        config,
    };
    let mut view = loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match agent
            .registry
            .view(Scope::Agent(agent.config.machine.clone()))
            .await
        {
            Ok(view) => break view,
            Err(error) => {
                tracing::warn!(%error, "agent: registry unreachable; retrying");
                pause(&mut shutdown, Duration::from_secs(1)).await;
            }
        }
    };
    let mut keep_alive = tokio::time::interval(renewal_interval(agent.config.ttl));
    // A manager that tells of state changes is only polled as a safety net.
    let mut changes = agent.manager.changes();
    let mut poll = tokio::time::interval(match changes {
        Some(_) => agent.config.resync,
        None => agent.config.state_poll,
    });
    let mut resync = tokio::time::interval(agent.config.resync);
    let mut dirty = true;
    loop {
        if agent.lease.is_none() {
            match agent.register().await {
                Ok(()) => {}
                Err(RegistryError::Conflict(why)) => return Err(why),
                Err(error) => tracing::warn!(%error, "agent: cannot announce this machine"),
            }
        }
        if !agent.fenced.is_empty() && agent.holds_lease() {
            // Back in the registry (or the lease outlived the estimate): what the engine did
            // meanwhile decides whether the stopped units start here again, so the registry is
            // read afresh first (again on the next round if that fails).
            match view.refresh().await {
                Ok(()) => {
                    agent.fenced.clear();
                    dirty = true;
                }
                Err(error) => tracing::warn!(%error, "agent: cannot read the registry"),
            }
        }
        if dirty {
            match agent.reconcile(view.snapshot()).await {
                Ok(()) => dirty = false,
                Err(error) => tracing::warn!(%error, "agent: reconcile failed; retrying"),
            }
        }
        tokio::select! {
            changed = view.changed() => match changed {
                Ok(_) => dirty = true,
                Err(error) => {
                    tracing::warn!(%error, "agent: registry unreachable; units keep running");
                    pause(&mut shutdown, Duration::from_millis(500)).await;
                }
            },
            _ = keep_alive.tick() => {
                agent.keep_alive().await;
                agent.fence_if_disconnected(view.snapshot()).await;
            }
            // Before the lease can run out, not a renewal interval later.
            _ = until(agent.fence_deadline()) => {
                agent.fence_if_disconnected(view.snapshot()).await;
            }
            _ = poll.tick() => agent.publish_or_warn().await,
            Some(()) = next_change(&mut changes) => agent.publish_or_warn().await,
            _ = resync.tick() => dirty = true,
            Some(record) = next_update(&mut agent.config.updates) => {
                tracing::info!("agent: announcing the machine's new configuration");
                agent.config.record = record;
                agent.lease = None;
                dirty = true;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// The next machine record to announce; never resolves without an update channel.
async fn next_update(
    updates: &mut Option<watch::Receiver<MachineRecord>>,
) -> Option<MachineRecord> {
    let Some(receiver) = updates else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => Some(receiver.borrow_and_update().clone()),
        Err(_) => {
            *updates = None;
            None
        }
    }
}

/// The next state change the manager tells of; never resolves for a manager that does not.
async fn next_change(changes: &mut Option<watch::Receiver<()>>) -> Option<()> {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => Some(()),
        Err(_) => {
            *changes = None;
            None
        }
    }
}

/// Sleeps until `deadline`; never resolves without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

async fn pause(shutdown: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

struct Agent {
    registry: Registry,
    manager: Arc<dyn UnitManager>,
    config: AgentConfig,
    lease: Option<MachineLease>,
    /// What was last published per unit, so only changes are written.
    published: BTreeMap<UnitName, StateRecord>,
    /// Unit files by hash (immutable).
    units: BTreeMap<UnitHash, UnitFile>,
    started: Started,
    /// When the last successful renewal was sent: etcd took it later, so the lease lasts at
    /// least until this plus the TTL.
    renewed_at: Option<Instant>,
    /// The lease is known or taken to be lost (until the next renewal or registration).
    disconnected: bool,
    /// `StopWhenDisconnected` units stopped because the lease was lost; not started again
    /// until the machine is registered anew and has read what the engine did meanwhile.
    fenced: BTreeSet<UnitName>,
}

impl Agent {
    /// Announces the machine, adopting the previous run's lease if it is still alive.
    async fn register(&mut self) -> Result<(), RegistryError> {
        let previous = std::fs::read_to_string(&self.config.lease_file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let sent = Instant::now();
        let lease = self
            .registry
            .register_machine(
                &self.config.machine,
                &self.config.record,
                self.config.ttl,
                previous,
            )
            .await?;
        if Some(lease.lease) != previous {
            // A new lease carries no states yet: publish them all again.
            self.published.clear();
        }
        if let Err(error) = std::fs::write(&self.config.lease_file, lease.lease.to_string()) {
            tracing::warn!(%error, path = %self.config.lease_file.display(), "agent: cannot keep the lease ID");
        }
        tracing::info!(machine = %self.config.machine, lease = lease.lease, "agent: machine announced");
        self.lease = Some(lease);
        self.renewed_at = Some(sent);
        self.disconnected = false;
        Ok(())
    }

    /// Renews the lease.
    async fn keep_alive(&mut self) {
        let Some(lease) = &self.lease else {
            return;
        };
        let sent = Instant::now();
        match self.registry.keep_alive(lease).await {
            Ok(true) => {
                self.renewed_at = Some(sent);
                self.disconnected = false;
            }
            Ok(false) => {
                tracing::warn!("agent: the machine lease expired; announcing again");
                self.lease = None;
            }
            Err(error) => tracing::warn!(%error, "agent: keep-alive failed; units keep running"),
        }
    }

    /// The machine holds a lease that is not taken for lost: registered anew, or renewed.
    fn holds_lease(&self) -> bool {
        self.lease.is_some() && !self.disconnected
    }

    /// When `StopWhenDisconnected` units are stopped unless the lease is renewed first: three
    /// renewal intervals (one for a renewal attempt under way, which holds up this loop, one
    /// for the stops, one for a busy machine's late timers) before the earliest moment etcd
    /// can let the lease expire, after which the engine may start them elsewhere. `None` while
    /// there is no lease or it is already taken for lost.
    fn fence_deadline(&self) -> Option<Instant> {
        if !self.holds_lease() {
            return None;
        }
        let ttl = self.config.ttl;
        self.renewed_at
            .map(|at| at + ttl - 3 * renewal_interval(ttl))
    }

    /// Once the lease is about to expire unrenewed (or etcd said it has), the engine may soon
    /// place this machine's units elsewhere: those that asked for it (`StopWhenDisconnected`)
    /// are stopped first, so they never run twice.
    async fn fence_if_disconnected(&mut self, snapshot: &Snapshot) {
        // A fleetd that has not held a lease yet has no evidence either way (it may have been
        // restarted within the TTL of its predecessor's lease).
        let lost = self.renewed_at.is_some()
            && (self.lease.is_none()
                || self.fence_deadline().is_some_and(|at| at <= Instant::now()));
        if !lost {
            return;
        }
        self.disconnected = true;
        if let Some(at) = self.renewed_at {
            tracing::info!(since_renewal = ?at.elapsed(), "agent: the machine lease is taken for lost");
        }
        let me = self.config.machine.clone();
        let fence: Vec<UnitName> = snapshot
            .scheduled_on(&me)
            .filter(|(name, record)| {
                !self.fenced.contains(*name)
                    && self.started.contains(name)
                    && self.units.get(&record.hash).is_some_and(|unit| {
                        Requirements::for_unit(unit, name.as_str()).stops_when_disconnected()
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        // All at once: the time left before the lease can expire is short.
        let manager = &self.manager;
        let stops = fence.iter().map(|name| async move {
            tracing::warn!(unit = %name, "agent: the machine lease is lost; stopping the unit so it does not run twice");
            (name, manager.stop(name).await)
        });
        for (name, stopped) in futures_util::future::join_all(stops).await {
            match stopped {
                Ok(()) => {
                    self.started.remove(name);
                    self.fenced.insert(name.clone());
                }
                Err(error) => tracing::warn!(unit = %name, %error, "agent: stop failed"),
            }
        }
        self.started.save();
    }

    /// Loads, starts, stops and unloads until the machine matches `snapshot`, then publishes
    /// the states. What it started or stopped is recorded once, also when a step failed.
    async fn reconcile(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let applied = self.apply(snapshot).await;
        self.started.save();
        applied?;
        self.publish_states().await.map_err(|e| e.to_string())
    }

    /// A unit is started once when it is wanted launched and stopped once when it no longer
    /// is: what it does in between (fail, exit, get pulled in by another unit) is its init
    /// system's business.
    async fn apply(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let desired = self.desired(snapshot).await?;
        let loaded = self.manager.loaded().await.map_err(|e| e.to_string())?;
        for name in loaded.keys().filter(|n| !desired.contains_key(*n)) {
            tracing::info!(unit = %name, "agent: unloading");
            self.manager.unload(name).await.map_err(|e| e.to_string())?;
            self.started.remove(name);
            self.withdraw(name).await;
        }
        for (name, (record, unit)) in &desired {
            if loaded.get(name) != Some(&record.hash) {
                tracing::info!(unit = %name, "agent: loading");
                if loaded.contains_key(name) {
                    // A new version: the old one stops first.
                    self.manager.stop(name).await.map_err(|e| e.to_string())?;
                }
                // Whatever was remembered of an earlier copy, this one starts anew.
                self.started.remove(name);
                self.manager
                    .load(name, unit)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        for (name, (record, _)) in &desired {
            let started = self.started.contains(name);
            match record.desired {
                JobState::Launched if !started && !self.fenced.contains(name) => {
                    let state = self.manager.state(name).await.map_err(|e| e.to_string())?;
                    // Running already (an earlier fleetd of this boot started it, or systemd
                    // did as a dependency): nothing to do but remember it.
                    if !matches!(state.active.as_str(), "active" | "activating" | "reloading") {
                        tracing::info!(unit = %name, "agent: starting");
                        if let Err(error) = self.manager.start(name).await {
                            tracing::warn!(unit = %name, %error, "agent: start failed");
                            continue;
                        }
                    }
                    self.started.insert(name);
                }
                JobState::Loaded | JobState::Inactive if started => {
                    tracing::info!(unit = %name, "agent: stopping");
                    self.manager.stop(name).await.map_err(|e| e.to_string())?;
                    self.started.remove(name);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The units this machine should have: those placed here, then the global units (in name
    /// order) whose metadata this machine has and that conflict with none of those before them.
    async fn desired(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<BTreeMap<UnitName, (JobRecord, UnitFile)>, String> {
        let me = self.config.machine.clone();
        let placed: Vec<(UnitName, JobRecord)> = snapshot
            .scheduled_on(&me)
            .map(|(name, record)| (name.clone(), record.clone()))
            .collect();
        let mut desired = BTreeMap::new();
        let mut constraints = BTreeMap::new();
        for (name, record) in placed {
            match self.unit(&record.hash).await? {
                Some(unit) => {
                    constraints.insert(
                        name.clone(),
                        Requirements::for_unit(&unit, name.as_str()).constraints(),
                    );
                    desired.insert(name, (record, unit));
                }
                None => {
                    tracing::warn!(unit = %name, hash = %record.hash, "agent: unit file missing")
                }
            }
        }
        let mut metadata = self.config.record.metadata.clone();
        metadata.extend(snapshot.metadata.get(&me).cloned().unwrap_or_default());
        let machine = Machine {
            metadata,
            ..Machine::new(me)
        };
        for (name, record) in &snapshot.global {
            if record.desired == JobState::Inactive {
                continue;
            }
            let Some(unit) = self.unit(&record.hash).await? else {
                continue;
            };
            let own = Requirements::for_unit(&unit, name.as_str()).constraints();
            if !machine.has_metadata(&own.metadata) {
                continue;
            }
            let conflicting = constraints.iter().find(|(other, theirs)| {
                own.conflicts_with(other.as_str()) || theirs.conflicts_with(name.as_str())
            });
            if let Some((other, _)) = conflicting {
                tracing::debug!(unit = %name, conflicts_with = %other, "agent: global unit not run here");
                continue;
            }
            constraints.insert(name.clone(), own);
            desired.insert(name.clone(), (record.clone(), unit));
        }
        Ok(desired)
    }

    async fn unit(&mut self, hash: &UnitHash) -> Result<Option<UnitFile>, String> {
        if let Some(unit) = self.units.get(hash) {
            return Ok(Some(unit.clone()));
        }
        let unit = self
            .registry
            .unit_file(hash)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(unit) = &unit {
            self.units.insert(*hash, unit.clone());
        }
        Ok(unit)
    }

    async fn publish_or_warn(&mut self) {
        if let Err(error) = self.publish_states().await {
            tracing::warn!(%error, "agent: cannot publish unit states");
        }
    }

    /// Writes the states that changed since last published; nothing when nothing changed.
    async fn publish_states(&mut self) -> Result<(), RegistryError> {
        let Some(lease) = self.lease.clone() else {
            return Ok(());
        };
        let loaded = match self.manager.loaded().await {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "agent: cannot list units");
                return Ok(());
            }
        };
        // Every change at once: a machine that starts many units reports them together.
        let mut changes: Vec<(UnitName, Option<StateRecord>)> = Vec::new();
        for (name, hash) in &loaded {
            let Ok(state) = self.manager.state(name).await else {
                continue;
            };
            let record = state_record(&state, *hash, self.started.contains(name));
            if self.published.get(name) != Some(&record) {
                changes.push((name.clone(), Some(record)));
            }
        }
        changes.extend(
            self.published
                .keys()
                .filter(|n| !loaded.contains_key(*n))
                .map(|n| (n.clone(), None)),
        );
        if changes.is_empty() {
            return Ok(());
        }
        match self.registry.set_states(&lease, &changes).await {
            Ok(()) => {}
            Err(RegistryError::LeaseNotFound(_)) => {
                self.lease = None;
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        for (name, record) in changes {
            match record {
                Some(record) => self.published.insert(name, record),
                None => self.published.remove(&name),
            };
        }
        Ok(())
    }

    async fn withdraw(&mut self, name: &UnitName) {
        if let Some(lease) = &self.lease {
            if self.registry.set_state(lease, name, None).await.is_ok() {
                self.published.remove(name);
            }
        }
    }
}

fn state_record(state: &SystemdState, hash: UnitHash, launched: bool) -> StateRecord {
    StateRecord {
        launched,
        hash: Some(hash),
        load: state.load.clone(),
        active: state.active.clone(),
        sub: state.sub.clone(),
    }
}
