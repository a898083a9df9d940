//! A snapshot of one scope kept current by a background task that owns its watch, shared by
//! any number of readers (kube-runtime's reflector, with the snapshot consistent at one
//! revision rather than per object).
//!
//! Readers either borrow the snapshot for a moment ([`Reflector::read`]) or hold an
//! `Arc<Snapshot>` ([`Reflector::snapshot`]). The task applies each change in place
//! (`Arc::make_mut`): it copies the snapshot only when a reader still holds the revision it
//! is about to change, so a reader that borrows costs nothing and one that holds costs one
//! copy per change it outlives, however often it asks.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{RegistryError, Result};
use crate::kv::{Revision, Watch, WatchBatch};
use crate::registry::{Registry, Scope};
use crate::snapshot::Snapshot;

/// The first pause before re-listing after a broken watch, doubled up to [`RELIST_MAX`].
const RELIST_MIN: Duration = Duration::from_millis(100);
const RELIST_MAX: Duration = Duration::from_secs(2);

pub struct Reflector {
    shared: Arc<Mutex<Arc<Snapshot>>>,
    progress: watch::Receiver<Progress>,
    _task: AbortOnDrop,
}

/// How far the task has followed the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Every change up to this revision is in the snapshot.
    revision: Revision,
    /// Whether the watch runs. While it is broken the snapshot stands still until the task
    /// has re-listed, however far the registry has moved.
    following: bool,
}

impl Registry {
    /// Follows `scope` from now on in a task of its own, until the reflector is dropped. Only
    /// for a scope watched as one stream (the engine's, the whole registry's), whose
    /// revision says that every change up to it has been seen.
    pub async fn reflect(&self, scope: Scope) -> Result<Reflector> {
        if !scope.is_ordered() {
            return Err(RegistryError::Invalid(format!(
                "{scope:?} is not watched in revision order; follow it with a view"
            )));
        }
        let snapshot = self.snapshot(&scope).await?;
        let watch = self.watch(&scope, snapshot.revision + 1).await?;
        let (progress, receiver) = watch::channel(Progress {
            revision: snapshot.revision,
            following: true,
        });
        let shared = Arc::new(Mutex::new(Arc::new(snapshot)));
        let follower = Follower {
            registry: self.clone(),
            scope,
            shared: Arc::clone(&shared),
            progress,
        };
        let task = tokio::spawn(follower.run(watch));
        Ok(Reflector {
            shared,
            progress: receiver,
            _task: AbortOnDrop(task),
        })
    }
}

impl Reflector {
    /// Calls `read` with the snapshot as it is now, holding it for no longer than that.
    pub fn read<T>(&self, read: impl FnOnce(&Snapshot) -> T) -> T {
        read(&lock(&self.shared))
    }

    /// The snapshot as it is now, to hold for longer (across an await, a listing's pages).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&lock(&self.shared))
    }

    /// The revision every change up to which the snapshot reflects.
    pub fn revision(&self) -> Revision {
        self.progress.borrow().revision
    }

    /// Whether its watch runs: while it is broken (until the task has re-listed) the snapshot
    /// stands still, however far the registry moves.
    pub fn is_following(&self) -> bool {
        self.progress.borrow().following
    }

    /// Waits, at most `within`, until the snapshot reflects every change up to `revision`;
    /// whether it does. A broken watch does not count as caught up until it has re-listed.
    pub async fn caught_up(&self, revision: Revision, within: Duration) -> bool {
        let mut progress = self.progress.clone();
        let reached = async {
            progress
                .wait_for(|p| p.following && p.revision >= revision)
                .await
                .is_ok()
        };
        tokio::time::timeout(within, reached).await == Ok(true)
    }
}

/// The task behind a reflector.
struct Follower {
    registry: Registry,
    scope: Scope,
    shared: Arc<Mutex<Arc<Snapshot>>>,
    progress: watch::Sender<Progress>,
}

impl Follower {
    async fn run(self, mut watch: Watch) {
        loop {
            let first = match watch.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, scope = ?self.scope, "the registry watch broke; re-listing");
                    watch = self.relist().await;
                    continue;
                }
                None => {
                    watch = self.relist().await;
                    continue;
                }
            };
            // What else has arrived is applied with it: one copy at most, one wake-up.
            let mut batches = vec![first];
            let mut broken = false;
            while let Some(next) = watch.try_next() {
                match next {
                    Ok(batch) => batches.push(batch),
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            let revision = self.apply(&batches);
            self.progress.send_replace(Progress {
                revision,
                following: true,
            });
            if broken {
                watch = self.relist().await;
            }
        }
    }

    fn apply(&self, batches: &[WatchBatch]) -> Revision {
        let mut shared = lock(&self.shared);
        let snapshot = Arc::make_mut(&mut shared);
        for batch in batches {
            snapshot.apply(&batch.events);
            snapshot.revision = snapshot.revision.max(batch.revision);
        }
        snapshot.revision
    }

    /// Reads the scope again and watches on from there, retrying with a growing pause until
    /// the registry answers; readers wait (bounded, by their own timeouts) meanwhile.
    async fn relist(&self) -> Watch {
        self.progress.send_modify(|p| p.following = false);
        let mut pause = RELIST_MIN;
        loop {
            let listed = async {
                let snapshot = self.registry.snapshot(&self.scope).await?;
                let watch = self
                    .registry
                    .watch(&self.scope, snapshot.revision + 1)
                    .await?;
                Ok::<_, RegistryError>((snapshot, watch))
            };
            match listed.await {
                Ok((snapshot, watch)) => {
                    let revision = snapshot.revision;
                    *lock(&self.shared) = Arc::new(snapshot);
                    self.progress.send_replace(Progress {
                        revision,
                        following: true,
                    });
                    return watch;
                }
                Err(e) => {
                    tracing::warn!(error = %e, scope = ?self.scope, retry_in = ?pause, "cannot re-list the registry");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RELIST_MAX);
                }
            }
        }
    }
}

/// The lock is only ever held to apply a change or to read: a reader that panicked left a
/// whole snapshot behind, which stays good to read.
fn lock(shared: &Mutex<Arc<Snapshot>>) -> MutexGuard<'_, Arc<Snapshot>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
