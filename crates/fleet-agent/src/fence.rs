//! The fence: once the machine lease is taken for lost, the engine may soon start this
//! machine's units elsewhere, so the units that asked for it (`StopWhenDisconnected=true`)
//! are stopped first and never run twice. It runs on a task of its own, beside the lease
//! keeper, so that no reconcile or slow start can hold it up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use fleet_unit::UnitName;
use tokio::sync::watch;

use crate::lease::LeaseStatus;
use crate::manager::UnitManager;

/// What the agent and the fence share.
#[derive(Default)]
pub struct Fence {
    /// Units to stop when the lease is lost: started here and `StopWhenDisconnected`. The
    /// agent keeps it current at every reconcile.
    candidates: Mutex<BTreeSet<UnitName>>,
    /// Units stopped for a lost lease; not started again until the machine holds a lease
    /// again and has read what the engine did meanwhile.
    fenced: Mutex<BTreeSet<UnitName>>,
}

/// How soon a stop that failed is tried again while the lease stays lost.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fence {
    pub fn set_candidates(&self, candidates: BTreeSet<UnitName>) {
        *lock(&self.candidates) = candidates;
    }

    pub fn fenced(&self) -> BTreeSet<UnitName> {
        lock(&self.fenced).clone()
    }

    pub fn is_fenced(&self, name: &UnitName) -> bool {
        lock(&self.fenced).contains(name)
    }

    /// The machine holds its lease again and the agent has read the registry afresh: the
    /// units fenced until now, which were stopped and may start again.
    pub fn release(&self) -> BTreeSet<UnitName> {
        std::mem::take(&mut *lock(&self.fenced))
    }
}

/// Stops the candidates each time the lease is taken for lost, all at once (the time left
/// before it can expire is short); tells `stopped` after each round of stops.
pub async fn guard(
    fence: Arc<Fence>,
    manager: Arc<dyn UnitManager>,
    mut lease: watch::Receiver<LeaseStatus>,
    stopped: watch::Sender<()>,
) {
    loop {
        if lease.wait_for(|status| status.lost).await.is_err() {
            return;
        }
        let targets: Vec<UnitName> = {
            let fenced = lock(&fence.fenced);
            lock(&fence.candidates)
                .iter()
                .filter(|name| !fenced.contains(*name))
                .cloned()
                .collect()
        };
        let stops = targets.iter().map(|name| {
            let manager = &manager;
            async move {
                tracing::warn!(unit = %name, "agent: the machine lease is lost; stopping the unit so it does not run twice");
                (name, manager.stop(name).await)
            }
        });
        let mut failed = false;
        for (name, result) in futures_util::future::join_all(stops).await {
            match result {
                Ok(()) => {
                    lock(&fence.fenced).insert(name.clone());
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(unit = %name, %error, "agent: stop failed; trying again");
                }
            }
        }
        if !targets.is_empty() {
            stopped.send_replace(());
        }
        if failed {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Once more only after the lease was held again.
        if lease.wait_for(|status| !status.lost).await.is_err() {
            return;
        }
    }
}
