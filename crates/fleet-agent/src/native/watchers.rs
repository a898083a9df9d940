//! One watcher task per live shim: it holds the shim's `watch` connection open, keeps the
//! latest status it was sent, and rings a bell at every change and when the shim goes. The
//! agent then publishes states when they change instead of asking every shim twice a second,
//! so an idle machine costs nothing however many units it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fleet_unit::UnitName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::shim::connect;
use super::status::UnitStatus;

/// What a watcher knows of its shim: which shim (its PID: a unit restarted has a new shim and
/// a new watcher), and the last status it sent, once it has sent one.
#[derive(Debug, Clone)]
struct Watched {
    shim: u32,
    status: Option<UnitStatus>,
}

type Table = Arc<Mutex<BTreeMap<UnitName, Watched>>>;

pub struct ShimWatchers {
    table: Table,
    changes: Arc<watch::Sender<()>>,
}

impl Default for ShimWatchers {
    fn default() -> ShimWatchers {
        ShimWatchers {
            table: Table::default(),
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
    /// already. Outside a tokio runtime nothing is watched: callers then poll.
    pub fn watch(&self, name: &UnitName, dir: PathBuf, shim: u32) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut table = lock(&self.table);
            if table.get(name).is_some_and(|w| w.shim == shim) {
                return;
            }
            table.insert(name.clone(), Watched { shim, status: None });
        }
        let (table, changes, name) = (self.table.clone(), self.changes.clone(), name.clone());
        runtime.spawn(async move {
            follow(&dir, |status| {
                if let Some(watched) = lock(&table).get_mut(&name).filter(|w| w.shim == shim) {
                    watched.status = Some(status);
                }
                changes.send_replace(());
            })
            .await;
            forget(&table, &name, shim);
            changes.send_replace(());
        });
    }

    /// Whether the unit has a live shim being watched, and it is up or on its way (before
    /// its first status line, a live shim is on its way); `None` when it is not watched.
    pub fn is_live(&self, name: &UnitName) -> Option<bool> {
        let table = lock(&self.table);
        let watched = table.get(name)?;
        Some(watched.status.as_ref().is_none_or(|s| s.sub.is_live()))
    }

    /// The latest status the live shim of `name` sent, if it is watched.
    pub fn status(&self, name: &UnitName) -> Option<UnitStatus> {
        lock(&self.table).get(name)?.status.clone()
    }

    /// Drops what is known of the shim `shim` of `name`, which has ended: its watcher may not
    /// have seen the end yet, and a status it kept must not outlive the shim.
    pub fn forget(&self, name: &UnitName, shim: u32) {
        forget(&self.table, name, shim);
    }
}

fn forget(table: &Table, name: &UnitName, shim: u32) {
    let mut table = lock(table);
    if table.get(name).is_some_and(|w| w.shim == shim) {
        table.remove(name);
    }
}

fn lock(table: &Table) -> MutexGuard<'_, BTreeMap<UnitName, Watched>> {
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
