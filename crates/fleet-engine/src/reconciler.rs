//! The engine: one leader at a time, a level-triggered reconciler. Woken by the registry (its
//! engine-scope view) or a periodic resync, it turns the current snapshot into scheduler
//! decisions and writes them in fenced, batched transactions. A follower waits on the
//! `leader` key alone and campaigns when it disappears, so followers write nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use fleet_registry::records::JobRecord;

use fleet_registry::records::{now_ms, FailureRecord};
use fleet_registry::{
    renewal_interval, EngineWrite, Leadership, Pacing, Registry, RegistryError, Revision, Scope,
    Snapshot,
};
use fleet_unit::health::{reschedule_policy, ReschedulePolicy};
use fleet_unit::relations::{related, PLACED_TOGETHER};
use fleet_unit::{Constraints, JobState, MachineId, Requirements, UnitFile, UnitHash, UnitName};
use tokio::sync::watch;

use crate::presence::Presence;
use crate::rescheduling::{self, Failures};
use crate::scheduler::{schedule, Decision, JobInfo, MachineInfo};
use crate::start_after::{self, Readiness};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub machine: MachineId,
    /// The leader lease's TTL: how long a dead leader holds up its successor.
    pub lease_ttl: Duration,
    /// The safety-net reconcile period (fleet's engine_reconcile_interval).
    pub resync: Duration,
    pub version: String,
    /// How long machines that vanished right after this engine could not reach the registry
    /// still count (see `presence`): the agent TTL.
    pub machine_grace: Duration,
    /// How often the leader collects unit files no job refers to any more.
    pub collect_unit_files: Duration,
    /// Whether a unit that failed is moved when its `Reschedule=` says nothing
    /// (`reschedule_failed_units`).
    pub reschedule_failed_units: bool,
}

/// What the engine keeps from one pass (and one leadership) to the next.
struct Memory {
    units: UnitCache,
    presence: Presence,
    /// When a move that is not due yet will be (the next pass then).
    wake_at: Option<Instant>,
}

impl Memory {
    fn registry_failed(&mut self) {
        self.presence.registry_failed(Instant::now());
    }
}

/// Runs the engine until `shutdown` turns true; a leader resigns on the way out so a
/// successor need not wait for the lease to expire.
pub async fn run(registry: Registry, config: EngineConfig, mut shutdown: watch::Receiver<bool>) {
    let mut memory = Memory {
        units: UnitCache::default(),
        presence: Presence::new(config.machine_grace),
        wake_at: None,
    };
    while !*shutdown.borrow() {
        let campaign = registry.campaign(&config.machine, config.lease_ttl, &config.version);
        match campaign.await {
            Ok(Some(leadership)) => {
                tracing::info!(machine = %config.machine, "engine: leading");
                lead(&registry, &config, &leadership, &mut memory, &mut shutdown).await;
                tracing::info!(machine = %config.machine, "engine: no longer leading");
            }
            Ok(None) => {
                if !wait_for_vacancy(&registry, &config, &mut shutdown).await {
                    memory.registry_failed();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "engine: cannot campaign; retrying");
                memory.registry_failed();
                pause(&mut shutdown, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Leads until leadership is lost or shutdown is asked for.
async fn lead(
    registry: &Registry,
    config: &EngineConfig,
    leadership: &Leadership,
    memory: &mut Memory,
    shutdown: &mut watch::Receiver<bool>,
) {
    let view = match registry.reflect(Scope::Engine).await {
        Ok(view) => view,
        Err(error) => {
            tracing::warn!(%error, "engine: cannot read the registry; stepping down");
            memory.registry_failed();
            let _ = registry.resign(leadership).await;
            return;
        }
    };
    let mut keep_alive = tokio::time::interval(renewal_interval(config.lease_ttl));
    let mut resync = tokio::time::interval(config.resync);
    let every = config.collect_unit_files;
    let mut collect = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut dirty = true;
    // The revision of this leader's last write: a pass on a snapshot that does not show it yet
    // would decide again what that write already did (placing units twice, moving them).
    let mut written: Revision = 0;
    let mut pacing = Pacing::new(IDLE_PER_BUSY, LONGEST_PAUSE);
    let mut changes = view.changes();
    loop {
        // Not on a snapshot that stands still while the watch is broken: the registry may
        // have moved far since.
        let current = view.is_following() && view.revision() >= written;
        if dirty && current && pacing.ready(Instant::now()) {
            let began = Instant::now();
            let pass = reconcile(registry, config, leadership, &view.snapshot(), memory).await;
            pacing.passed(began, Instant::now());
            match pass {
                Ok(Pass::Quiet) => dirty = false,
                Ok(Pass::Wrote { revision, writes }) => {
                    written = revision;
                    dirty = false;
                    // Under a bulk submission the jobs keep coming while a pass is written,
                    // and fewer, larger passes mean fewer reports from each agent.
                    if writes >= BUSY_WRITES {
                        pacing.hold_until(Instant::now() + BUSY_PAUSE);
                    }
                }
                Ok(Pass::Deposed) => return,
                Err(error) => {
                    tracing::warn!(%error, "engine: reconcile failed; retrying");
                    memory.registry_failed();
                }
            }
        }
        let grace_ends = memory.presence.grace_ends(Instant::now());
        tokio::select! {
            following = changes.next() => {
                dirty = true;
                if !following {
                    // The reflector says why, and re-lists by itself.
                    memory.registry_failed();
                }
            }
            _ = resync.tick() => dirty = true,
            _ = collect.tick() => collect_unit_files(registry, leadership).await,
            // Vanished machines stop counting: their units move now.
            _ = until(grace_ends) => dirty = true,
            // A failed unit's move is due.
            _ = until(memory.wake_at) => {
                memory.wake_at = None;
                dirty = true;
            }
            _ = until(Some(pacing.next()).filter(|at| dirty && *at > Instant::now())) => {}
            _ = keep_alive.tick() => match registry.keep_leading(leadership).await {
                Ok(true) => {}
                Ok(false) => {
                    // The lease ran out: etcd was out of reach for a while.
                    memory.registry_failed();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "engine: leader keep-alive failed");
                    memory.registry_failed();
                }
            },
            _ = shutdown.changed() => {
                let _ = registry.resign(leadership).await;
                return;
            }
        }
    }
}

/// After a pass, the engine idles at least this many times as long as the pass took (at most
/// `LONGEST_PAUSE`): it takes at most a quarter of a core, whatever the rate of changes.
const IDLE_PER_BUSY: u32 = 3;
const LONGEST_PAUSE: Duration = Duration::from_millis(250);
/// A pass that wrote this many decisions (a transaction's worth) is followed by `BUSY_PAUSE`.
const BUSY_WRITES: usize = 128;
/// The pause after a busy pass before the next one.
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// Deletes the unit files no job refers to (reads only, when there are none).
async fn collect_unit_files(registry: &Registry, leadership: &Leadership) {
    let collected = match registry.unit_file_garbage().await {
        Ok(garbage) if garbage.is_empty() => return,
        Ok(garbage) => registry.collect_garbage(leadership, &garbage).await,
        Err(error) => Err(error),
    };
    match collected {
        Ok(files) => tracing::info!(files, "engine: unit files no job refers to deleted"),
        Err(error) => tracing::warn!(%error, "engine: cannot collect unit files; trying later"),
    }
}

/// Waits until the leader key is gone; `false` when the registry failed meanwhile. It only
/// reads: a follower that campaigned on a timer would have etcd grant and revoke a lease for
/// nothing every few seconds, writes on an idle cluster. A lease lasts at most its TTL, so
/// every twice that the key is read again, in case a deletion went past the watch.
async fn wait_for_vacancy(
    registry: &Registry,
    config: &EngineConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            vacated = registry.until_no_leader() => match vacated {
                Ok(true) => return true,
                // The watch ended: read again, shortly.
                Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(_) => return false,
            },
            _ = tokio::time::sleep(config.lease_ttl * 2) => {}
            _ = shutdown.changed() => return true,
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

/// What a job's name and file say of where and when it runs.
#[derive(Debug, Clone)]
struct Placing {
    constraints: Constraints,
    /// The units it names in `Requires=`... (placed with it).
    with: Vec<String>,
    /// `StartAfter=`.
    start_after: Vec<String>,
}

/// Unit files by hash: immutable, so cached while a job refers to them (a leader change keeps
/// the cache).
#[derive(Default)]
struct UnitCache {
    files: BTreeMap<UnitHash, UnitFile>,
    /// What each job's name and file say of where and when it runs, as last derived, so a
    /// pass over 10,000 jobs does not parse 10,000 files again.
    constraints: HashMap<(UnitName, UnitHash), Placing>,
    /// The reschedule policy of each file, as last derived (read once, not every pass).
    reschedule: HashMap<UnitHash, ReschedulePolicy>,
}

impl UnitCache {
    async fn get(
        &mut self,
        registry: &Registry,
        hash: &UnitHash,
    ) -> Result<Option<&UnitFile>, RegistryError> {
        if !self.files.contains_key(hash) {
            match registry.unit_file(hash).await? {
                Some(file) => {
                    self.files.insert(*hash, file);
                }
                None => return Ok(None),
            }
        }
        Ok(self.files.get(hash))
    }

    /// The constraints of job `name` whose unit file is `hash`; `None` when the file is
    /// missing from the registry.
    async fn constraints(
        &mut self,
        registry: &Registry,
        name: &UnitName,
        hash: &UnitHash,
    ) -> Result<Option<Placing>, RegistryError> {
        let key = (name.clone(), *hash);
        if let Some(known) = self.constraints.get(&key) {
            return Ok(Some(known.clone()));
        }
        let Some(unit) = self.get(registry, hash).await? else {
            return Ok(None);
        };
        let requirements = Requirements::for_unit(unit, name.as_str());
        let derived = Placing {
            constraints: requirements.constraints(),
            with: related(unit, name.as_str(), PLACED_TOGETHER),
            start_after: requirements.start_after(),
        };
        self.constraints.insert(key, derived.clone());
        Ok(Some(derived))
    }

    /// The reschedule policy of unit file `hash` (its defaults when the file is missing or
    /// its keys cannot be read: those were refused at submit).
    async fn reschedule(
        &mut self,
        registry: &Registry,
        hash: &UnitHash,
    ) -> Result<ReschedulePolicy, RegistryError> {
        if let Some(known) = self.reschedule.get(hash) {
            return Ok(known.clone());
        }
        let policy = match self.get(registry, hash).await? {
            // Refused at submit when they cannot be read: the defaults for what slipped past.
            Some(unit) => reschedule_policy(unit).unwrap_or_default(),
            // Not kept: the file may yet be readable.
            None => return Ok(ReschedulePolicy::default()),
        };
        self.reschedule.insert(*hash, policy.clone());
        Ok(policy)
    }

    /// Forgets the files and constraints no job refers to any more (a long-lived cluster
    /// sees many versions of its units come and go).
    fn keep_only(&mut self, jobs: &BTreeMap<UnitName, JobRecord>) {
        self.constraints
            .retain(|(name, hash), _| jobs.get(name).is_some_and(|job| job.hash == *hash));
        let referenced: std::collections::HashSet<&UnitHash> =
            jobs.values().map(|job| &job.hash).collect();
        self.files.retain(|hash, _| referenced.contains(hash));
        self.reschedule.retain(|hash, _| referenced.contains(hash));
    }
}

/// What a pass did.
enum Pass {
    /// Nothing to decide.
    Quiet,
    /// Decisions written; the last at this revision.
    Wrote { revision: Revision, writes: usize },
    /// Another engine leads now.
    Deposed,
}

/// One pass: decisions for `snapshot`, written fenced.
async fn reconcile(
    registry: &Registry,
    config: &EngineConfig,
    leadership: &Leadership,
    snapshot: &Snapshot,
    memory: &mut Memory,
) -> Result<Pass, RegistryError> {
    let started = Instant::now();
    let registered: Vec<MachineInfo> = snapshot
        .machines
        .keys()
        .map(|id| MachineInfo {
            id: id.clone(),
            metadata: snapshot.machine_metadata(id),
        })
        .collect();
    let machines = memory.presence.machines(registered, Instant::now());
    let units = &mut memory.units;
    let mut groups: Vec<Vec<EngineWrite>> = Vec::new();
    let mut jobs = Vec::new();
    let placements = snapshot.placed_units();
    let failed = failures_by_unit(snapshot);
    let now_ms = now_ms();
    let mut wake_at_ms: Option<u64> = None;
    let mut readiness = Readiness::new(registry, snapshot, &placements);
    // Units placed loaded for now: what they start after is not up yet.
    let mut gated: BTreeMap<UnitName, Vec<String>> = BTreeMap::new();
    for (name, record) in &snapshot.jobs {
        let mut placed = placements
            .get(name)
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let first = placed.next().cloned();
        // A unit placed twice (by a broken writer) keeps one place.
        for extra in placed {
            groups.push(vec![EngineWrite::unplace(extra, name)]);
        }
        // A unit whose file is missing or unreadable is explained and left where it is (not
        // placed, not moved): the rest of the pass goes on.
        let Placing {
            constraints,
            with,
            start_after,
        } = match units.constraints(registry, name, &record.hash).await {
            Ok(Some(derived)) => derived,
            Ok(None) => {
                let reason = format!(
                    "unit file {} is missing from the registry",
                    record.hash.short()
                );
                set_reason(&mut groups, snapshot, name, &reason);
                continue;
            }
            Err(RegistryError::Corrupt { key, reason }) => {
                let reason = format!(
                    "unit file {key} in the registry cannot be read ({reason}); destroy the unit and submit it again"
                );
                set_reason(&mut groups, snapshot, name, &reason);
                continue;
            }
            Err(error) => return Err(error),
        };
        // Not started before what it starts after is up (once started, it stays so).
        let started_already = first
            .as_ref()
            .and_then(|m| snapshot.placed(name, m))
            .is_some_and(|placed| placed.desired == JobState::Launched);
        if record.desired == JobState::Launched && !start_after.is_empty() && !started_already {
            let waiting = readiness.waiting_for(&start_after).await?;
            if !waiting.is_empty() {
                tracing::debug!(unit = %name, ?waiting, "engine: waiting to start (StartAfter=)");
                gated.insert(name.clone(), waiting);
                let recheck = now_ms + start_after::RECHECK.as_millis() as u64;
                wake_at_ms = Some(wake_at_ms.map_or(recheck, |w| w.min(recheck)));
            }
        }
        let policy = units.reschedule(registry, &record.hash).await?;
        let reports = failed
            .get(name)
            .map(|reports| {
                reports
                    .iter()
                    .filter(|(_, r)| r.hash.is_none_or(|h| h == record.hash))
                    .map(|(m, r)| (*m, *r))
                    .collect()
            })
            .unwrap_or_default();
        let verdict = rescheduling::verdict(&Failures {
            placed: first.as_ref(),
            reports,
            record: snapshot.moves.get(name),
            policy: &policy,
            enabled: policy.on_failure.unwrap_or(config.reschedule_failed_units),
            global: constraints.global,
            now_ms,
        });
        if let Some(moves) = verdict.record {
            tracing::info!(unit = %name, what = ?moves.history.last(), "engine: a failed unit");
            groups.push(vec![EngineWrite::moves(name, Some(moves))]);
        }
        if let Some(at) = verdict.wake_at_ms {
            wake_at_ms = Some(wake_at_ms.map_or(at, |w| w.min(at)));
        }
        jobs.push(JobInfo {
            name: name.to_string(),
            desired: record.desired,
            constraints,
            placed: first,
            evict: verdict.evict,
            hold: verdict.hold,
            avoid: verdict.avoid,
            with,
        });
    }
    units.keep_only(&snapshot.jobs);
    // Placed or explained units whose job was destroyed.
    for (name, machines) in &placements {
        if !snapshot.jobs.contains_key(*name) {
            groups.extend(machines.iter().map(|m| vec![EngineWrite::unplace(m, name)]));
        }
    }
    for name in snapshot.reasons.keys() {
        if !snapshot.jobs.contains_key(name) {
            groups.push(vec![EngineWrite::placeable(name)]);
        }
    }
    for name in snapshot.moves.keys() {
        if !snapshot.jobs.contains_key(name) && !snapshot.global.contains_key(name) {
            groups.push(vec![EngineWrite::moves(name, None)]);
        }
    }
    memory.wake_at =
        wake_at_ms.map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms)));

    let mut final_place: BTreeMap<String, Option<MachineId>> = jobs
        .iter()
        .map(|j| (j.name.clone(), j.placed.clone()))
        .collect();
    for decision in schedule(&machines, &jobs) {
        match decision {
            Decision::Place { unit, machine } => {
                let name = unit_name(&unit);
                let wanted = scheduled(snapshot, &gated, &name);
                let mut group = vec![EngineWrite::place(&machine, &name, &wanted)];
                group.extend(placed_reason(snapshot, &gated, &name));
                // A unit moved after a failure: its history says where it went.
                if let Some(moves) = snapshot.moves.get(&name).and_then(|m| m.landed(&machine)) {
                    group.push(EngineWrite::moves(&name, Some(moves)));
                }
                groups.push(group);
                final_place.insert(unit, Some(machine));
            }
            Decision::Unplace {
                unit,
                machine,
                reason,
            } => {
                tracing::info!(unit, %machine, reason, "engine: unplacing");
                groups.push(vec![EngineWrite::unplace(&machine, &unit_name(&unit))]);
                final_place.insert(unit, None);
            }
            Decision::Unplaceable { unit, reason } => {
                let name = unit_name(&unit);
                set_reason(&mut groups, snapshot, &name, &reason);
            }
        }
    }
    // Units staying where they are follow their job's hash and desired state, and lose any
    // reason a pass that had not seen them placed yet recorded.
    for (unit, machine) in final_place {
        let Some(machine) = machine else { continue };
        let name = unit_name(&unit);
        let wanted = scheduled(snapshot, &gated, &name);
        let current = snapshot
            .schedule
            .get(&machine)
            .and_then(|placed| placed.get(&name));
        let mut group = Vec::new();
        if current.is_some_and(|current| *current != wanted) {
            group.push(EngineWrite::place(&machine, &name, &wanted));
        }
        if current.is_some() {
            group.extend(placed_reason(snapshot, &gated, &name));
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    if groups.is_empty() {
        return Ok(Pass::Quiet);
    }
    let decided = started.elapsed();
    let writes = groups.len();
    let committed = registry.commit_decisions(leadership, groups).await?;
    tracing::info!(
        jobs = snapshot.jobs.len(),
        writes,
        decided_in = ?decided,
        written_in = ?started.elapsed() - decided,
        "engine: decisions written"
    );
    Ok(committed.map_or(Pass::Deposed, |revision| Pass::Wrote { revision, writes }))
}

/// What the schedule says of a placed unit: its job, loaded while `StartAfter=` holds it.
fn scheduled(
    snapshot: &Snapshot,
    gated: &BTreeMap<UnitName, Vec<String>>,
    name: &UnitName,
) -> JobRecord {
    let job = &snapshot.jobs[name];
    match gated.contains_key(name) {
        true => JobRecord {
            hash: job.hash,
            desired: JobState::Loaded,
        },
        false => job.clone(),
    }
}

/// The write that makes a placed unit's reason what it is: the units it waits for, or none.
fn placed_reason(
    snapshot: &Snapshot,
    gated: &BTreeMap<UnitName, Vec<String>>,
    name: &UnitName,
) -> Option<EngineWrite> {
    let recorded = snapshot.reasons.get(name);
    match gated.get(name) {
        Some(waiting) => recorded
            .is_none_or(|r| r.waiting_for != *waiting)
            .then(|| EngineWrite::waiting(name, waiting)),
        None => recorded.map(|_| EngineWrite::placeable(name)),
    }
}

/// Records why a unit is not placed, unless that is already what the registry says.
fn set_reason(
    groups: &mut Vec<Vec<EngineWrite>>,
    snapshot: &Snapshot,
    name: &UnitName,
    reason: &str,
) {
    if snapshot.reasons.get(name).map(|r| r.reason.as_str()) != Some(reason) {
        tracing::info!(unit = %name, reason, "engine: cannot place");
        groups.push(vec![EngineWrite::unplaceable(name, reason)]);
    }
}

fn unit_name(name: &str) -> UnitName {
    UnitName::new(name).expect("the scheduler returns the names it was given")
}

/// The failure reports of the snapshot by unit, then machine.
fn failures_by_unit(
    snapshot: &Snapshot,
) -> BTreeMap<&UnitName, BTreeMap<&MachineId, &FailureRecord>> {
    let mut by_unit: BTreeMap<&UnitName, BTreeMap<&MachineId, &FailureRecord>> = BTreeMap::new();
    for (machine, reports) in &snapshot.failures {
        for (name, report) in reports {
            by_unit.entry(name).or_default().insert(machine, report);
        }
    }
    by_unit
}
