//! The single-node store behind the in-memory and the embedded backends: the whole keyspace in
//! a `BTreeMap`, a revision counter, leases with deadlines on the tokio clock, and a bounded
//! history from which watches resume. The embedded store adds a redb file ([`crate::disk`])
//! that every commit is written to before it becomes visible.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::disk::{Change, Disk, DiskWrite};
use crate::error::{RegistryError, Result};
use crate::kv::{
    check_txn, Compare, Event, EventKind, KeyRange, KeyValue, KvStore, LeaseId, Op, Revision,
    TxnOutcome, Watch, WatchBatch,
};

/// How many committed revisions a store keeps for watches that resume from the past.
const HISTORY: usize = 10_000;
/// How many batches a watcher may fall behind before its watch is ended (it then re-lists).
const WATCH_BUFFER: usize = 4_096;

pub struct LocalStore {
    state: Arc<Mutex<State>>,
    lease_changed: Arc<Notify>,
    reaper: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    data: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    history: VecDeque<WatchBatch>,
    history_limit: usize,
    /// Watches may resume from any revision above this one.
    compacted: Revision,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    disk: Option<Disk>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct Watcher {
    id: u64,
    range: KeyRange,
    sender: mpsc::Sender<Result<WatchBatch>>,
}

impl LocalStore {
    /// A store that lives in memory only. Must be created inside a tokio runtime (leases
    /// expire on a background task).
    pub fn in_memory() -> LocalStore {
        LocalStore::with_history(HISTORY)
    }

    /// A store that keeps only `history` past revisions for resuming watches.
    pub fn with_history(history: usize) -> LocalStore {
        LocalStore::start(State {
            revision: 1,
            next_lease: 1,
            history_limit: history,
            ..State::default()
        })
    }

    /// The embedded store: opens (or creates) the file at `path` and restores its keys,
    /// revision and leases; each lease gets a full TTL from now. Every acknowledged write is on
    /// disk. Must be called inside a tokio runtime.
    pub fn open(path: &Path) -> Result<LocalStore> {
        let (disk, restored) = Disk::open(path)?;
        let now = Instant::now();
        let mut leases: HashMap<LeaseId, Lease> = restored
            .leases
            .into_iter()
            .map(|(id, ttl)| {
                let keys = BTreeSet::new();
                (
                    id,
                    Lease {
                        ttl,
                        deadline: now + ttl,
                        keys,
                    },
                )
            })
            .collect();
        let mut orphans = Vec::new();
        for kv in restored.data.values().filter(|kv| kv.lease != 0) {
            match leases.get_mut(&kv.lease) {
                Some(lease) => {
                    lease.keys.insert(kv.key.clone());
                }
                None => orphans.push(Op::delete(kv.key.clone())),
            }
        }
        let mut state = State {
            revision: restored.revision,
            compacted: restored.revision,
            next_lease: restored.next_lease,
            data: restored.data,
            leases,
            history_limit: HISTORY,
            disk: Some(disk),
            ..State::default()
        };
        // Keys whose lease is gone (it was revoked in a write that did not finish) go the way
        // the lease went.
        if !orphans.is_empty() {
            state.commit(orphans)?;
        }
        Ok(LocalStore::start(state))
    }

    fn start(state: State) -> LocalStore {
        let state = Arc::new(Mutex::new(state));
        let lease_changed = Arc::new(Notify::new());
        let reaper = tokio::spawn(expire_leases(Arc::downgrade(&state), lease_changed.clone()));
        LocalStore {
            state,
            lease_changed,
            reaper,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is
        // computed first, then applied), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.reaper.abort();
        // Close the file now: the reaper task may hold the state a moment longer, and the
        // file must be free to open again as soon as this store is gone.
        drop(self.lock().disk.take());
    }
}

/// Deletes the keys of leases whose deadline has passed, sleeping until the next deadline.
async fn expire_leases(state: Weak<Mutex<State>>, lease_changed: Arc<Notify>) {
    loop {
        let next_deadline = {
            let Some(state) = state.upgrade() else { return };
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let expired: Vec<LeaseId> = state
                .leases
                .iter()
                .filter(|(_, lease)| lease.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let mut failed = false;
            for id in expired {
                if let Err(error) = state.revoke(id) {
                    tracing::warn!(lease = id, %error, "cannot expire lease; retrying in 1 s");
                    failed = true;
                }
            }
            let next = state.leases.values().map(|l| l.deadline).min();
            if failed {
                Some(now + Duration::from_secs(1))
            } else {
                next
            }
        };
        let wake = next_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = lease_changed.notified() => {}
        }
    }
}

impl State {
    /// Applies `ops` as one revision (written to disk first, when the store has one) and
    /// notifies watchers.
    fn commit(&mut self, ops: Vec<Op>) -> Result<()> {
        let revision = self.revision + 1;
        let changes = self.plan(ops, revision);
        self.persist(revision, &changes, None, None)?;
        self.apply(revision, changes);
        Ok(())
    }

    /// What `ops` do to the current data, without changing it. `check_txn` guarantees no key
    /// is written twice; a key under two deleted prefixes is deleted once.
    fn plan(&self, ops: Vec<Op>, revision: Revision) -> Vec<Change> {
        let mut deleted = BTreeSet::new();
        let mut changes = Vec::new();
        let mut delete = |key: &String, changes: &mut Vec<Change>| {
            if deleted.insert(key.clone()) {
                changes.push(Change::Delete(key.clone()));
            }
        };
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let create_revision = self
                        .data
                        .get(&key)
                        .map_or(revision, |kv| kv.create_revision);
                    changes.push(Change::Put(KeyValue {
                        key,
                        value,
                        create_revision,
                        mod_revision: revision,
                        lease: lease.unwrap_or(0),
                    }));
                }
                Op::Delete { key } => {
                    if self.data.contains_key(&key) {
                        delete(&key, &mut changes);
                    }
                }
                Op::DeletePrefix { prefix } => {
                    for key in self.keys_under(&prefix) {
                        delete(key, &mut changes);
                    }
                }
            }
        }
        changes
    }

    fn keys_under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.data
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
    }

    /// Writes a commit to disk before it becomes visible. A commit that changes nothing and
    /// touches no lease is not written (and takes no revision).
    fn persist(
        &self,
        revision: Revision,
        changes: &[Change],
        granted: Option<(LeaseId, Duration)>,
        revoked: Option<LeaseId>,
    ) -> Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        if changes.is_empty() && granted.is_none() && revoked.is_none() {
            return Ok(());
        }
        disk.write(DiskWrite {
            revision: if changes.is_empty() {
                self.revision
            } else {
                revision
            },
            next_lease: self.next_lease,
            changes,
            granted,
            revoked,
        })
    }

    fn apply(&mut self, revision: Revision, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Put(kv) => {
                    if let Some(old) = self.data.get(&kv.key).map(|old| old.lease) {
                        self.detach(old, &kv.key);
                    }
                    if let Some(attached) = self.leases.get_mut(&kv.lease) {
                        attached.keys.insert(kv.key.clone());
                    }
                    self.data.insert(kv.key.clone(), kv.clone());
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Change::Delete(key) => {
                    if let Some(old) = self.data.remove(&key) {
                        self.detach(old.lease, &key);
                    }
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: revision,
                            lease: 0,
                        },
                    });
                }
            }
        }
        self.revision = revision;
        let batch = WatchBatch { revision, events };
        self.notify(&batch);
        self.history.push_back(batch);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.revision;
            }
        }
    }

    fn detach(&mut self, lease: LeaseId, key: &str) {
        if let Some(lease) = self.leases.get_mut(&lease) {
            lease.keys.remove(key);
        }
    }

    /// Ends a lease and deletes its keys, as one revision.
    fn revoke(&mut self, id: LeaseId) -> Result<()> {
        let Some(lease) = self.leases.get(&id) else {
            return Ok(());
        };
        let revision = self.revision + 1;
        let changes: Vec<Change> = lease.keys.iter().cloned().map(Change::Delete).collect();
        self.persist(revision, &changes, None, Some(id))?;
        self.leases.remove(&id);
        self.apply(revision, changes);
        Ok(())
    }

    /// Sends the part of `batch` in each watcher's range; drops watchers that are gone or too
    /// far behind (their watch ends and they re-list).
    fn notify(&mut self, batch: &WatchBatch) {
        self.watchers.retain(|watcher| {
            let Some(part) = filter(batch, &watcher.range) else {
                return true;
            };
            watcher.sender.try_send(Ok(part)).is_ok()
        });
    }
}

fn filter(batch: &WatchBatch, range: &KeyRange) -> Option<WatchBatch> {
    let events: Vec<Event> = batch
        .events
        .iter()
        .filter(|e| range.contains(&e.kv.key))
        .cloned()
        .collect();
    (!events.is_empty()).then_some(WatchBatch {
        revision: batch.revision,
        events,
    })
}

/// Removes its watcher from the store when the `Watch` is dropped.
struct WatchGuard {
    state: Weak<Mutex<State>>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.watchers.retain(|w| w.id != self.id);
        }
    }
}

#[async_trait]
impl KvStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)> {
        let state = self.lock();
        let ranges = prefixes
            .iter()
            .map(|prefix| {
                state
                    .data
                    .range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv.clone())
                    .collect()
            })
            .collect();
        Ok((ranges, state.revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        check_txn(&compares, &ops)?;
        let mut state = self.lock();
        for op in &ops {
            if let Op::Put {
                lease: Some(lease), ..
            } = op
            {
                if !state.leases.contains_key(lease) {
                    return Err(RegistryError::LeaseNotFound(*lease));
                }
            }
        }
        let holds = compares.iter().all(|c| c.holds(state.data.get(c.key())));
        if holds {
            state.commit(ops)?;
        }
        Ok(TxnOutcome {
            succeeded: holds,
            revision: state.revision,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(RegistryError::Invalid(
                "a lease needs a TTL above zero".into(),
            ));
        }
        let id = {
            let mut state = self.lock();
            let id = state.next_lease;
            state.next_lease += 1;
            if let Err(e) = state.persist(state.revision, &[], Some((id, ttl)), None) {
                state.next_lease -= 1;
                return Err(e);
            }
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            id
        };
        self.lease_changed.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId, _within: Duration) -> Result<Option<Duration>> {
        let mut state = self.lock();
        Ok(state.leases.get_mut(&lease).map(|lease| {
            lease.deadline = Instant::now() + lease.ttl;
            lease.ttl
        }))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.lock().revoke(lease)
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let now = Instant::now();
        Ok(self
            .lock()
            .leases
            .get(&lease)
            .filter(|l| l.deadline > now)
            .map(|l| l.deadline - now))
    }

    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch> {
        let mut state = self.lock();
        if from != 0 && from <= state.compacted {
            return Err(RegistryError::Compacted {
                requested: from,
                compacted: state.compacted,
            });
        }
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        if from != 0 {
            for batch in state.history.iter().filter(|b| b.revision >= from) {
                if let Some(part) = filter(batch, range) {
                    if sender.try_send(Ok(part)).is_err() {
                        return Err(RegistryError::Compacted {
                            requested: from,
                            compacted: batch.revision,
                        });
                    }
                }
            }
        }
        let id = state.next_watcher;
        state.next_watcher += 1;
        state.watchers.push(Watcher {
            id,
            range: range.clone(),
            sender,
        });
        let guard = WatchGuard {
            state: Arc::downgrade(&self.state),
            id,
        };
        Ok(Watch::new(receiver, Box::new(guard)))
    }
}
