//! The typed registry: fleet's records over any [`KvStore`], in the layout of [`crate::keys`].
//!
//! Who writes what: the API writes `units/`, `jobs/`, `global/` and `metadata/`; the engine
//! leader writes `schedule/` and `reasons/`, every write fenced on its leadership; each agent
//! writes its own `machines/<id>` and `states/<id>/` on its one machine lease, and only when
//! something changed. Nothing is rewritten on a timer: an idle cluster sends only keep-alives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_unit::{JobState, MachineId, Requirements, UnitFile, UnitHash, UnitName};

use crate::error::{RegistryError, Result};
use crate::keys::{self, RegistryKey};
use crate::kv::{
    Compare, EventKind, KeyRange, KvStore, LeaseId, Op, Revision, TxnOutcome, Watch, WatchBatch,
    MAX_TXN_OPS,
};
use crate::records::{
    decode, decode_text, encode, JobRecord, LeaderRecord, MachineRecord, ReasonRecord, StateRecord,
    FORMAT,
};
use crate::snapshot::Snapshot;

/// How many times a read-modify-write retries when another writer got there first.
const CAS_ATTEMPTS: usize = 5;

/// What part of the registry a reader follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// An agent: the units placed on its machine, global units, its dynamic metadata. Nothing
    /// another machine's scheduling touches.
    Agent(MachineId),
    /// The engine: jobs, the schedule and its reasons, machines, dynamic metadata, the leader.
    Engine,
    /// Everything but unit files (the API's listings).
    All,
}

impl Scope {
    /// What a view of the scope watches: one range where the scope's prefixes are adjacent in
    /// key order, so that its changes come in revision order and a revision seen means every
    /// change before it was seen (the engine's, `jobs/` to `schedule/`, which leaves agents'
    /// reports and unit files out; the whole registry's, `global/` to `units/`); the agent's
    /// three prefixes otherwise, which are not adjacent.
    fn watched(&self) -> Vec<KeyRange> {
        match self {
            Scope::Agent(_) => self
                .prefixes()
                .iter()
                .map(|p| KeyRange::prefix(p))
                .collect(),
            Scope::Engine => vec![KeyRange::spanning(keys::JOBS, keys::SCHEDULE)],
            // Unit files too, though a snapshot keeps none: every write but the format
            // version's falls in the range, so a view that has seen revision R has seen every
            // write up to R (the registry's own revision is a target it can reach).
            Scope::All => vec![KeyRange::spanning(keys::GLOBAL, keys::UNITS)],
        }
    }

    /// Whether the scope is watched as one stream, so that a revision seen means every change
    /// up to it was seen.
    pub fn is_ordered(&self) -> bool {
        self.watched().len() == 1
    }

    pub fn prefixes(&self) -> Vec<String> {
        match self {
            Scope::Agent(machine) => vec![
                keys::schedule_of(machine),
                keys::GLOBAL.into(),
                keys::metadata_of(machine),
            ],
            Scope::Engine => [
                keys::JOBS,
                keys::SCHEDULE,
                keys::REASONS,
                keys::MACHINES,
                keys::METADATA,
                keys::LEADER,
            ]
            .map(String::from)
            .to_vec(),
            Scope::All => [
                keys::JOBS,
                keys::GLOBAL,
                keys::SCHEDULE,
                keys::REASONS,
                keys::STATES,
                keys::MACHINES,
                keys::METADATA,
                keys::LEADER,
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// How often a lease holder renews, and how long one renewal may take: a lease survives an
/// outage of up to `ttl - 2 * ttl / RENEWALS_PER_TTL` (the last renewal may have been one
/// interval before it began, and the first one after it may need another), 1.5 s of a 2 s TTL.
pub const RENEWALS_PER_TTL: u32 = 8;

/// The renewal interval (and the bound on one renewal) of a lease of `ttl`.
pub fn renewal_interval(ttl: Duration) -> Duration {
    ttl / RENEWALS_PER_TTL
}

/// A TTL as etcd grants it: whole seconds, rounded up.
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// A machine's presence, held by one lease that also carries its unit states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineLease {
    pub machine: MachineId,
    pub lease: LeaseId,
    pub ttl: Duration,
}

/// Proof of leadership: writes made with it apply only while this leader key still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub machine: MachineId,
    pub lease: LeaseId,
    pub ttl: Duration,
    /// The create revision of the leader key: a later leader's key has another.
    pub since: Revision,
}

impl Leadership {
    fn fence(&self) -> Compare {
        Compare::CreateRevision(keys::LEADER.into(), self.since)
    }
}

/// What became of a job write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobWrite {
    Done,
    /// `create_job` found a job of that name already.
    Exists,
    /// The job does not exist.
    NotFound,
}

#[derive(Clone)]
pub struct Registry {
    kv: Arc<dyn KvStore>,
    /// The revision of the latest write made through this registry (and its clones): what a
    /// reader in the same process waits for to see its own writes.
    written: Arc<AtomicI64>,
}

impl Registry {
    /// Opens the registry in `kv`, writing the format version into an empty one and refusing
    /// one written in a format this code does not read.
    pub async fn open(kv: Arc<dyn KvStore>) -> Result<Registry> {
        let create = Op::put(keys::VERSION, FORMAT);
        let absent = Compare::Absent(keys::VERSION.into());
        if !kv.txn(vec![absent], vec![create]).await?.succeeded {
            let stored = kv.get(keys::VERSION).await?.map(|kv| kv.value);
            let stored = stored.unwrap_or_default();
            if stored != FORMAT.as_bytes() {
                return Err(RegistryError::Corrupt {
                    key: keys::VERSION.into(),
                    reason: format!(
                        "the registry is in format {:?}; this fleetd reads format {FORMAT}",
                        String::from_utf8_lossy(&stored)
                    ),
                });
            }
        }
        Ok(Registry {
            kv,
            written: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The revision of the latest write made through this registry or a clone of it.
    pub fn written(&self) -> Revision {
        self.written.load(Ordering::Acquire)
    }

    /// Every transaction goes through here, so that [`Registry::written`] knows of it.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let outcome = self.kv.txn(compares, ops).await?;
        if outcome.succeeded {
            self.written.fetch_max(outcome.revision, Ordering::AcqRel);
        }
        Ok(outcome)
    }

    // ----- reading -----

    /// Everything in `scope`, decoded, at one revision.
    pub async fn snapshot(&self, scope: &Scope) -> Result<Snapshot> {
        let prefixes = scope.prefixes();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let (ranges, revision) = self.kv.range(&prefixes).await?;
        Ok(Snapshot::from_listing(revision, ranges.iter().flatten()))
    }

    /// The registry's current revision: whether anything was written since a snapshot, for
    /// the price of one small read (a range that holds no key).
    pub async fn revision(&self) -> Result<Revision> {
        let (_, revision) = self.kv.range(&["\u{0}revision"]).await?;
        Ok(revision)
    }

    /// A snapshot of `scope` kept current by a watch; see [`View`].
    pub async fn view(&self, scope: Scope) -> Result<View> {
        let snapshot = self.snapshot(&scope).await?;
        let watch = self.watch(&scope, snapshot.revision + 1).await?;
        Ok(View {
            registry: self.clone(),
            ordered: scope.is_ordered(),
            scope,
            snapshot,
            watch: Some(watch),
        })
    }

    pub(crate) async fn watch(&self, scope: &Scope, from: Revision) -> Result<Watch> {
        let mut watches = Vec::new();
        for range in scope.watched() {
            watches.push(self.kv.watch_range(&range, from).await?);
        }
        Ok(Watch::merge(watches))
    }

    /// The unit file stored under `hash`, checked against it.
    pub async fn unit_file(&self, hash: &UnitHash) -> Result<Option<UnitFile>> {
        let key = RegistryKey::Unit(*hash).path();
        // A file never changes once written (its key is its hash), so what the member has
        // applied will do, and it answers at once when etcd is busy; a file written a moment
        // ago may not be applied there yet, so a miss is asked again, linearizably.
        let found = match self.kv.get_applied(&key).await? {
            Some(kv) => Some(kv),
            None => self.kv.get(&key).await?,
        };
        found
            .map(|kv| decode_unit(&key, hash, &kv.value))
            .transpose()
    }

    /// The job named `name` (global or not), with whether it is global.
    pub async fn job(&self, name: &UnitName) -> Result<Option<(JobRecord, bool)>> {
        for (key, global) in [
            (RegistryKey::Job(name.clone()), false),
            (RegistryKey::Global(name.clone()), true),
        ] {
            let path = key.path();
            if let Some(kv) = self.kv.get(&path).await? {
                return Ok(Some((decode(&path, &kv.value)?, global)));
            }
        }
        Ok(None)
    }

    // ----- the API's writes -----

    /// Stores `unit` and a job for it, unless a job of that name exists. Global units (with
    /// `Global=true`) go under `global/`.
    pub async fn create_job(
        &self,
        name: &UnitName,
        unit: &UnitFile,
        desired: JobState,
    ) -> Result<JobWrite> {
        let compares = vec![
            Compare::Absent(RegistryKey::Job(name.clone()).path()),
            Compare::Absent(RegistryKey::Global(name.clone()).path()),
        ];
        let ops = vec![
            Op::put(RegistryKey::Unit(unit.hash()).path(), unit.serialize()),
            submissions::job(name, unit, desired),
        ];
        Ok(match self.txn(compares, ops).await?.succeeded {
            true => JobWrite::Done,
            false => JobWrite::Exists,
        })
    }

    /// Sets what the user wants of a job.
    pub async fn set_desired(&self, name: &UnitName, desired: JobState) -> Result<JobWrite> {
        for _ in 0..CAS_ATTEMPTS {
            let mut found = None;
            for key in [
                RegistryKey::Job(name.clone()),
                RegistryKey::Global(name.clone()),
            ] {
                let path = key.path();
                if let Some(kv) = self.kv.get(&path).await? {
                    found = Some((path, kv));
                    break;
                }
            }
            let Some((path, kv)) = found else {
                return Ok(JobWrite::NotFound);
            };
            let mut record: JobRecord = decode(&path, &kv.value)?;
            if record.desired == desired {
                return Ok(JobWrite::Done);
            }
            record.desired = desired;
            let unchanged = Compare::ModRevision(path.clone(), kv.mod_revision);
            let put = Op::put(path, encode(&record));
            if self.txn(vec![unchanged], vec![put]).await?.succeeded {
                return Ok(JobWrite::Done);
            }
        }
        Err(busy(&RegistryKey::Job(name.clone()).path()))
    }

    /// Removes a job. Its unit file stays until the engine collects unreferenced ones.
    pub async fn destroy_job(&self, name: &UnitName) -> Result<JobWrite> {
        let ops = vec![
            Op::delete(RegistryKey::Job(name.clone()).path()),
            Op::delete(RegistryKey::Global(name.clone()).path()),
        ];
        let before = self.job(name).await?;
        self.txn(vec![], ops).await?;
        Ok(match before {
            Some(_) => JobWrite::Done,
            None => JobWrite::NotFound,
        })
    }

    /// Replaces a job's unit with new contents and desired state, in one transaction: the
    /// job is never missing in between (a destroy then a create could lose it when the second
    /// write failed). A unit that changes between global and placed moves to the other key.
    pub async fn replace_job(
        &self,
        name: &UnitName,
        unit: &UnitFile,
        desired: JobState,
    ) -> Result<()> {
        let other = match Requirements::for_unit(unit, name.as_str()).is_global() {
            true => RegistryKey::Job(name.clone()),
            false => RegistryKey::Global(name.clone()),
        };
        let ops = vec![
            Op::put(RegistryKey::Unit(unit.hash()).path(), unit.serialize()),
            Op::delete(other.path()),
            submissions::job(name, unit, desired),
        ];
        self.txn(vec![], ops).await?;
        Ok(())
    }

    /// Sets (or with `None` removes) one dynamic metadata value of a machine.
    pub async fn set_metadata(
        &self,
        machine: &MachineId,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.set_metadata_all(&[(machine.clone(), key.to_owned(), value.map(str::to_owned))])
            .await
    }

    /// Sets (or with `None` removes) several dynamic metadata values, all in one transaction
    /// or none; of several changes to one value, the last counts.
    pub async fn set_metadata_all(
        &self,
        changes: &[(MachineId, String, Option<String>)],
    ) -> Result<()> {
        let mut last: BTreeMap<String, Option<&str>> = BTreeMap::new();
        for (machine, key, value) in changes {
            keys::validate_metadata_key(key).map_err(RegistryError::Invalid)?;
            let path = RegistryKey::Metadata(machine.clone(), key.to_owned()).path();
            last.insert(path, value.as_deref());
        }
        let ops = last
            .into_iter()
            .map(|(path, value)| match value {
                Some(value) => Op::put(path, value),
                None => Op::delete(path),
            })
            .collect::<Vec<Op>>();
        if !ops.is_empty() {
            self.txn(vec![], ops).await?;
        }
        Ok(())
    }

    // ----- a machine's writes -----

    /// Announces a machine. With `adopt`, the lease of a previous run of this fleetd is kept if
    /// it is still alive, so a restart neither drops the machine's presence nor its unit
    /// states. A machine ID held by another live lease is refused: two fleetds with one ID
    /// would fight over its units.
    pub async fn register_machine(
        &self,
        machine: &MachineId,
        record: &MachineRecord,
        ttl: Duration,
        adopt: Option<LeaseId>,
    ) -> Result<MachineLease> {
        let mut replaced = None;
        let adopted = match adopt {
            Some(lease) => match self.kv.keep_alive(lease, renewal_interval(ttl)).await? {
                // A lease of another TTL (agent_ttl changed across a restart) is handed over
                // to a new one: the machine key moves to it and the old one ends.
                Some(granted) if whole_seconds(granted) != whole_seconds(ttl) => {
                    replaced = Some(lease);
                    None
                }
                Some(_) => Some(lease),
                None => None,
            },
            None => None,
        };
        let lease = match adopted {
            Some(lease) => lease,
            None => self.kv.grant_lease(ttl).await?,
        };
        let key = RegistryKey::Machine(machine.clone()).path();
        let result = self.claim_machine(&key, record, lease, replaced).await;
        if result.is_err() && adopted.is_none() {
            // Best effort: an unused lease would expire anyway.
            let _ = self.kv.revoke_lease(lease).await;
        }
        result?;
        if let Some(old) = replaced {
            // Only the old states go with it (the machine key is on the new lease now); the
            // agent publishes every state again on a new lease.
            let _ = self.kv.revoke_lease(old).await;
        }
        Ok(MachineLease {
            machine: machine.clone(),
            lease,
            ttl,
        })
    }

    /// Puts the machine's record on `lease`, if the key is free or already on `lease` (or on
    /// `replacing`, the lease it takes over from).
    async fn claim_machine(
        &self,
        key: &str,
        record: &MachineRecord,
        lease: LeaseId,
        replacing: Option<LeaseId>,
    ) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let compare = match self.kv.get(key).await? {
                None => Compare::Absent(key.to_owned()),
                Some(kv) if kv.lease == lease || Some(kv.lease) == replacing => {
                    Compare::ModRevision(key.to_owned(), kv.mod_revision)
                }
                Some(kv) => {
                    return Err(RegistryError::Conflict(format!(
                        "machine ID {} is already in use by another live fleetd (lease {:x}); \
                         give each machine its own ID, or stop the other fleetd and wait for \
                         its lease to expire",
                        key.trim_start_matches(keys::MACHINES),
                        kv.lease
                    )));
                }
            };
            let put = Op::put_with_lease(key, encode(record), lease);
            if self.txn(vec![compare], vec![put]).await?.succeeded {
                return Ok(());
            }
        }
        Err(busy(key))
    }

    /// Renews a machine's lease; `false` when it has expired (presence and states are gone:
    /// register again and re-report).
    pub async fn keep_alive(&self, lease: &MachineLease) -> Result<bool> {
        let renewed = self.kv.keep_alive(lease.lease, renewal_interval(lease.ttl));
        Ok(renewed.await?.is_some())
    }

    /// Reports (or with `None` withdraws) a unit's state on the machine.
    pub async fn set_state(
        &self,
        lease: &MachineLease,
        name: &UnitName,
        state: Option<&StateRecord>,
    ) -> Result<()> {
        self.set_states(lease, &[(name.clone(), state.cloned())])
            .await
    }

    /// Reports (or withdraws) several units' states, as few transactions as the limit allows:
    /// a machine that starts many units at once reports them together.
    pub async fn set_states(
        &self,
        lease: &MachineLease,
        states: &[(UnitName, Option<StateRecord>)],
    ) -> Result<()> {
        for chunk in states.chunks(MAX_TXN_OPS) {
            let ops = chunk
                .iter()
                .map(|(name, state)| {
                    let path = RegistryKey::State(lease.machine.clone(), name.clone()).path();
                    match state {
                        Some(state) => Op::put_with_lease(path, encode(state), lease.lease),
                        None => Op::delete(path),
                    }
                })
                .collect();
            self.txn(vec![], ops).await?;
        }
        Ok(())
    }

    /// Leaves the cluster now: presence and states vanish together.
    pub async fn deregister(&self, lease: &MachineLease) -> Result<()> {
        self.kv.revoke_lease(lease.lease).await
    }

    // ----- the engine's writes -----

    /// Becomes the engine leader if there is none. `None`: another machine leads (watch the
    /// `leader` key in the engine scope to learn when it goes).
    pub async fn campaign(
        &self,
        machine: &MachineId,
        ttl: Duration,
        version: &str,
    ) -> Result<Option<Leadership>> {
        let lease = self.kv.grant_lease(ttl).await?;
        let record = LeaderRecord {
            machine: machine.clone(),
            version: version.to_owned(),
        };
        let absent = Compare::Absent(keys::LEADER.into());
        let put = Op::put_with_lease(keys::LEADER, encode(&record), lease);
        let outcome = self.txn(vec![absent], vec![put]).await;
        match outcome {
            Ok(outcome) if outcome.succeeded => Ok(Some(Leadership {
                machine: machine.clone(),
                lease,
                ttl,
                since: outcome.revision,
            })),
            other => {
                let _ = self.kv.revoke_lease(lease).await;
                other.map(|_| None)
            }
        }
    }

    /// Renews leadership; `false` once it is lost.
    pub async fn keep_leading(&self, leadership: &Leadership) -> Result<bool> {
        let renewed = self
            .kv
            .keep_alive(leadership.lease, renewal_interval(leadership.ttl));
        Ok(renewed.await?.is_some())
    }

    /// Steps down at once, so another engine can take over without waiting for the TTL.
    pub async fn resign(&self, leadership: &Leadership) -> Result<()> {
        self.kv.revoke_lease(leadership.lease).await
    }

    /// Waits until no engine leads: `true` once the leader key is absent or deleted, `false`
    /// when the watch ended before (the caller reads again). Only reads: a follower that
    /// campaigned on a timer would make etcd grant and revoke leases for nothing.
    pub async fn until_no_leader(&self) -> Result<bool> {
        let (ranges, revision) = self.kv.range(&[keys::LEADER]).await?;
        if ranges[0].iter().all(|kv| kv.key != keys::LEADER) {
            return Ok(true);
        }
        let mut watch = self.kv.watch(keys::LEADER, revision + 1).await?;
        while let Some(batch) = watch.next().await {
            let deleted = batch?
                .events
                .iter()
                .any(|e| e.kv.key == keys::LEADER && e.kind == EventKind::Delete);
            if deleted {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A machine leaves the cluster: its lease ends, and its presence and unit states go with
    /// it at once (not when the lease would have expired).
    pub async fn leave(&self, machine_lease: LeaseId) -> Result<()> {
        self.kv.revoke_lease(machine_lease).await
    }

    /// Applies the engine's decisions as few transactions as the limit allows, each fenced on
    /// `leadership`. A group's operations always land in the same transaction. Returns the last
    /// revision written, or `None` as soon as leadership turns out to be lost (groups before
    /// it were applied; the next leader re-reads and corrects).
    pub async fn commit_decisions(
        &self,
        leadership: &Leadership,
        mut groups: Vec<Vec<Op>>,
    ) -> Result<Option<Revision>> {
        // When no key is written twice, the order of the groups does not matter, so: grouped
        // by key (by machine, for placements), each machine's agent hears of all its new
        // units in one or two transactions rather than one per unit; and several transactions
        // in flight let etcd commit them in one round.
        let independent = writes_each_key_once(&groups);
        if independent {
            groups.sort_by(|a, b| first_key(a).cmp(first_key(b)));
        }
        let batches = pack(groups)?;
        let in_flight = match independent {
            true => DECISIONS_IN_FLIGHT,
            false => 1,
        };
        let mut revision = 0;
        for wave in batches.chunks(in_flight) {
            let sent = wave
                .iter()
                .map(|batch| self.txn(vec![leadership.fence()], batch.clone()));
            for outcome in futures_util::future::join_all(sent).await {
                let outcome = outcome?;
                if !outcome.succeeded {
                    return Ok(None);
                }
                revision = revision.max(outcome.revision);
            }
        }
        Ok(Some(revision))
    }
}

/// How many of the engine's decision transactions are sent at once.
const DECISIONS_IN_FLIGHT: usize = 8;

/// Whether no key is the target of two operations (a prefix deletion counts as touching
/// everything).
fn writes_each_key_once(groups: &[Vec<Op>]) -> bool {
    let mut seen = std::collections::HashSet::new();
    groups.iter().flatten().all(|op| match op {
        Op::Put { key, .. } | Op::Delete { key } => seen.insert(key.as_str()),
        Op::DeletePrefix { .. } => false,
    })
}

fn first_key(group: &[Op]) -> &str {
    match group.first() {
        Some(Op::Put { key, .. } | Op::Delete { key }) => key,
        Some(Op::DeletePrefix { prefix }) => prefix,
        None => "",
    }
}

/// Operations that submit units, for writers that batch them (a bulk submission, a benchmark).
pub mod submissions {
    use super::*;

    /// Writes the job of `name` (under `global/` for a global unit) with its file's hash and
    /// `desired`; the unit file itself goes under `units/<hash>`.
    pub fn job(name: &UnitName, unit: &UnitFile, desired: JobState) -> Op {
        let key = match Requirements::for_unit(unit, name.as_str()).is_global() {
            true => RegistryKey::Global(name.clone()),
            false => RegistryKey::Job(name.clone()),
        };
        let record = JobRecord {
            hash: unit.hash(),
            desired,
        };
        Op::put(key.path(), encode(&record))
    }
}

/// Operations the engine commits with [`Registry::commit_decisions`].
pub mod decisions {
    use super::*;

    /// Places `name` on `machine` with what it should be there.
    pub fn place(machine: &MachineId, name: &UnitName, record: &JobRecord) -> Op {
        let key = RegistryKey::Schedule(machine.clone(), name.clone());
        Op::put(key.path(), encode(record))
    }

    pub fn unplace(machine: &MachineId, name: &UnitName) -> Op {
        Op::delete(RegistryKey::Schedule(machine.clone(), name.clone()).path())
    }

    /// Records why `name` cannot be placed.
    pub fn unplaceable(name: &UnitName, reason: &str) -> Op {
        let record = ReasonRecord {
            reason: reason.to_owned(),
        };
        Op::put(RegistryKey::Reason(name.clone()).path(), encode(&record))
    }

    pub fn placeable(name: &UnitName) -> Op {
        Op::delete(RegistryKey::Reason(name.clone()).path())
    }
}

/// Packs operation groups into transactions of at most [`MAX_TXN_OPS`] operations, keeping
/// each group whole.
fn pack(groups: Vec<Vec<Op>>) -> Result<Vec<Vec<Op>>> {
    let mut batches: Vec<Vec<Op>> = Vec::new();
    for group in groups {
        if group.len() > MAX_TXN_OPS {
            return Err(RegistryError::Invalid(format!(
                "a decision of {} operations does not fit one transaction",
                group.len()
            )));
        }
        match batches.last_mut() {
            Some(batch) if batch.len() + group.len() <= MAX_TXN_OPS => batch.extend(group),
            _ => batches.push(group),
        }
    }
    batches.retain(|b| !b.is_empty());
    Ok(batches)
}

fn decode_unit(key: &str, hash: &UnitHash, value: &[u8]) -> Result<UnitFile> {
    let corrupt = |reason: String| RegistryError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let text = decode_text(key, value)?;
    let unit = UnitFile::parse(&text).map_err(|e| corrupt(e.message()))?;
    if unit.hash() != *hash {
        return Err(corrupt(format!("content hashes to {}", unit.hash())));
    }
    Ok(unit)
}

fn busy(key: &str) -> RegistryError {
    RegistryError::Unavailable(format!(
        "{key} kept changing under {CAS_ATTEMPTS} attempts to update it; try again"
    ))
}

/// A snapshot of one scope kept current by a watch. [`View::changed`] waits for the next
/// change and applies it; after a compaction or a broken watch it re-lists and resumes, so the
/// caller only ever sees a current snapshot.
pub struct View {
    registry: Registry,
    scope: Scope,
    /// Whether the view watches one stream, so that a batch's revision says every change up
    /// to it has been seen (see [`Scope::watched`]).
    ordered: bool,
    snapshot: Snapshot,
    watch: Option<Watch>,
}

/// What [`View::changed`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These keys changed (in one batch).
    Keys(Vec<RegistryKey>),
    /// The view was re-listed: anything may have changed.
    Everything,
}

impl View {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Waits for the next change and applies it. An `Err` (registry unreachable) leaves the
    /// snapshot as it was; call again after a backoff and the view re-lists.
    pub async fn changed(&mut self) -> Result<Changed> {
        let Some(watch) = self.watch.as_mut() else {
            return self.relist().await;
        };
        let mut keys = match watch.next().await {
            Some(Ok(batch)) => self.apply(&batch),
            Some(Err(RegistryError::Compacted { .. })) | None => return self.relist().await,
            Some(Err(e)) => {
                self.watch = None;
                return Err(e);
            }
        };
        // Take whatever else has arrived too (a revision that touched several prefixes comes
        // as one batch per prefix), so the caller reconciles once.
        while let Some(next) = self.watch.as_mut().and_then(Watch::try_next) {
            match next {
                Ok(batch) => keys.extend(self.apply(&batch)),
                // Reported by the next call, which re-lists.
                Err(_) => {
                    self.watch = None;
                    break;
                }
            }
        }
        Ok(Changed::Keys(keys))
    }

    /// Applies a batch of the view's watch.
    fn apply(&mut self, batch: &WatchBatch) -> Vec<RegistryKey> {
        let keys = self.snapshot.apply(&batch.events);
        if self.ordered {
            self.snapshot.revision = self.snapshot.revision.max(batch.revision);
        }
        keys
    }

    /// Reads the whole scope again now, so the snapshot reflects every write made before
    /// this call (a watch may still be catching up after an outage).
    pub async fn refresh(&mut self) -> Result<()> {
        self.relist().await.map(|_| ())
    }

    async fn relist(&mut self) -> Result<Changed> {
        self.watch = None;
        let snapshot = self.registry.snapshot(&self.scope).await?;
        let watch = self
            .registry
            .watch(&self.scope, snapshot.revision + 1)
            .await?;
        self.snapshot = snapshot;
        self.watch = Some(watch);
        Ok(Changed::Everything)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view's watched ranges hold its scope's keys and no other records, of every kind of
    /// key there is.
    #[test]
    fn views_watch_their_scope_and_nothing_else() {
        let (m1, m2) = (MachineId::new("m1").unwrap(), MachineId::new("m2").unwrap());
        let unit = UnitName::new("a.service").unwrap();
        let hash = UnitFile::parse("").unwrap().hash();
        let every_key = [
            RegistryKey::Version,
            RegistryKey::Leader,
            RegistryKey::Unit(hash),
            RegistryKey::Job(unit.clone()),
            RegistryKey::Global(unit.clone()),
            RegistryKey::Schedule(m1.clone(), unit.clone()),
            RegistryKey::Schedule(m2.clone(), unit.clone()),
            RegistryKey::Reason(unit.clone()),
            RegistryKey::State(m1.clone(), unit.clone()),
            RegistryKey::Machine(m1.clone()),
            RegistryKey::Metadata(m1.clone(), "disk".into()),
            RegistryKey::Metadata(m2.clone(), "disk".into()),
        ];
        for scope in [Scope::Agent(m1.clone()), Scope::Engine, Scope::All] {
            for key in &every_key {
                let path = key.path();
                let in_scope = scope
                    .prefixes()
                    .iter()
                    .any(|p| path.starts_with(p.as_str()));
                let watched = scope.watched().iter().any(|r| r.contains(&path));
                // The whole registry's view watches unit files too (for their revisions).
                let expected =
                    in_scope || (scope == Scope::All && matches!(key, RegistryKey::Unit(_)));
                assert_eq!(watched, expected, "{scope:?}: {path}");
            }
        }
    }

    fn check(groups: &[usize], expected: &[usize]) {
        let groups = groups
            .iter()
            .enumerate()
            .map(|(g, &n)| (0..n).map(|i| Op::delete(format!("{g}/{i}"))).collect())
            .collect();
        let sizes: Vec<usize> = pack(groups).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, expected);
    }

    #[test]
    fn decisions_pack_into_transactions_without_splitting_a_group() {
        check(&[], &[]);
        check(&[1; 128], &[128]);
        check(&[1; 129], &[128, 1]);
        check(&[2; 64], &[128]);
        check(&[2, 127, 1], &[2, 128]);
        check(&[0, 3, 0], &[3]);
        assert!(pack(vec![vec![Op::delete("x"); 129]]).is_err());
    }
}
