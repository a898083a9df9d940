//! A snapshot of one scope kept current by a background task that owns its [`Feed`], shared by
//! any number of readers (kube-runtime's reflector, with the snapshot consistent at one
//! revision rather than per object). The engine, the agent and the API follow the registry
//! through it: since the task alone awaits the watch and re-lists, a reader's other work
//! (timers, jobs, requests) can never cancel a listing half done.
//!
//! Readers either borrow the snapshot for a moment ([`Reflector::read`]) or hold an
//! `Arc<Snapshot>` ([`Reflector::snapshot`]), and wait for changes with [`Changes::next`]. The
//! task applies each change in place (`Arc::make_mut`): it copies the snapshot only when a
//! reader still holds the revision it is about to change, so a reader that borrows costs
//! nothing and one that holds costs one copy per change it outlives, however often it asks.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::error::Result;
use crate::kv::Revision;
use crate::registry::Registry;
use crate::snapshot::Snapshot;
use crate::view::{Feed, Scope, Update};

/// The first pause before re-listing after a broken watch, doubled up to [`RELIST_MAX`].
const RELIST_MIN: Duration = Duration::from_millis(100);
const RELIST_MAX: Duration = Duration::from_secs(2);

pub struct Reflector {
    shared: Arc<Mutex<Arc<Snapshot>>>,
    progress: watch::Receiver<Progress>,
    relist: Arc<Notify>,
    _task: AbortOnDrop,
}

/// How far the task has followed the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Every change up to this revision is in the snapshot (for a scope that is not ordered,
    /// an agent's: the revision of the last listing).
    revision: Revision,
    /// Whether the watch runs. While it is broken the snapshot stands still until the task
    /// has re-listed, however far the registry has moved.
    following: bool,
    /// Listings made so far: a refresh waits for the next one.
    listings: u64,
}

/// A reader's wake-ups: see [`Reflector::changes`].
pub struct Changes {
    progress: watch::Receiver<Progress>,
}

impl Changes {
    /// Waits until the snapshot changed (or the watch broke) since the last call; whether the
    /// reflector follows the registry now. Cancel-safe: nothing is lost by dropping the call.
    pub async fn next(&mut self) -> bool {
        // The sender lives as long as the reflector's task, which lives as long as the
        // reflector: an error means the reflector is being dropped.
        if self.progress.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.progress.borrow_and_update().following
    }
}

impl Registry {
    /// Follows `scope` from now on in a task of its own, until the reflector is dropped. Fails
    /// only when the first listing does (the caller decides whether to retry); later failures
    /// are the task's to recover from.
    pub async fn reflect(&self, scope: Scope) -> Result<Reflector> {
        let mut feed = self.feed(scope);
        let snapshot = feed.listing().await?;
        let (progress, receiver) = watch::channel(Progress {
            revision: snapshot.revision,
            following: true,
            listings: 1,
        });
        let shared = Arc::new(Mutex::new(Arc::new(snapshot)));
        let relist = Arc::new(Notify::new());
        let follower = Follower {
            shared: Arc::clone(&shared),
            progress,
            relist: Arc::clone(&relist),
        };
        let task = tokio::spawn(follower.run(feed));
        Ok(Reflector {
            shared,
            progress: receiver,
            relist,
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

    /// Wake-ups for one reader, from now on.
    pub fn changes(&self) -> Changes {
        let mut progress = self.progress.clone();
        progress.mark_unchanged();
        Changes { progress }
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
        self.until(within, |p| p.following && p.revision >= revision)
            .await
    }

    /// Has the task list the scope afresh, and waits for that, at most `within`: whether the
    /// snapshot now reflects every write made before this call (a watch may still be
    /// catching up after an outage).
    pub async fn refresh(&self, within: Duration) -> bool {
        let listed = self.progress.borrow().listings;
        self.relist.notify_one();
        self.until(within, |p| p.following && p.listings > listed)
            .await
    }

    async fn until(&self, within: Duration, reached: impl FnMut(&Progress) -> bool) -> bool {
        let mut progress = self.progress.clone();
        let reached = async { progress.wait_for(reached).await.is_ok() };
        tokio::time::timeout(within, reached).await == Ok(true)
    }
}

/// The task behind a reflector.
struct Follower {
    shared: Arc<Mutex<Arc<Snapshot>>>,
    progress: watch::Sender<Progress>,
    relist: Arc<Notify>,
}

impl Follower {
    async fn run(self, mut feed: Feed) {
        let mut pause = RELIST_MIN;
        loop {
            let update = tokio::select! {
                update = feed.next() => update,
                // A listing under way is cut short and made again: it is what was asked for.
                () = self.relist.notified() => {
                    feed.relist_next();
                    continue;
                }
            };
            match update {
                Ok(Update::Batches(batches)) => {
                    let revision = {
                        let mut shared = lock(&self.shared);
                        let snapshot = Arc::make_mut(&mut shared);
                        feed.apply(snapshot, &batches);
                        snapshot.revision
                    };
                    self.progress.send_modify(|p| {
                        p.revision = revision;
                        p.following = true;
                    });
                }
                Ok(Update::Relisted(snapshot)) => {
                    let revision = snapshot.revision;
                    *lock(&self.shared) = Arc::from(snapshot);
                    self.progress.send_modify(|p| {
                        p.revision = revision;
                        p.following = true;
                        p.listings += 1;
                    });
                    pause = RELIST_MIN;
                }
                Err(error) => {
                    tracing::warn!(%error, scope = ?feed.scope(), retry_in = ?pause, "the registry watch broke; re-listing");
                    self.progress.send_modify(|p| p.following = false);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.relist.notified() => {}
                    }
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
