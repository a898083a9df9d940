//! One watcher task per live shim: it holds the shim's `watch` connection open, keeps the
//! latest status it was sent, and rings a bell at every change and when the shim goes. The
//! agent then publishes states when they change instead of asking every shim twice a second,
//! so an idle machine costs nothing however many units it runs.
//!
//! The same table remembers the status of a unit that has no shim (never started, stopped,
//! failed), read from its run directory once: the agent asks for every unit's state at every
//! report, and a thousand units starting would otherwise have each report read a thousand
//! run directories. What was read is kept only if nothing happened to the unit meanwhile
//! (each change of a unit's slot takes a new epoch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fleet_unit::UnitName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::shim::connect;
use super::status::UnitStatus;

/// What the table knows of a unit.
#[derive(Debug, Clone)]
enum Known {
    /// A live shim (its PID: a unit restarted has a new shim and a new watcher) and the last
    /// status it sent, once it has sent one.
    Watched {
        shim: u32,
        status: Option<UnitStatus>,
    },
    /// No shim, and what its run directory said (`None`: it has no status, never started).
    Settled(Option<UnitStatus>),
    /// A shim is being started; what the unit was before, until the shim has reported.
    Starting(Option<UnitStatus>),
    /// Nothing yet, or no longer: its run directory must be read.
    Unknown,
}

#[derive(Debug, Clone)]
struct Slot {
    /// Taken anew at every change of the slot, from one counter for all units.
    epoch: u64,
    known: Known,
}

/// What is known of a unit without looking at its run directory.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A live shim is watched; its last status, if it sent one.
    Watched(Option<UnitStatus>),
    /// No shim; its last status as read before.
    Settled(Option<UnitStatus>),
    /// Its run directory must be read; hand what it says to [`ShimWatchers::settle`] with
    /// this epoch.
    Unknown(u64),
}

type Table = Arc<Mutex<BTreeMap<UnitName, Slot>>>;

pub struct ShimWatchers {
    table: Table,
    epochs: Arc<AtomicU64>,
    changes: Arc<watch::Sender<()>>,
}

impl Default for ShimWatchers {
    fn default() -> ShimWatchers {
        ShimWatchers {
            table: Table::default(),
            epochs: Arc::new(AtomicU64::new(1)),
            changes: Arc::new(watch::channel(()).0),
        }
    }
}

impl ShimWatchers {
    /// Told at every change of a watched unit's status and whenever a watched shim ends.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// Starts watching the shim `shim` of `name` (run directory `dir`), unless it is watched
    /// already; `status` is what the shim wrote first, if the caller read it. Outside a tokio
    /// runtime nothing is watched: callers then poll.
    pub fn watch(&self, name: &UnitName, dir: PathBuf, shim: u32, status: Option<UnitStatus>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut table = lock(&self.table);
            if let Some(Slot {
                known: Known::Watched { shim: watched, .. },
                ..
            }) = table.get(name)
            {
                if *watched == shim {
                    return;
                }
            }
            let epoch = self.epoch();
            table.insert(
                name.clone(),
                Slot {
                    epoch,
                    known: Known::Watched { shim, status },
                },
            );
        }
        let (table, changes, name) = (self.table.clone(), self.changes.clone(), name.clone());
        let epochs = self.epochs.clone();
        runtime.spawn(async move {
            follow(&dir, |status| {
                if let Some(Slot {
                    known:
                        Known::Watched {
                            shim: watched,
                            status: last,
                        },
                    ..
                }) = lock(&table).get_mut(&name)
                {
                    if *watched == shim {
                        *last = Some(status);
                    }
                }
                changes.send_replace(());
            })
            .await;
            forget(&table, &epochs, &name, shim);
            changes.send_replace(());
        });
    }

    /// Whether the unit has a live shim being watched, and it is up or on its way (before
    /// its first status line, a live shim is on its way); `None` when it is not watched.
    pub fn is_live(&self, name: &UnitName) -> Option<bool> {
        match &lock(&self.table).get(name)?.known {
            Known::Watched { status, .. } => Some(status.as_ref().is_none_or(|s| s.sub.is_live())),
            Known::Settled(_) | Known::Starting(_) | Known::Unknown => None,
        }
    }

    /// What is known of the unit, without reading its run directory.
    pub fn lookup(&self, name: &UnitName) -> Lookup {
        let mut table = lock(&self.table);
        match table.get(name) {
            Some(Slot {
                known: Known::Watched { status, .. },
                ..
            }) => Lookup::Watched(status.clone()),
            Some(Slot {
                known: Known::Settled(status) | Known::Starting(status),
                ..
            }) => Lookup::Settled(status.clone()),
            Some(Slot {
                epoch,
                known: Known::Unknown,
            }) => Lookup::Unknown(*epoch),
            None => {
                let epoch = self.epoch();
                table.insert(
                    name.clone(),
                    Slot {
                        epoch,
                        known: Known::Unknown,
                    },
                );
                Lookup::Unknown(epoch)
            }
        }
    }

    /// Remembers what the run directory of a unit without a shim said, read after
    /// [`ShimWatchers::lookup`] gave `epoch`; unless the unit's slot changed since.
    pub fn settle(&self, name: &UnitName, epoch: u64, status: Option<UnitStatus>) {
        let mut table = lock(&self.table);
        if let Some(slot) = table.get_mut(name) {
            if slot.epoch == epoch && matches!(slot.known, Known::Unknown) {
                slot.known = Known::Settled(status);
            }
        }
    }

    /// A shim is being started for the unit, which was `before`: until it has reported (and
    /// is watched) or the start has failed ([`ShimWatchers::invalidate`]), the unit is what
    /// it was, not what a half-written run directory says.
    pub fn starting(&self, name: &UnitName, before: Option<UnitStatus>) {
        let epoch = self.epoch();
        lock(&self.table).insert(
            name.clone(),
            Slot {
                epoch,
                known: Known::Starting(before),
            },
        );
    }

    /// The unit's run directory is about to change (a start, a stop, a state written): what
    /// was read of it no longer holds. A watched shim stays watched.
    pub fn invalidate(&self, name: &UnitName) {
        if let Some(slot) = lock(&self.table).get_mut(name) {
            if !matches!(slot.known, Known::Watched { .. }) {
                slot.reset(&self.epochs);
            }
        }
    }

    /// Forgets the unit altogether (unloaded).
    pub fn remove(&self, name: &UnitName) {
        lock(&self.table).remove(name);
    }

    /// Drops what is known of the shim `shim` of `name`, which has ended: its watcher may not
    /// have seen the end yet, and a status it kept must not outlive the shim.
    pub fn forget(&self, name: &UnitName, shim: u32) {
        forget(&self.table, &self.epochs, name, shim);
    }

    fn epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed)
    }
}

fn forget(table: &Table, epochs: &AtomicU64, name: &UnitName, shim: u32) {
    if let Some(slot) = lock(table).get_mut(name) {
        if matches!(slot.known, Known::Watched { shim: watched, .. } if watched == shim) {
            slot.reset(epochs);
        }
    }
}

impl Slot {
    /// Nothing known any more: the run directory is read next, under a new epoch.
    fn reset(&mut self, epochs: &AtomicU64) {
        self.epoch = epochs.fetch_add(1, Ordering::Relaxed);
        self.known = Known::Unknown;
    }
}

fn lock(table: &Table) -> MutexGuard<'_, BTreeMap<UnitName, Slot>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands every status line of the shim's `watch` stream to `sent`, until the shim closes it.
async fn follow(dir: &Path, mut sent: impl FnMut(UnitStatus)) {
    let Ok(mut stream) = connect(dir).await else {
        return;
    };
    if stream.write_all(b"watch\n").await.is_err() {
        return;
    }
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(status) = serde_json::from_str::<UnitStatus>(&line) {
            sent(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SubState;

    fn status(sub: SubState) -> UnitStatus {
        UnitStatus {
            sub,
            ..UnitStatus::initial("2026-12-07T00:00:00Z".to_owned())
        }
    }

    /// One step on the table for unit `a`, then what a lookup of it gives.
    enum Step {
        /// Looks the unit up, reads "its run directory" (`sub`) and settles it with the epoch
        /// the lookup gave, after the steps nested in `meanwhile` ran.
        ReadAndSettle(SubState, Vec<Step>),
        Starting(Option<SubState>),
        Invalidate,
        Remove,
    }

    fn apply(watchers: &ShimWatchers, name: &UnitName, step: &Step) {
        match step {
            Step::ReadAndSettle(sub, meanwhile) => {
                if let Lookup::Unknown(epoch) = watchers.lookup(name) {
                    for step in meanwhile {
                        apply(watchers, name, step);
                    }
                    watchers.settle(name, epoch, Some(status(*sub)));
                }
            }
            Step::Starting(before) => watchers.starting(name, before.map(status)),
            Step::Invalidate => watchers.invalidate(name),
            Step::Remove => watchers.remove(name),
        }
    }

    fn check(steps: Vec<Step>, expected: Lookup) {
        let watchers = ShimWatchers::default();
        let name = UnitName::new("a.service").unwrap();
        for step in &steps {
            apply(&watchers, &name, step);
        }
        let found = match watchers.lookup(&name) {
            // Epochs are the table's own business: only that it is unknown matters.
            Lookup::Unknown(_) => Lookup::Unknown(0),
            other => other,
        };
        assert_eq!(found, expected);
    }

    #[test]
    fn a_status_read_is_kept_only_when_nothing_happened_to_the_unit_meanwhile() {
        use Step::*;
        use SubState::*;
        // Nothing known: the run directory must be read.
        check(vec![], Lookup::Unknown(0));
        // Read once, then known without reading.
        check(
            vec![ReadAndSettle(Dead, vec![])],
            Lookup::Settled(Some(status(Dead))),
        );
        // A start (or a state written) while it was read: what was read is stale.
        check(
            vec![ReadAndSettle(Dead, vec![Invalidate])],
            Lookup::Unknown(0),
        );
        check(
            vec![ReadAndSettle(Dead, vec![Starting(Some(Failed))])],
            Lookup::Settled(Some(status(Failed))),
        );
        // Unloaded and asked about again while it was read.
        check(
            vec![ReadAndSettle(Dead, vec![Remove, Invalidate])],
            Lookup::Unknown(0),
        );
        // Something happened after it was settled: read again.
        check(
            vec![ReadAndSettle(Dead, vec![]), Invalidate],
            Lookup::Unknown(0),
        );
        // A start in progress shows what the unit was, and no read replaces it.
        check(
            vec![Starting(Some(Failed)), ReadAndSettle(Running, vec![])],
            Lookup::Settled(Some(status(Failed))),
        );
        check(vec![Starting(None), Invalidate], Lookup::Unknown(0));
    }
}
