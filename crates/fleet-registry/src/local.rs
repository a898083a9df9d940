//! The single-node store behind the in-memory and the embedded backends: the whole keyspace in
//! a `BTreeMap`, a revision counter, leases with deadlines on the tokio clock, and a bounded
//! history from which watches resume. The embedded store adds a redb file ([`crate::disk`])
//! that every commit is written to before it becomes visible.
//!
//! One write at a time (`Inner::writer`, an async lock): a commit is planned under the state's
//! lock, written to disk on a blocking thread without it (readers, keep-alives and watches go
//! on meanwhile; no runtime thread waits for an fsync), then applied under the lock again.
//! Since no other write runs in between, what was planned still holds when it is applied.

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
    inner: Arc<Inner>,
    reaper: tokio::task::JoinHandle<()>,
}

struct Inner {
    state: Mutex<State>,
    /// Held for the whole of a write: plan, disk, apply.
    writer: tokio::sync::Mutex<()>,
    /// The embedded store's file; taken when the store is dropped, to close it.
    disk: Mutex<Option<Arc<Disk>>>,
    lease_changed: Notify,
}

/// One commit, planned: what it changes, and the lease it grants or revokes.
struct Commit {
    /// The commit's revision; the current one when it changes no key (a lease grant).
    revision: Revision,
    next_lease: LeaseId,
    changes: Vec<Change>,
    granted: Option<(LeaseId, Duration)>,
    revoked: Option<LeaseId>,
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
        let state = State {
            revision: 1,
            next_lease: 1,
            history_limit: history,
            ..State::default()
        };
        LocalStore::start(state, None)
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
            ..State::default()
        };
        // Keys whose lease is gone (it was revoked in a write that did not finish) go the way
        // the lease went (before anything can read, so written here and now).
        if !orphans.is_empty() {
            let commit = state.plan_ops(orphans);
            disk.write(commit.disk_write())?;
            state.apply(commit);
        }
        Ok(LocalStore::start(state, Some(disk)))
    }

    fn start(state: State, disk: Option<Disk>) -> LocalStore {
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            writer: tokio::sync::Mutex::new(()),
            disk: Mutex::new(disk.map(Arc::new)),
            lease_changed: Notify::new(),
        });
        let reaper = tokio::spawn(expire_leases(Arc::downgrade(&inner)));
        LocalStore { inner, reaper }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is
        // computed first, then applied), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `commit` to disk (when the store has one) on a blocking thread, then applies
    /// it. The caller holds `writer` and planned `commit` under it.
    async fn commit(&self, commit: Commit) -> Result<()> {
        let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let commit = match disk {
            Some(disk) if !commit.is_empty() => {
                let written = tokio::task::spawn_blocking(move || {
                    disk.write(commit.disk_write()).map(|()| commit)
                });
                written.await.map_err(|e| {
                    RegistryError::Unavailable(format!("the registry file's writer failed: {e}"))
                })??
            }
            _ => commit,
        };
        self.lock().apply(commit);
        Ok(())
    }

    /// Ends a lease and deletes its keys, as one revision.
    async fn revoke(&self, id: LeaseId) -> Result<()> {
        let _writing = self.writer.lock().await;
        let Some(commit) = self.lock().plan_revoke(id) else {
            return Ok(());
        };
        self.commit(commit).await
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.reaper.abort();
        // Close the file now (a write under way keeps it until it ends): the reaper task may
        // hold the store a moment longer, and the file must be free to open again as soon as
        // this store is gone.
        drop(
            self.inner
                .disk
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }
}

impl Commit {
    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.granted.is_none() && self.revoked.is_none()
    }

    fn disk_write(&self) -> DiskWrite<'_> {
        DiskWrite {
            revision: self.revision,
            next_lease: self.next_lease,
            changes: &self.changes,
            granted: self.granted,
            revoked: self.revoked,
        }
    }
}

/// Deletes the keys of leases whose deadline has passed, sleeping until the next deadline.
async fn expire_leases(inner: Weak<Inner>) {
    loop {
        let Some(store) = inner.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<LeaseId> = store
            .lock()
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut failed = false;
        for id in expired {
            // Renewed while the ones before it were revoked: it lives on.
            let still_expired = store
                .lock()
                .leases
                .get(&id)
                .is_some_and(|lease| lease.deadline <= Instant::now());
            if !still_expired {
                continue;
            }
            if let Err(error) = store.revoke(id).await {
                tracing::warn!(lease = id, %error, "cannot expire lease; retrying in 1 s");
                failed = true;
            }
        }
        let next = store.lock().leases.values().map(|l| l.deadline).min();
        let wake = match failed {
            true => Instant::now() + Duration::from_secs(1),
            false => next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        };
        // The store aborts its reaper when dropped, so holding it while asleep is no leak.
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = store.lease_changed.notified() => {}
        }
    }
}

impl State {
    /// A commit of `changes` on the current state: the next revision when it changes a key,
    /// the current one otherwise (a lease alone takes no revision).
    fn commit_of(&self, changes: Vec<Change>) -> Commit {
        Commit {
            revision: self.revision + i64::from(!changes.is_empty()),
            next_lease: self.next_lease,
            changes,
            granted: None,
            revoked: None,
        }
    }

    /// `ops` planned as the next revision.
    fn plan_ops(&self, ops: Vec<Op>) -> Commit {
        self.commit_of(self.plan(ops, self.revision + 1))
    }

    /// The end of lease `id` (and of its keys), planned; `None` when it is gone already.
    fn plan_revoke(&self, id: LeaseId) -> Option<Commit> {
        let lease = self.leases.get(&id)?;
        let changes = lease.keys.iter().cloned().map(Change::Delete).collect();
        Some(Commit {
            revoked: Some(id),
            ..self.commit_of(changes)
        })
    }

    /// A new lease of `ttl`, planned: its ID and the commit.
    fn plan_grant(&self, ttl: Duration) -> (LeaseId, Commit) {
        let id = self.next_lease;
        let commit = Commit {
            next_lease: id + 1,
            granted: Some((id, ttl)),
            ..self.commit_of(Vec::new())
        };
        (id, commit)
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

    fn apply(&mut self, commit: Commit) {
        if let Some((id, ttl)) = commit.granted {
            self.next_lease = self.next_lease.max(id + 1);
            self.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        if let Some(id) = commit.revoked {
            self.leases.remove(&id);
        }
        let Commit {
            revision, changes, ..
        } = commit;
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
    store: Weak<Inner>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(store) = self.store.upgrade() {
            store.lock().watchers.retain(|w| w.id != self.id);
        }
    }
}

#[async_trait]
impl KvStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().data.get(key).cloned())
    }

    /// The file is this process's alone (redb locks it); a store in memory may be shared
    /// by several registries of one process (tests), so it is not.
    fn exclusive(&self) -> bool {
        self.inner
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
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
        let _writing = self.inner.writer.lock().await;
        let commit = {
            let state = self.lock();
            let unknown_lease = ops.iter().find_map(|op| match op {
                Op::Put {
                    lease: Some(lease), ..
                } if !state.leases.contains_key(lease) => Some(*lease),
                _ => None,
            });
            if let Some(lease) = unknown_lease {
                return Err(RegistryError::LeaseNotFound(lease));
            }
            if !compares.iter().all(|c| c.holds(state.data.get(c.key()))) {
                return Ok(TxnOutcome {
                    succeeded: false,
                    revision: state.revision,
                });
            }
            state.plan_ops(ops)
        };
        let revision = commit.revision;
        self.inner.commit(commit).await?;
        Ok(TxnOutcome {
            succeeded: true,
            revision,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(RegistryError::Invalid(
                "a lease needs a TTL above zero".into(),
            ));
        }
        let _writing = self.inner.writer.lock().await;
        let (id, commit) = self.lock().plan_grant(ttl);
        self.inner.commit(commit).await?;
        self.inner.lease_changed.notify_one();
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
        self.inner.revoke(lease).await
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
            store: Arc::downgrade(&self.inner),
            id,
        };
        Ok(Watch::new(receiver, Box::new(guard)))
    }
}
