//! A bound on fleetd's jobs in systemd. systemd answers a start or stop as soon as the job is
//! queued, serves D-Bus requests before it runs jobs, and tracks each job's client with a
//! match rule of its own on the bus: a client that keeps asking queues jobs without end, and
//! at dbus-daemon's 512 rules per connection systemd is thrown off the bus (seen at 540 quick
//! `StartUnit` or `StartTransientUnit` calls). Every job fleetd queues holds one of
//! [`MAX_JOBS`] permits until systemd's `JobRemoved` signal for it, like systemd's own job
//! queue bounds what runs at once.
//!
//! The same signals tell a job fleetd did not queue: a unit that such a job left inactive was
//! stopped outside fleet (`systemctl stop` on the machine).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Jobs of fleetd's that systemd may hold at once: far below dbus-daemon's 512 match rules,
/// with room for systemd's own and other clients'.
pub const MAX_JOBS: usize = 128;

/// How long a job waits for a free permit before it says so in the log. A start goes on
/// waiting (the jobs under way end when their units' timeouts say); a stop goes ahead without
/// one, since the jobs holding every permit may be starts that hang, which only a stop ends.
const SLOW_QUEUE: Duration = Duration::from_secs(10);

/// Jobs removed before their caller told which job it queued (the reply and the signal race
/// through different tasks); the last few thousand are enough.
const REMEMBERED: usize = 4096;

pub struct JobTracker {
    permits: Arc<Semaphore>,
    state: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// fleetd's jobs systemd holds, by object path.
    held: HashMap<String, OwnedSemaphorePermit>,
    /// Jobs systemd removed lately, whoever queued them.
    removed: HashSet<String>,
    removed_order: VecDeque<String>,
    /// Jobs fleetd queued lately.
    own: HashSet<String>,
    own_order: VecDeque<String>,
    /// Per unit, the last job that ended `done`, and when.
    last_done: HashMap<String, (String, Instant)>,
    last_done_order: VecDeque<String>,
}

/// Adds `item` to a set remembered in `order`, forgetting the oldest past [`REMEMBERED`].
fn remember(set: &mut HashSet<String>, order: &mut VecDeque<String>, item: &str) {
    if set.insert(item.to_owned()) {
        order.push_back(item.to_owned());
    }
    while order.len() > REMEMBERED {
        if let Some(old) = order.pop_front() {
            set.remove(&old);
        }
    }
}

impl Default for JobTracker {
    fn default() -> Self {
        JobTracker {
            permits: Arc::new(Semaphore::new(MAX_JOBS)),
            state: Mutex::new(Tracked::default()),
        }
    }
}

impl JobTracker {
    fn state(&self) -> MutexGuard<'_, Tracked> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit to queue a start, once fewer than [`MAX_JOBS`] are held.
    pub async fn for_start(&self, unit: &str) -> Option<OwnedSemaphorePermit> {
        self.permit(unit, None).await
    }

    /// A permit to queue a stop, or none after [`SLOW_QUEUE`]: the stop goes ahead anyway.
    pub async fn for_stop(&self, unit: &str) -> Option<OwnedSemaphorePermit> {
        self.permit(unit, Some(SLOW_QUEUE)).await
    }

    /// A permit once fewer than [`MAX_JOBS`] are held; `None` once `patience` has passed.
    async fn permit(&self, unit: &str, patience: Option<Duration>) -> Option<OwnedSemaphorePermit> {
        let acquire = Arc::clone(&self.permits).acquire_owned();
        tokio::pin!(acquire);
        if let Ok(permit) = tokio::time::timeout(patience.unwrap_or(SLOW_QUEUE), &mut acquire).await
        {
            return permit.ok();
        }
        tracing::warn!(
            unit,
            jobs = MAX_JOBS,
            "systemd: fleetd's jobs fill the queue; {}",
            match patience {
                Some(_) => "queueing the stop all the same",
                None => "waiting for one to end",
            }
        );
        match patience {
            Some(_) => None,
            None => acquire.await.ok(),
        }
    }

    /// `job` was queued with `permit`, which is given back when systemd removes the job.
    pub fn queued(&self, job: &str, permit: Option<OwnedSemaphorePermit>) {
        let mut state = self.state();
        let Tracked { own, own_order, .. } = &mut *state;
        remember(own, own_order, job);
        let Some(permit) = permit else { return };
        if !state.removed.contains(job) {
            state.held.insert(job.to_owned(), permit);
        }
    }

    /// systemd removed `job` of `unit` with `result` (`done`, `canceled`, `failed`, ...).
    fn removed(&self, job: &str, unit: &str, result: &str) {
        let mut state = self.state();
        if result == "done" {
            if !state.last_done.contains_key(unit) {
                state.last_done_order.push_back(unit.to_owned());
            }
            state
                .last_done
                .insert(unit.to_owned(), (job.to_owned(), Instant::now()));
            while state.last_done_order.len() > REMEMBERED {
                if let Some(old) = state.last_done_order.pop_front() {
                    state.last_done.remove(&old);
                }
            }
        }
        if state.held.remove(job).is_some() {
            return;
        }
        let Tracked {
            removed,
            removed_order,
            ..
        } = &mut *state;
        remember(removed, removed_order, job);
    }

    /// Whether the last job of `unit` to end `done` was not fleetd's and ended at or after
    /// `since` (about when the unit last left `active`): then it was that job that stopped it.
    pub fn stopped_by_another(&self, unit: &str, since: Instant) -> bool {
        let state = self.state();
        state
            .last_done
            .get(unit)
            .is_some_and(|(job, at)| *at >= since && !state.own.contains(job))
    }

    /// systemd left the bus: the jobs it held are no longer fleetd's to wait for.
    pub fn forget_all(&self) {
        self.state().held.clear();
    }

    /// How many of fleetd's jobs systemd holds.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.state().held.len()
    }
}

/// Gives permits back as systemd's `JobRemoved` signals come, for as long as the tracker
/// lives.
pub async fn follow_removals(mut signals: zbus::MessageStream, tracker: Weak<JobTracker>) {
    while let Some(message) = signals.next().await {
        let Some(tracker) = tracker.upgrade() else {
            return;
        };
        let Ok(message) = message else { continue };
        if let Ok((_, job, unit, result)) =
            message
                .body()
                .deserialize::<(u32, zbus::OwnedObjectPath, String, String)>()
        {
            tracker.removed(job.as_str(), &unit, &result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_permit_comes_back_when_its_job_is_removed_whichever_comes_first() {
        let tracker = JobTracker::default();
        let permit = tracker.for_start("a.service").await;
        tracker.queued("/job/1", permit);
        assert_eq!(tracker.permits.available_permits(), MAX_JOBS - 1);
        tracker.removed("/job/1", "a.service", "done");
        assert_eq!(tracker.permits.available_permits(), MAX_JOBS);

        // The signal before the reply's caller: the permit is not kept.
        tracker.removed("/job/2", "b.service", "done");
        let permit = tracker.for_start("b.service").await;
        tracker.queued("/job/2", permit);
        assert_eq!(tracker.held(), 0);
        assert_eq!(tracker.permits.available_permits(), MAX_JOBS);

        // Only so many are remembered.
        for n in 0..REMEMBERED + 10 {
            tracker.removed(&format!("/other/{n}"), &format!("u{n}.service"), "done");
        }
        assert_eq!(tracker.state().removed.len(), REMEMBERED);
        assert_eq!(tracker.state().last_done.len(), REMEMBERED);
    }

    #[tokio::test]
    async fn a_unit_stopped_by_a_job_fleetd_did_not_queue_is_told() {
        let tracker = JobTracker::default();
        let before = Instant::now();
        // fleetd's own stop, whichever of the reply and the signal comes first.
        tracker.removed("/job/1", "a.service", "done");
        tracker.queued("/job/1", None);
        assert!(!tracker.stopped_by_another("a.service", before));
        // Another's: told, when it ended after the unit left active.
        tracker.removed("/job/2", "a.service", "done");
        assert!(tracker.stopped_by_another("a.service", before));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(!tracker.stopped_by_another("a.service", later));
        // A job that did not get done stopped nothing.
        tracker.removed("/job/3", "b.service", "canceled");
        assert!(!tracker.stopped_by_another("b.service", before));
    }

    #[tokio::test]
    async fn no_more_than_the_bound_are_held() {
        let tracker = JobTracker::default();
        for n in 0..MAX_JOBS {
            let permit = tracker.for_start("u.service").await;
            tracker.queued(&format!("/job/{n}"), permit);
        }
        let more = tokio::time::timeout(Duration::from_millis(50), tracker.for_start("u.service"));
        assert!(more.await.is_err(), "a permit beyond the bound");
        // A stop is not held up for ever by starts that hang: after its patience, it goes
        // ahead without a permit.
        let stop = tracker.permit("u.service", Some(Duration::from_millis(50)));
        let stop = tokio::time::timeout(Duration::from_secs(5), stop).await;
        assert!(matches!(stop, Ok(None)), "the stop waited on");
        tracker.forget_all();
        let more = tokio::time::timeout(Duration::from_millis(50), tracker.for_start("u.service"));
        assert!(more.await.is_ok_and(|p| p.is_some()));
    }
}
