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

use fleet_registry::kv::LeaseId;
use fleet_registry::records::{HealthRecord, JobRecord, MachineRecord, StateRecord};
use fleet_registry::{Pacing, Registry, RegistryError, Scope, Snapshot};
use fleet_unit::{JobState, Machine, MachineId, SystemdState, UnitFile, UnitHash, UnitName};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::error::AgentError;
use crate::fence::{self, Fence};
use crate::healing::{CrashLoops, GlobalRestarts, Healing, RestartBudget};
use crate::health::{HealthCounters, Monitor};
use crate::history::History;
use crate::jobs::{self, Job, Outcome, Work};
use crate::lease::{self, LeaseConfig, LeaseStatus};
use crate::manager::UnitManager;
use crate::order;
use crate::plan;
use crate::reports::Reports;
use crate::started::Started;

mod heal;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub machine: MachineId,
    pub record: MachineRecord,
    /// The machine lease's TTL (fleet's agent_ttl); keep-alives go at an eighth of it.
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
    /// What the health checks do, counted (for the machine's metrics).
    pub health: Arc<HealthCounters>,
    /// Whether a failed unit is healed when its `Reschedule=` says nothing (here: a global
    /// unit restarted in place; the engine moves the others).
    pub reschedule_failed_units: bool,
}

/// Runs the agent until `shutdown` turns true. Units are left as they are on the way out
/// (fleetd decides whether a shutdown unloads them). `Err` only for what no retry can fix: the
/// machine ID is in use by another live fleetd.
///
/// Three tasks: the lease keeper (`lease`), the fence (`fence`) and this loop, which follows
/// the registry, issues jobs (`jobs`) and publishes states. Neither of the first two ever waits
/// for the third.
pub async fn run(
    registry: Registry,
    manager: Arc<dyn UnitManager>,
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (lease_status, lease) = watch::channel(LeaseStatus::default());
    let (expired, expired_receiver) = mpsc::channel(1);
    let mut keeper = tokio::spawn(lease::keep(
        registry.clone(),
        LeaseConfig {
            machine: config.machine.clone(),
            record: config.record.clone(),
            ttl: config.ttl,
            lease_file: config.lease_file.clone(),
            updates: config.updates.clone(),
        },
        lease_status,
        expired_receiver,
        shutdown.clone(),
    ));
    let fence = Arc::new(Fence::default());
    let (fence_stopped, mut fenced) = watch::channel(());
    let guard = tokio::spawn(fence::guard(
        Arc::clone(&fence),
        Arc::clone(&manager),
        lease.clone(),
        fence_stopped,
    ));
    let (health, health_told) = Monitor::new(config.machine.as_str(), Arc::clone(&config.health));
    let result = follow(
        Agent {
            health,
            healing: Healing::default(),
            policies: BTreeMap::new(),
            unhealthy_left: BTreeMap::new(),
            reports: Reports::default(),
            launched_here: BTreeSet::new(),
            global_restarts: GlobalRestarts::default(),
            crash_loops: CrashLoops::default(),
            launched_globals: BTreeSet::new(),
            given_up: BTreeMap::new(),
            wake_at: None,
            history: History::default(),
            outside_stops: RestartBudget::default(),
            ended_by_itself: BTreeSet::new(),
            last_started: BTreeMap::new(),
            began: Instant::now(),
            registry,
            manager,
            lease: lease.clone(),
            expired,
            published: BTreeMap::new(),
            published_on: None,
            units: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            load_errors: BTreeMap::new(),
            refused_starts: BTreeMap::new(),
            collateral: BTreeMap::new(),
            started: Started::open(config.started_file.clone()),
            fence,
            jobs: JoinSet::new(),
            busy: BTreeMap::new(),
            permits: Arc::new(Semaphore::new(jobs::CONCURRENT)),
            config,
        },
        lease,
        &mut fenced,
        health_told,
        &mut keeper,
        &mut shutdown,
    )
    .await;
    guard.abort();
    if !keeper.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut keeper).await;
        keeper.abort();
    }
    result
}

/// The agent's own loop, until shutdown (or the lease keeper gives up for good).
async fn follow(
    mut agent: Agent,
    mut lease: watch::Receiver<LeaseStatus>,
    fenced: &mut watch::Receiver<()>,
    mut health_told: watch::Receiver<()>,
    keeper: &mut tokio::task::JoinHandle<Result<(), AgentError>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let view = loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match agent
            .registry
            .reflect(Scope::Agent(agent.config.machine.clone()))
            .await
        {
            Ok(view) => break view,
            Err(error) => {
                tracing::warn!(%error, "agent: registry unreachable; retrying");
                pause(shutdown, Duration::from_secs(1)).await;
            }
        }
    };
    // A manager that tells of state changes is only polled as a safety net.
    let mut changes = agent.manager.changes();
    let mut poll = tokio::time::interval(match changes {
        Some(_) => agent.config.resync,
        None => agent.config.state_poll,
    });
    let mut resync = tokio::time::interval(agent.config.resync);
    let mut dirty = true;
    let mut refresh = false;
    let mut last_held = None;
    // When the states changed since the last report are written: a burst of changes (a
    // thousand units starting) is reported in a few writes, each a look at every unit.
    let mut report_at: Option<tokio::time::Instant> = None;
    let mut pacing = Pacing::new(IDLE_PER_BUSY, LONGEST_PAUSE);
    let mut registry_changes = view.changes();
    loop {
        if refresh && lease.borrow().held().is_some() {
            // Back in the registry: what the engine did meanwhile decides whether the fenced
            // units start here again, so the registry is read afresh first (again on the
            // next round if that fails).
            match view.refresh(REFRESH_WITHIN).await {
                true => {
                    // Stopped by the fence, so no longer started here, whether or not a
                    // reconcile saw them fenced.
                    for name in agent.fence.release() {
                        agent.started.remove(&name);
                    }
                    refresh = false;
                    dirty = true;
                }
                false => tracing::warn!("agent: cannot read the registry afresh; trying again"),
            }
        }
        // Nothing is loaded, started or stopped before this fleetd holds the machine's lease:
        // until then the machine ID may be another live fleetd's, whose units these are.
        // And not on a snapshot that stands still while the watch is broken.
        let current = view.is_following();
        if dirty && current && lease.borrow().lease.is_some() && pacing.ready(Instant::now()) {
            let began = Instant::now();
            let reconciled = agent.reconcile(&view.snapshot()).await;
            pacing.passed(began, Instant::now());
            match reconciled {
                Ok(()) => dirty = false,
                Err(error) => tracing::warn!(%error, "agent: reconcile failed; retrying"),
            }
        }
        let paced = Some(pacing.next()).filter(|at| dirty && *at > Instant::now());
        tokio::select! {
            following = registry_changes.next() => {
                dirty = true;
                if !following {
                    tracing::warn!("agent: registry unreachable; units keep running");
                }
            }
            Some(finished) = agent.jobs.join_next() => {
                agent.finished(finished);
                while let Some(finished) = agent.jobs.try_join_next() {
                    agent.finished(finished);
                }
                agent.started.save();
                // The reconcile that follows reports the states.
                dirty = true;
            }
            changed = lease.changed() => {
                if changed.is_err() {
                    return keeper_result(keeper).await;
                }
                let status = lease.borrow_and_update().clone();
                // A renewal changes only when it was renewed: only a new lease, or one held
                // again after it was taken for lost, needs the states written (again).
                let held = status.held().map(|l| l.lease);
                if held.is_some() && held != last_held {
                    refresh |= !agent.fence.fenced().is_empty();
                    agent.publish_or_warn().await;
                }
                last_held = held;
            }
            _ = fenced.changed() => dirty = true,
            Ok(()) = health_told.changed() => {
                agent.heal();
                report_at.get_or_insert_with(|| tokio::time::Instant::now() + REPORT_DELAY);
            }
            _ = poll.tick() => agent.publish_or_warn().await,
            Some(()) = next_change(&mut changes) => {
                report_at.get_or_insert_with(|| tokio::time::Instant::now() + REPORT_DELAY);
                // A unit found gone without having ended is started again by a reconcile.
                dirty |= agent.forget_lost().await;
            }
            _ = sleep_until(paced.map(Into::into)) => {}
            _ = sleep_until(report_at), if report_at.is_some() => {
                report_at = None;
                agent.publish_or_warn().await;
            }
            _ = resync.tick() => dirty = true,
            // A failed global unit's restart is due.
            _ = sleep_until(agent.wake_at.map(Into::into)) => {
                agent.wake_at = None;
                agent.publish_or_warn().await;
            }
            ended = &mut *keeper => return ended.unwrap_or_else(|e| Err(AgentError::KeeperFailed(e.to_string()))),
            _ = shutdown.changed() => {
                agent.wind_down().await;
                return Ok(());
            }
        }
    }
}

/// What the lease keeper ended with.
async fn keeper_result(
    keeper: &mut tokio::task::JoinHandle<Result<(), AgentError>>,
) -> Result<(), AgentError> {
    keeper
        .await
        .unwrap_or_else(|e| Err(AgentError::KeeperFailed(e.to_string())))
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

/// How long the agent waits for a fresh listing of its part of the registry before it tries
/// again on its next round.
const REFRESH_WITHIN: Duration = Duration::from_secs(2);

/// How long after a state change the agent reports it, with the changes that came meanwhile.
const REPORT_DELAY: Duration = Duration::from_millis(50);
/// After a reconcile, the agent idles at least this many times as long as it took (at most
/// `LONGEST_PAUSE`), so a stream of changes is met with few passes over every unit and the
/// machine's cores stay free for the units and the API. The bound is short: a pass with
/// systemd is mostly waiting for it (loads over D-Bus), and a long pause after it would only
/// idle the machine (250 ms made 1,000 starts through systemd 20% slower).
const IDLE_PER_BUSY: u32 = 3;
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn pause(shutdown: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// How long jobs under way may take to finish when fleetd stops, before they are abandoned
/// (a unit manager call cut short leaves the unit as the init system has it, never half).
const WIND_DOWN: Duration = Duration::from_secs(5);

struct Agent {
    registry: Registry,
    manager: Arc<dyn UnitManager>,
    config: AgentConfig,
    lease: watch::Receiver<LeaseStatus>,
    /// Tells the lease keeper that the registry no longer knows the lease.
    expired: mpsc::Sender<()>,
    /// What was last published per unit, so only changes are written.
    published: BTreeMap<UnitName, StateRecord>,
    /// The lease `published` was written on: a new lease carries no states yet.
    published_on: Option<LeaseId>,
    /// Unit files by hash (immutable).
    units: BTreeMap<UnitHash, UnitFile>,
    /// Unit files whose record cannot be read (corrupt), with why: said once, not each round.
    unreadable: BTreeMap<UnitHash, String>,
    /// Units a stop of the key took down with it (its dependents), started again when the key
    /// is started again.
    collateral: BTreeMap<UnitName, BTreeSet<UnitName>>,
    /// Units wanted here whose load the init system refused: the hash refused and why.
    load_errors: BTreeMap<UnitName, (UnitHash, String)>,
    /// Units whose start the init system refused, and why: not started again until their
    /// desired state or contents change (a refused start retried at once was a busy loop).
    refused_starts: BTreeMap<UnitName, String>,
    started: Started,
    fence: Arc<Fence>,
    jobs: JoinSet<Outcome>,
    /// Units with a job under way, with its "done" bell (starts ordered after it wait for it).
    busy: BTreeMap<UnitName, watch::Receiver<bool>>,
    permits: Arc<Semaphore>,
    /// The health checks of the running units that have some.
    health: Monitor,
    healing: Healing,
    /// Each loaded version's self-healing policies.
    policies: BTreeMap<UnitHash, Arc<heal::Policies>>,
    /// Unhealthy units left as they are: why (published as their reason), and whether the
    /// engine is to move them.
    unhealthy_left: BTreeMap<UnitName, (String, bool)>,
    /// This machine's reports of units that failed here.
    reports: Reports,
    /// The units placed here (not global ones) wanted launched: those a failure is reported of.
    launched_here: BTreeSet<UnitName>,
    /// Failed global units, restarted here after their delay.
    global_restarts: GlobalRestarts,
    /// The restarts units' own `Restart=` made here, within the window.
    crash_loops: CrashLoops,
    /// The global units this machine runs, wanted launched.
    launched_globals: BTreeSet<UnitName>,
    /// Units no longer restarted here (failed global units, units stopped outside fleet too
    /// often), and why: their reason while they do not run.
    given_up: BTreeMap<UnitName, String>,
    /// When a failed global unit is due to be restarted.
    wake_at: Option<Instant>,
    /// The failures this machine handled itself.
    history: History,
    /// Restarts of units found stopped outside fleet, within the window.
    outside_stops: RestartBudget,
    /// Inactive units the agent started that ended by themselves (asked once while inactive).
    ended_by_itself: BTreeSet<UnitName>,
    /// When the agent last started each unit (this run of fleetd).
    last_started: BTreeMap<UnitName, Instant>,
    /// When this agent began: what ended before it is not known to have ended outside fleet.
    began: Instant,
}

impl Agent {
    /// Applies what a job did to what the agent remembers.
    fn finished(&mut self, finished: Result<Outcome, tokio::task::JoinError>) {
        let outcome = match finished {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(%error, "agent: a job failed");
                // Its unit is found by its bell, which the aborted job can no longer ring.
                self.busy.retain(|_, done| done.has_changed().is_ok());
                return;
            }
        };
        self.busy.remove(&outcome.name);
        if let Some(why) = outcome.refused {
            self.refused_starts.insert(outcome.name.clone(), why);
        }
        match outcome.started {
            Some(true) => {
                self.started.insert(&outcome.name);
                self.last_started
                    .insert(outcome.name.clone(), Instant::now());
                self.ended_by_itself.remove(&outcome.name);
                // What its stop took down comes back with it, as systemd propagates a restart
                // to BindsTo=/PartOf= dependents: those still wanted launched start again.
                for unit in self.collateral.remove(&outcome.name).unwrap_or_default() {
                    self.started.remove(&unit);
                }
            }
            Some(false) => self.started.remove(&outcome.name),
            None => {}
        }
        if !outcome.collateral.is_empty() {
            tracing::info!(unit = %outcome.name, took_down = ?outcome.collateral, "agent: the stop took other units down with it");
            self.collateral
                .entry(outcome.name.clone())
                .or_default()
                .extend(outcome.collateral);
        }
    }

    /// Units whose processes were found gone without the unit having ended (a shim killed, a
    /// machine crashed under a persistent data directory) no longer run by the agent's hand,
    /// so those wanted launched start again. Whether there were any.
    async fn forget_lost(&mut self) -> bool {
        let lost = self.manager.take_lost().await;
        for name in &lost {
            tracing::warn!(unit = %name, "agent: the unit's processes are gone; it counts as not started");
            self.started.remove(name);
            if self.wanted_launched(name) {
                self.handled(
                    name,
                    "its processes were found gone (its supervisor was killed, or the machine crashed)",
                    "started again",
                );
            }
        }
        !lost.is_empty()
    }

    /// Lets the jobs under way finish (bounded), so what they did is remembered.
    async fn wind_down(&mut self) {
        let deadline = tokio::time::Instant::now() + WIND_DOWN;
        while let Ok(Some(finished)) =
            tokio::time::timeout_at(deadline, self.jobs.join_next()).await
        {
            self.finished(finished);
        }
        if !self.jobs.is_empty() {
            tracing::warn!(
                jobs = self.jobs.len(),
                "agent: stopping with jobs still under way"
            );
            self.jobs.abort_all();
        }
        self.started.save();
    }

    /// Issues the jobs that make the machine match `snapshot` (loads of new units first, at
    /// once and concurrently, so that the starts that follow see every unit), then publishes
    /// the states. Units with a job under way are left to it: the job's end brings another
    /// round.
    async fn reconcile(&mut self, snapshot: &Snapshot) -> Result<(), AgentError> {
        for name in self.fence.fenced() {
            self.started.remove(&name);
        }
        self.forget_lost().await;
        let me = &self.config.machine;
        self.reports.adopt(snapshot.failures.get(me));
        self.history.adopt(snapshot.restarts.get(me));
        self.launched_here = snapshot
            .scheduled_on(me)
            .filter(|(_, record)| record.desired == JobState::Launched)
            .map(|(name, _)| name.clone())
            .collect();
        let (desired, unreadable) = self.desired(snapshot).await?;
        self.launched_globals = desired
            .iter()
            .filter(|(name, (record, _))| {
                snapshot.global.contains_key(*name) && record.desired == JobState::Launched
            })
            .map(|(name, _)| name.clone())
            .collect();
        let loaded = self.manager.loaded().await?;
        let fresh: Vec<(UnitName, UnitFile)> = desired
            .iter()
            .filter(|(name, _)| !loaded.contains_key(*name) && !self.busy.contains_key(*name))
            .map(|(name, (_, unit))| (name.clone(), unit.clone()))
            .collect();
        let loads = futures_util::stream::iter(fresh.into_iter().map(|(name, unit)| {
            let manager = Arc::clone(&self.manager);
            async move {
                tracing::info!(unit = %name, "agent: loading");
                let result = manager.load(&name, &unit).await;
                (name, result)
            }
        }))
        .buffer_unordered(jobs::CONCURRENT)
        .collect::<Vec<_>>()
        .await;
        self.load_errors.retain(|name, (hash, _)| {
            desired
                .get(name)
                .is_some_and(|(record, _)| record.hash == *hash)
        });
        // A refused start is tried again once the unit is sent elsewhere and back, or changed.
        self.refused_starts.retain(|name, _| {
            desired.get(name).is_some_and(|(record, _)| {
                record.desired == JobState::Launched
                    && loaded.get(name).is_some_and(|hash| *hash == record.hash)
            })
        });
        // A start refused for want of a unit (`Requires=` one not here yet: the refusal
        // names it) is tried again once that unit is here.
        for (loaded_now, _) in loads.iter().filter(|(_, result)| result.is_ok()) {
            self.refused_starts
                .retain(|_, why| !why.contains(loaded_now.as_str()));
        }
        let mut failed = BTreeSet::new();
        for (name, result) in loads {
            if let Err(error) = result {
                tracing::warn!(unit = %name, %error, "agent: load failed");
                if let Some((record, _)) = desired.get(&name) {
                    self.load_errors
                        .insert(name.clone(), (record.hash, error.to_string()));
                }
                failed.insert(name);
            } else {
                // Whatever was remembered of an earlier copy, this one starts anew.
                self.started.remove(&name);
                self.load_errors.remove(&name);
            }
        }
        let started = |name: &UnitName| self.started.contains(name);
        let fenced = |name: &UnitName| self.fence.is_fenced(name);
        let refused = |name: &UnitName| self.refused_starts.contains_key(name);
        let planned = plan::plan(
            &desired,
            &plan::Local {
                loaded: &loaded,
                failed_loads: &failed,
                unreadable: &unreadable,
                started: &started,
                fenced: &fenced,
                refused: &refused,
            },
        );
        self.fence.set_candidates(planned.fenced_if_cut_off);
        self.issue(planned.work, &desired);
        self.started.save();
        Ok(self.publish_states().await?)
    }

    /// Spawns a job for every unit in `work` that has none under way; a start waits for the
    /// starts it is ordered after, in this batch or still under way.
    fn issue(
        &mut self,
        work: BTreeMap<UnitName, (Work, bool)>,
        desired: &BTreeMap<UnitName, (JobRecord, UnitFile)>,
    ) {
        let work: BTreeMap<UnitName, (Work, bool)> = work
            .into_iter()
            .filter(|(name, _)| !self.busy.contains_key(name))
            .collect();
        if work.is_empty() {
            return;
        }
        let starting: BTreeMap<UnitName, &UnitFile> = desired
            .iter()
            .filter(|(name, _)| {
                self.busy.contains_key(*name)
                    || matches!(
                        work.get(*name),
                        Some((Work::Start | Work::Replace { start: true, .. }, _))
                    )
            })
            .map(|(name, (_, unit))| (name.clone(), unit))
            .collect();
        let order = order::predecessors(&starting);
        let mut bells: BTreeMap<UnitName, watch::Sender<bool>> = BTreeMap::new();
        for name in work.keys() {
            let (done, waiting) = watch::channel(false);
            self.busy.insert(name.clone(), waiting);
            bells.insert(name.clone(), done);
        }
        for (name, (work, stops_when_disconnected)) in work {
            let after = order
                .get(&name)
                .into_iter()
                .flatten()
                .filter_map(|earlier| Some((earlier.clone(), self.busy.get(earlier)?.clone())))
                .collect();
            let Some(done) = bells.remove(&name) else {
                continue;
            };
            let job = Job {
                name,
                work,
                after,
                done,
                stops_when_disconnected,
            };
            self.jobs.spawn(job.run(
                Arc::clone(&self.manager),
                Arc::clone(&self.permits),
                self.lease.clone(),
            ));
        }
    }

    /// The units this machine should have: those placed here, then the global units (in name
    /// order) whose metadata this machine has and that conflict with none of those before them;
    /// and the units placed here whose file cannot be read (left as they are).
    async fn desired(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<
        (
            BTreeMap<UnitName, (JobRecord, UnitFile)>,
            BTreeSet<UnitName>,
        ),
        AgentError,
    > {
        let me = self.config.machine.clone();
        let placed: Vec<(UnitName, JobRecord)> = snapshot
            .scheduled_on(&me)
            .map(|(name, record)| (name.clone(), record.clone()))
            .collect();
        let hashes: BTreeSet<UnitHash> = placed
            .iter()
            .map(|(_, record)| record.hash)
            .chain(snapshot.global.values().map(|record| record.hash))
            .collect();
        // Files no unit of this machine refers to any more are forgotten: a long-lived machine
        // sees many versions of its units come and go.
        self.units.retain(|hash, _| hashes.contains(hash));
        self.unreadable.retain(|hash, _| hashes.contains(hash));
        self.fetch_units(hashes).await?;
        let mut here = Vec::new();
        let mut unreadable = BTreeSet::new();
        for (name, record) in placed {
            match self.unit(&record.hash).await? {
                Some(unit) => here.push((name, record, unit)),
                None => {
                    if !self.unreadable.contains_key(&record.hash) {
                        tracing::warn!(unit = %name, hash = %record.hash, "agent: unit file missing");
                    }
                    unreadable.insert(name);
                }
            }
        }
        let mut global = Vec::new();
        for (name, record) in &snapshot.global {
            match self.unit(&record.hash).await? {
                Some(unit) => global.push((name.clone(), record.clone(), unit)),
                None => {
                    unreadable.insert(name.clone());
                }
            }
        }
        let mut metadata = self.config.record.metadata.clone();
        metadata.extend(snapshot.metadata.get(&me).cloned().unwrap_or_default());
        let machine = Machine {
            metadata,
            ..Machine::new(me)
        };
        Ok((plan::units_here(&machine, here, global), unreadable))
    }

    /// Reads the unit files not cached yet, several at once: a machine handed a thousand new
    /// units waits for one round trip's worth, not a thousand.
    async fn fetch_units(&mut self, hashes: BTreeSet<UnitHash>) -> Result<(), AgentError> {
        let missing: Vec<UnitHash> = hashes
            .into_iter()
            .filter(|hash| !self.units.contains_key(hash))
            .collect();
        let fetched: Vec<_> = futures_util::stream::iter(missing.into_iter().map(|hash| {
            let registry = self.registry.clone();
            async move { (hash, registry.unit_file(&hash).await) }
        }))
        .buffer_unordered(jobs::CONCURRENT)
        .collect()
        .await;
        for (hash, unit) in fetched {
            if let Some(unit) = self.readable(hash, unit)? {
                self.units.insert(hash, unit);
            }
        }
        Ok(())
    }

    /// A fetched unit file; a corrupt record is `None` (said once per file), so one bad
    /// record holds up nothing else.
    fn readable(
        &mut self,
        hash: UnitHash,
        fetched: Result<Option<UnitFile>, RegistryError>,
    ) -> Result<Option<UnitFile>, AgentError> {
        match fetched {
            Ok(unit) => Ok(unit),
            Err(RegistryError::Corrupt { key, reason }) => {
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    self.unreadable.entry(hash)
                {
                    tracing::error!(key, reason, "agent: a unit file in the registry cannot be read; its unit is left as it is");
                    entry.insert(reason);
                }
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn unit(&mut self, hash: &UnitHash) -> Result<Option<UnitFile>, AgentError> {
        if let Some(unit) = self.units.get(hash) {
            return Ok(Some(unit.clone()));
        }
        if self.unreadable.contains_key(hash) {
            return Ok(None);
        }
        let fetched = self.registry.unit_file(hash).await;
        let unit = self.readable(*hash, fetched)?;
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
        let Some(lease) = self.lease.borrow().lease.clone() else {
            return Ok(());
        };
        if self.published_on != Some(lease.lease) {
            // A new lease carries no states (nor reports) yet: publish them all again.
            self.published.clear();
            self.reports.lease_changed();
            self.history.lease_changed();
            self.published_on = Some(lease.lease);
        }
        let loaded = match self.manager.states().await {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "agent: cannot list units");
                return Ok(());
            }
        };
        self.follow_health(&loaded);
        // Every change at once: a machine that starts many units reports them together.
        let mut changes: Vec<(UnitName, Option<StateRecord>)> = Vec::new();
        for (name, (hash, state)) in &loaded {
            let refused = self
                .refused_starts
                .get(name)
                .filter(|_| state.active != "active")
                .or(self.unhealthy_left.get(name).map(|(why, _)| why))
                .or(self.given_up.get(name).filter(|_| state.active != "active"));
            let mut record = state_record(
                state,
                *hash,
                self.started.contains(name),
                refused.map_or(state.reason.as_str(), String::as_str),
            );
            record.health = self.health.health(name).map(|h| HealthRecord {
                state: h.state.as_str().to_owned(),
                output: h.output,
            });
            // Checked but not judged yet: starting, never taken for healthy (`StartAfter=`
            // waits on it).
            let checked = || self.policies.get(hash).is_some_and(|p| p.health.is_some());
            if record.health.is_none() && state.active == "active" && checked() {
                record.health = Some(HealthRecord {
                    state: "starting".into(),
                    output: String::new(),
                });
            }
            if self.published.get(name) != Some(&record) {
                changes.push((name.clone(), Some(record)));
            }
        }
        // A unit the init system refused to load is reported so (systemd's `error`), not
        // left without a state.
        for (name, (hash, why)) in &self.load_errors {
            let record = state_record(
                &SystemdState::new("error", "inactive", "dead"),
                *hash,
                false,
                why,
            );
            if !loaded.contains_key(name) && self.published.get(name) != Some(&record) {
                changes.push((name.clone(), Some(record)));
            }
        }
        changes.extend(
            self.published
                .keys()
                .filter(|n| !loaded.contains_key(*n) && !self.load_errors.contains_key(*n))
                .map(|n| (n.clone(), None)),
        );
        self.restart_failed_globals(&loaded);
        self.restart_stopped_outside(&loaded).await;
        self.report_failures(&lease, &loaded).await?;
        self.write_history(&lease, &loaded).await?;
        if changes.is_empty() {
            return Ok(());
        }
        match self.registry.set_states(&lease, &changes).await {
            Ok(()) => {}
            Err(RegistryError::LeaseNotFound(_)) => {
                let _ = self.expired.try_send(());
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
}

fn state_record(state: &SystemdState, hash: UnitHash, launched: bool, reason: &str) -> StateRecord {
    StateRecord {
        launched,
        hash: Some(hash),
        load: state.load.clone(),
        active: state.active.clone(),
        sub: state.sub.clone(),
        reason: reason.to_owned(),
        health: None,
    }
}
