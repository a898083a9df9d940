//! A bound on fleetd's jobs in systemd. systemd answers a start or stop as soon as the job is
//! queued, serves D-Bus requests before it runs jobs, and tracks each job's client with a
//! match rule of its own on the bus: a client that keeps asking queues jobs without end, and
//! at dbus-daemon's 512 rules per connection systemd is thrown off the bus (seen at 540 quick
//! `StartUnit` or `StartTransientUnit` calls). Every job fleetd queues holds one of
//! [`MAX_JOBS`] permits until systemd's `JobRemoved` signal for it, like systemd's own job
//! queue bounds what runs at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

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
        let Some(permit) = permit else { return };
        let mut state = self.state();
        if !state.removed.contains(job) {
            state.held.insert(job.to_owned(), permit);
        }
    }

    fn removed(&self, job: &str) {
        let mut state = self.state();
        if state.held.remove(job).is_some() {
            return;
        }
        if state.removed.insert(job.to_owned()) {
            state.removed_order.push_back(job.to_owned());
        }
        while state.removed_order.len() > REMEMBERED {
            if let Some(old) = state.removed_order.pop_front() {
                state.removed.remove(&old);
            }
        }
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
        if let Ok((_, job, _, _)) = message
            .body()
            .deserialize::<(u32, zbus::OwnedObjectPath, String, String)>()
        {
            tracker.removed(job.as_str());
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
        tracker.removed("/job/1");
        assert_eq!(tracker.permits.available_permits(), MAX_JOBS);

        // The signal before the reply's caller: the permit is not kept.
        tracker.removed("/job/2");
        let permit = tracker.for_start("b.service").await;
        tracker.queued("/job/2", permit);
        assert_eq!(tracker.held(), 0);
        assert_eq!(tracker.permits.available_permits(), MAX_JOBS);

        // Only so many are remembered.
        for n in 0..REMEMBERED + 10 {
            tracker.removed(&format!("/other/{n}"));
        }
        assert_eq!(tracker.state().removed.len(), REMEMBERED);
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
