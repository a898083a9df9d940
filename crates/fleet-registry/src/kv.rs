//! The contract every backend implements: a small, etcd-v3-shaped key-value store with
//! revisions, atomic conditional transactions, leases and resumable prefix watches. The typed
//! registry ([`crate::Registry`]) is written once on top of it.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;

/// The store's logical clock: every committed change gets the next revision.
pub type Revision = i64;
/// A lease: keys attached to it vanish together when it expires or is revoked.
pub type LeaseId = i64;

/// The most operations (or compares) one transaction may hold: etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// The largest value a backend stores (etcd's request limit is 1.5 MiB, with room for keys).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// 0 when the key has no lease.
    pub lease: LeaseId,
}

/// A condition on one key, checked atomically with a transaction's operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last modified at this revision.
    ModRevision(String, Revision),
    /// The key exists and was created at this revision (same incarnation).
    CreateRevision(String, Revision),
    /// The key exists and holds exactly this value.
    Value(String, Vec<u8>),
}

impl Compare {
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent(k)
            | Compare::ModRevision(k, _)
            | Compare::CreateRevision(k, _)
            | Compare::Value(k, _) => k,
        }
    }

    /// Whether the condition holds for the key's current entry.
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        match (self, current) {
            (Compare::Absent(_), current) => current.is_none(),
            (Compare::ModRevision(_, rev), Some(kv)) => kv.mod_revision == *rev,
            (Compare::CreateRevision(_, rev), Some(kv)) => kv.create_revision == *rev,
            (Compare::Value(_, value), Some(kv)) => kv.value == *value,
            (_, None) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held and the operations were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged when it did not apply).
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a delete: the key, an empty value and the revision of the deletion.
    pub kv: KeyValue,
}

/// The events of one revision (or several consecutive ones), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A prefix watch. Yields batches in revision order; an `Err` ends it (the caller re-lists and
/// watches again from the revision it has seen). Dropping it cancels the watch.
pub struct Watch {
    receiver: mpsc::Receiver<Result<WatchBatch>>,
    _cancel: Box<dyn Send + Sync>,
}

impl Watch {
    /// Builds a watch from a channel fed by the backend and a guard whose drop stops the feed.
    pub fn new(
        receiver: mpsc::Receiver<Result<WatchBatch>>,
        cancel: Box<dyn Send + Sync>,
    ) -> Watch {
        Watch {
            receiver,
            _cancel: cancel,
        }
    }

    /// The next batch; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchBatch>> {
        self.receiver.recv().await
    }

    /// A batch that has already arrived, without waiting; `None` when there is none (or the
    /// watch has ended: `next` tells which).
    pub fn try_next(&mut self) -> Option<Result<WatchBatch>> {
        self.receiver.try_recv().ok()
    }

    /// One watch yielding the batches of all of `watches`. Batches of different watches may
    /// arrive out of revision order (each key still sees its own changes in order); the first
    /// error or end of any of them ends the merged watch.
    pub fn merge(watches: Vec<Watch>) -> Watch {
        let (sender, receiver) = mpsc::channel(watches.len().max(1) * 64);
        let tasks: Vec<AbortOnDrop> = watches
            .into_iter()
            .map(|mut watch| {
                let sender = sender.clone();
                AbortOnDrop(tokio::spawn(async move {
                    while let Some(batch) = watch.next().await {
                        let failed = batch.is_err();
                        if sender.send(batch).await.is_err() || failed {
                            return;
                        }
                    }
                    let ended = crate::RegistryError::Unavailable("a watch ended".into());
                    let _ = sender.send(Err(ended)).await;
                }))
            })
            .collect();
        Watch::new(receiver, Box::new(tasks))
    }
}

/// Stops a forwarding task (and so drops the watch it owns) when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The entry at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// The entry at `key` as the member answering has applied it, without a round of
    /// agreement: it may miss the latest writes, but it does not wait for the member to catch
    /// up with them (etcd answers a linearizable read only once it has applied everything
    /// committed, which under a burst of writes takes up to seconds). For content that never
    /// changes once written, a hit is as good as `get`; a miss must be asked again with `get`.
    async fn get_applied(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get(key).await
    }

    /// Every entry under each prefix, sorted by key, all read at one revision, which is
    /// returned: a consistent snapshot from which a watch can resume (`revision + 1`).
    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)>;

    /// Applies `ops` atomically if every compare holds. At most [`MAX_TXN_OPS`] of each, and
    /// no key written twice.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome>;

    /// A new lease that expires after `ttl` without a keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease to its full TTL; `None` when it no longer exists (expired or revoked).
    /// A networked store gives up (`Unavailable`) after `within`, so that the caller can try
    /// again before the lease runs out instead of waiting on one lost request.
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Option<Duration>>;

    /// Ends a lease now, deleting its keys. Revoking an unknown lease is not an error.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// The time left on a lease, `None` when it does not exist.
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>>;

    /// Whether this process alone writes the store (the embedded one, whose file it holds
    /// locked): then a machine's lease found in it was granted to an earlier run of this very
    /// fleetd, never to another live one.
    fn exclusive(&self) -> bool {
        false
    }

    /// Watches every key in `range` from revision `from` on (0: from now).
    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch>;

    /// Watches every key under `prefix` from revision `from` on (0: from now).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        self.watch_range(&KeyRange::prefix(prefix), from).await
    }
}

/// The keys from `start` (included) to `end` (excluded; `None`: to the last key), as etcd's
/// ranges are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: String,
    pub end: Option<String>,
}

impl KeyRange {
    /// Every key that begins with `prefix`.
    pub fn prefix(prefix: &str) -> KeyRange {
        KeyRange {
            start: prefix.to_owned(),
            end: prefix_end(prefix),
        }
    }

    /// From the first key under `first` to the last under `last`.
    pub fn spanning(first: &str, last: &str) -> KeyRange {
        KeyRange {
            start: first.to_owned(),
            end: prefix_end(last),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        key >= self.start.as_str() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// The least key after every key that begins with `prefix` (its last character, one up);
/// `None` for the empty prefix, which every key begins with.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Checks what every backend must refuse alike, before it touches anything.
pub fn check_txn(compares: &[Compare], ops: &[Op]) -> Result<()> {
    use crate::error::RegistryError;
    if compares.len() > MAX_TXN_OPS || ops.len() > MAX_TXN_OPS {
        return Err(RegistryError::Invalid(format!(
            "a transaction holds at most {MAX_TXN_OPS} compares and {MAX_TXN_OPS} operations \
             (got {} and {})",
            compares.len(),
            ops.len()
        )));
    }
    let mut written = std::collections::HashSet::new();
    for op in ops {
        let key = match op {
            Op::Put { key, value, .. } if value.len() > MAX_VALUE_BYTES => {
                return Err(RegistryError::TooLarge {
                    key: key.clone(),
                    size: value.len(),
                    max: MAX_VALUE_BYTES,
                });
            }
            Op::Put { key, .. } | Op::Delete { key } => key,
            Op::DeletePrefix { .. } => continue,
        };
        if !written.insert(key.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "key {key} written twice in one transaction"
            )));
        }
    }
    // etcd refuses a put inside a range the same transaction deletes; so do we, everywhere.
    for op in ops {
        if let Op::DeletePrefix { prefix } = op {
            if let Some(key) = ops.iter().find_map(|op| match op {
                Op::Put { key, .. } if key.starts_with(prefix.as_str()) => Some(key),
                _ => None,
            }) {
                return Err(RegistryError::Invalid(format!(
                    "key {key} is written and deleted (prefix {prefix}) in one transaction"
                )));
            }
        }
    }
    Ok(())
}

/// A store's own ceiling for the benchmarks: keys written per second as transactions of
/// [`MAX_TXN_OPS`] plain puts (100-byte values under `ceiling/`), back to back, about `keys`
/// of them.
pub async fn batched_put_rate(store: &dyn KvStore, keys: usize) -> Result<f64> {
    let value = vec![b'x'; 100];
    let started = std::time::Instant::now();
    let batches = keys.div_ceil(MAX_TXN_OPS);
    for batch in 0..batches {
        let ops = (0..MAX_TXN_OPS)
            .map(|i| Op::put(format!("ceiling/{batch}/{i}"), value.clone()))
            .collect();
        store.txn(vec![], ops).await?;
    }
    Ok((batches * MAX_TXN_OPS) as f64 / started.elapsed().as_secs_f64())
}

/// A store's ceiling for many small writers (agents reporting states): transactions per second
/// of one 100-byte put each, `writers` of them in flight at once, `txns` in all.
pub async fn small_txn_rate(store: &dyn KvStore, txns: usize, writers: usize) -> Result<f64> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let value = vec![b'x'; 100];
    let started = std::time::Instant::now();
    stream::iter(0..txns)
        .map(|i| {
            let op = Op::put(format!("ceiling/small/{i}"), value.clone());
            async move { store.txn(vec![], vec![op]).await }
        })
        .buffer_unordered(writers.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(txns as f64 / started.elapsed().as_secs_f64())
}
