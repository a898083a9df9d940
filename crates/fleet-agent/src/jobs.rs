//! The agent's work on units, as jobs: a reconcile issues them and returns; each runs on a
//! task of its own, at most [`CONCURRENT`] at once (like systemd's job queue, a bound on what
//! runs, not on what is queued), and its outcome comes back to the agent. One unit has at
//! most one job at a time, so the steps for one unit stay in order (a new version stops
//! before it is loaded and started), while a slow or hanging unit holds up nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_unit::{UnitFile, UnitName};
use tokio::sync::{watch, Semaphore};

use crate::lease::LeaseStatus;
use crate::manager::UnitManager;

/// How many unit manager calls the agent has under way at once (for jobs, and as many for
/// loads). With systemd, each is a D-Bus call awaiting its reply, and dbus-daemon refuses a
/// connection more than 128 of those (`LimitsExceeded`); 96 at once passed it.
pub const CONCURRENT: usize = 32;

/// The longest a start waits for the starts it is ordered after to finish.
const ORDER_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub enum Work {
    /// Stop it if it runs and forget it.
    Unload,
    /// A new version of a loaded unit: stop the old, load the new, and start it if wanted.
    Replace { unit: UnitFile, start: bool },
    /// Start it unless it is running already.
    Start,
    /// Stop it and start it again (its health checks failed).
    Restart,
    /// Stop it; of `others` (units the agent started), those the stop takes down with it
    /// (`BindsTo=`, `PartOf=`, `Requires=` dependents) are told in the outcome.
    Stop { others: Vec<UnitName> },
}

pub struct Job {
    pub name: UnitName,
    pub work: Work,
    /// Starts this one is ordered after (`After=`/`Before=`): each job's "done" bell.
    pub after: Vec<(UnitName, watch::Receiver<bool>)>,
    /// Rung when this job is done (dropped without ringing if it is aborted: also done).
    pub done: watch::Sender<bool>,
    /// The unit is stopped when the lease is lost; it is not started while it is.
    pub stops_when_disconnected: bool,
}

/// What a job changed in what the agent remembers of a unit.
#[derive(Debug)]
pub struct Outcome {
    pub name: UnitName,
    /// `Some(true)`: the agent started it (or found it running); `Some(false)`: it is no
    /// longer running by the agent's hand; `None`: as before.
    pub started: Option<bool>,
    /// Units that were active before this job's stop and are not after it.
    pub collateral: Vec<UnitName>,
    /// The init system refused the start, in its words (`Unit nope.service not found.`):
    /// not tried again until the unit's desired state or contents change, as systemd tries a
    /// failed start job once.
    pub refused: Option<String>,
}

impl Outcome {
    fn of(name: &UnitName, started: Option<bool>) -> Outcome {
        Outcome {
            name: name.clone(),
            started,
            collateral: Vec::new(),
            refused: None,
        }
    }
}

impl Job {
    pub async fn run(
        self,
        manager: Arc<dyn UnitManager>,
        permits: Arc<Semaphore>,
        lease: watch::Receiver<LeaseStatus>,
    ) -> Outcome {
        let name = self.name.clone();
        for (earlier, done) in &self.after {
            wait_started(&*manager, earlier, done.clone()).await;
        }
        let outcome = match permits.acquire().await {
            Ok(_permit) => self.work(&*manager, &lease).await,
            Err(_) => Outcome::of(&name, None),
        };
        self.done.send_replace(true);
        outcome
    }

    async fn work(
        &self,
        manager: &dyn UnitManager,
        lease: &watch::Receiver<LeaseStatus>,
    ) -> Outcome {
        let name = &self.name;
        let outcome = |started| Outcome::of(name, started);
        match &self.work {
            Work::Unload => {
                tracing::info!(unit = %name, "agent: unloading");
                match manager.unload(name).await {
                    Ok(()) => outcome(Some(false)),
                    Err(error) => {
                        tracing::warn!(unit = %name, %error, "agent: unload failed");
                        outcome(None)
                    }
                }
            }
            Work::Stop { others } => {
                tracing::info!(unit = %name, "agent: stopping");
                let before = active_among(manager, others).await;
                match manager.stop(name).await {
                    Ok(()) => {
                        let after = active_among(manager, &before).await;
                        let collateral =
                            before.into_iter().filter(|u| !after.contains(u)).collect();
                        Outcome {
                            collateral,
                            ..outcome(Some(false))
                        }
                    }
                    Err(error) => {
                        tracing::warn!(unit = %name, %error, "agent: stop failed");
                        outcome(None)
                    }
                }
            }
            Work::Replace { unit, start } => {
                tracing::info!(unit = %name, "agent: loading a new version");
                if let Err(error) = manager.stop(name).await {
                    tracing::warn!(unit = %name, %error, "agent: stop of the old version failed");
                    return outcome(None);
                }
                if let Err(error) = manager.load(name, unit).await {
                    tracing::warn!(unit = %name, %error, "agent: load failed");
                    return outcome(Some(false));
                }
                match start {
                    true => self.start(manager, lease).await,
                    false => outcome(Some(false)),
                }
            }
            Work::Start => self.start(manager, lease).await,
            Work::Restart => {
                tracing::info!(unit = %name, "agent: restarting an unhealthy unit");
                if let Err(error) = manager.stop(name).await {
                    tracing::warn!(unit = %name, %error, "agent: stop for a restart failed");
                    return outcome(None);
                }
                self.start(manager, lease).await
            }
        }
    }

    async fn start(
        &self,
        manager: &dyn UnitManager,
        lease: &watch::Receiver<LeaseStatus>,
    ) -> Outcome {
        let name = &self.name;
        let outcome = |started| Outcome::of(name, started);
        if self.stops_when_disconnected && lease.borrow().lost {
            return outcome(None);
        }
        let state = match manager.state(name).await {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(unit = %name, %error, "agent: cannot read the unit's state");
                return outcome(None);
            }
        };
        // Running already (an earlier fleetd of this boot started it, or systemd did as a
        // dependency): nothing to do but remember it.
        if matches!(state.active.as_str(), "active" | "activating" | "reloading") {
            return outcome(Some(true));
        }
        tracing::info!(unit = %name, "agent: starting");
        match manager.start(name).await {
            Ok(()) => outcome(Some(true)),
            Err(error) => {
                tracing::warn!(unit = %name, %error, "agent: start failed");
                Outcome {
                    refused: Some(error.to_string()),
                    ..outcome(None)
                }
            }
        }
    }
}

/// Those of `units` that are active (or on their way) now.
async fn active_among(manager: &dyn UnitManager, units: &[UnitName]) -> Vec<UnitName> {
    let mut active = Vec::new();
    for unit in units {
        if let Ok(state) = manager.state(unit).await {
            if matches!(state.active.as_str(), "active" | "activating" | "reloading") {
                active.push(unit.clone());
            }
        }
    }
    active
}

/// Waits until the start job of `earlier` is done and the unit has left `activating` (as
/// systemd's job for it would have finished), bounded by [`ORDER_WAIT`].
async fn wait_started(
    manager: &dyn UnitManager,
    earlier: &UnitName,
    mut done: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + ORDER_WAIT;
    let finished = done.wait_for(|done| *done);
    if tokio::time::timeout_at(deadline.into(), finished)
        .await
        .is_err()
    {
        tracing::warn!(unit = %earlier, "agent: gave up waiting for a start ordered before another");
        return;
    }
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        match manager.state(earlier).await {
            Ok(state) if state.active == "activating" => {}
            _ => return,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
