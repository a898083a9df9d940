//! Health checks of the units this machine runs: one task per running unit that has
//! `HealthCheck=` lines, started when the agent sees the unit active and ended when it is not
//! (or runs another version). Each round runs every check of the unit at once within its
//! timeout, at most [`CONCURRENT`] rounds at once on the machine; failures in the start period
//! do not count, and `HealthCheckFailures=` of them in a row make the unit unhealthy. The
//! agent hears only of changes of a unit's health, so a machine of healthy units writes
//! nothing.

mod probe;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fleet_native::specifiers::{resolve, SpecifierContext};
use fleet_unit::health::{Check, HealthPolicy};
use fleet_unit::{UnitHash, UnitName};
use tokio::sync::{watch, Semaphore};

pub use probe::{probe, Probed, OUTPUT_TAIL};

/// Rounds of checks under way at once on a machine (each may hold a connection or a process).
pub const CONCURRENT: usize = 64;

/// What the checks of a machine have done, for its metrics.
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub passed: AtomicU64,
    pub failed: AtomicU64,
    /// Units restarted in place because their checks failed.
    pub restarts: AtomicU64,
}

impl HealthCounters {
    fn count(&self, passed: bool) {
        let counter = match passed {
            true => &self.passed,
            false => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the checks last said of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Started, and no check has passed yet.
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// A unit's health and what the round that decided it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub output: String,
}

type Results = Arc<Mutex<BTreeMap<UnitName, Health>>>;

fn lock(results: &Results) -> MutexGuard<'_, BTreeMap<UnitName, Health>> {
    results.lock().unwrap_or_else(|e| e.into_inner())
}

/// The checks of every running unit that has some.
pub struct Monitor {
    watched: BTreeMap<UnitName, Watched>,
    results: Results,
    changed: watch::Sender<()>,
    permits: Arc<Semaphore>,
    machine: SpecifierContext,
    counters: Arc<HealthCounters>,
}

/// A unit under watch: the version whose checks run, and their task (ended when dropped).
struct Watched {
    hash: UnitHash,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    /// A monitor for the machine `machine_id`; the receiver is told of every change of any
    /// unit's health.
    pub fn new(machine_id: &str, counters: Arc<HealthCounters>) -> (Monitor, watch::Receiver<()>) {
        let (changed, told) = watch::channel(());
        let machine = SpecifierContext {
            machine_id: machine_id.to_owned(),
            boot_id: fleet_native::host::boot_id(),
            hostname: fleet_native::host::hostname(),
            ..SpecifierContext::default()
        };
        let monitor = Monitor {
            watched: BTreeMap::new(),
            results: Arc::default(),
            changed,
            permits: Arc::new(Semaphore::new(CONCURRENT)),
            machine,
            counters,
        };
        (monitor, told)
    }

    /// Watches exactly `running` (units running now, each with its version and policy): a new
    /// one (or a new version) gets its checks from the start, one no longer there loses them.
    pub fn follow(&mut self, running: BTreeMap<UnitName, (UnitHash, HealthPolicy)>) {
        let gone: Vec<UnitName> = self
            .watched
            .iter()
            .filter(|(name, watched)| running.get(*name).is_none_or(|(h, _)| *h != watched.hash))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.forget(&name);
        }
        for (name, (hash, policy)) in running {
            if self.watched.contains_key(&name) {
                continue;
            }
            let checks = self.expanded(&name, &policy);
            let task = tokio::spawn(watch_unit(
                name.clone(),
                policy,
                checks,
                Arc::clone(&self.results),
                self.changed.clone(),
                Arc::clone(&self.permits),
                Arc::clone(&self.counters),
            ));
            self.watched.insert(name, Watched { hash, task });
        }
    }

    /// Ends the checks of `name` and forgets what they said (a restart starts them anew).
    pub fn forget(&mut self, name: &UnitName) {
        if self.watched.remove(name).is_some() && lock(&self.results).remove(name).is_some() {
            self.changed.send_replace(());
        }
    }

    /// What the checks last said of `name`, if it is watched.
    pub fn health(&self, name: &UnitName) -> Option<Health> {
        lock(&self.results).get(name).cloned()
    }

    /// The units whose checks say they are unhealthy.
    pub fn unhealthy(&self) -> Vec<UnitName> {
        lock(&self.results)
            .iter()
            .filter(|(_, h)| h.state == HealthState::Unhealthy)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The unit's checks with the specifiers of this unit on this machine resolved; a check
    /// that cannot be (an unknown specifier, a port that is no number) fails every round.
    fn expanded(&self, name: &UnitName, policy: &HealthPolicy) -> Vec<Result<Check, String>> {
        let context = SpecifierContext {
            unit_name: name.to_string(),
            ..self.machine.clone()
        };
        policy
            .checks
            .iter()
            .map(|check| {
                let failed = std::cell::RefCell::new(None);
                let expanded = check.expanded(|text| {
                    resolve(text, &context).unwrap_or_else(|e| {
                        *failed.borrow_mut() = Some(e.to_string());
                        text.to_owned()
                    })
                });
                match failed.into_inner() {
                    Some(why) => Err(format!("{check}: {why}")),
                    None => expanded.map_err(|why| format!("{check}: {why}")),
                }
            })
            .collect()
    }
}

/// One round: every check at once; passed when all passed. What it says: the failures, or
/// what the first check said when all passed.
async fn round(checks: &[Result<Check, String>], timeout: Duration) -> Probed {
    let probes = checks.iter().map(|check| async move {
        match check {
            Ok(check) => probe(check, timeout).await,
            Err(why) => Probed {
                passed: false,
                output: why.clone(),
            },
        }
    });
    let probed = futures_util::future::join_all(probes).await;
    let failed: Vec<&str> = probed
        .iter()
        .filter(|p| !p.passed)
        .map(|p| p.output.as_str())
        .collect();
    let output = match failed.is_empty() {
        true => probed.first().map(|p| p.output.clone()).unwrap_or_default(),
        false => failed.join("; "),
    };
    let mut output = output;
    if output.len() > OUTPUT_TAIL {
        let cut = output.len() - OUTPUT_TAIL;
        let cut = (cut..output.len())
            .find(|i| output.is_char_boundary(*i))
            .unwrap_or(output.len());
        output.drain(..cut);
    }
    Probed {
        passed: failed.is_empty(),
        output,
    }
}

/// The checks of one unit, round after round, until aborted.
async fn watch_unit(
    name: UnitName,
    policy: HealthPolicy,
    checks: Vec<Result<Check, String>>,
    results: Results,
    changed: watch::Sender<()>,
    permits: Arc<Semaphore>,
    counters: Arc<HealthCounters>,
) {
    let began = Instant::now();
    let mut state = HealthState::Starting;
    let mut failures = 0u32;
    let set = |health: Health| {
        lock(&results).insert(name.clone(), health);
        changed.send_replace(());
    };
    set(Health {
        state,
        output: String::new(),
    });
    loop {
        let probed = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            round(&checks, policy.timeout).await
        };
        counters.count(probed.passed);
        let next = if probed.passed {
            failures = 0;
            HealthState::Healthy
        } else if began.elapsed() < policy.start_period {
            state
        } else {
            failures += 1;
            match failures >= policy.failures {
                true => HealthState::Unhealthy,
                false => state,
            }
        };
        if next != state {
            match next {
                HealthState::Unhealthy => {
                    tracing::warn!(unit = %name, output = %probed.output, failures, "agent: unit unhealthy")
                }
                _ => tracing::info!(unit = %name, state = next.as_str(), "agent: unit health"),
            }
            state = next;
            set(Health {
                state,
                output: probed.output,
            });
        }
        tokio::time::sleep(policy.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_unit::health::OnUnhealthy;

    fn policy(check: &str, failures: u32, start_period_ms: u64) -> HealthPolicy {
        HealthPolicy {
            checks: vec![Check::parse(check).unwrap()],
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(500),
            start_period: Duration::from_millis(start_period_ms),
            failures,
            on_unhealthy: OnUnhealthy::Restart,
        }
    }

    /// Waits (at most 5 s) until `name`'s health is `state`; what it said then.
    async fn until(monitor: &Monitor, name: &UnitName, state: HealthState) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(health) = monitor.health(name).filter(|h| h.state == state) {
                return health.output;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never {state:?}: {:?}",
                monitor.health(name)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn health_follows_the_checks_and_the_units_that_run() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("healthy");
        let (mut monitor, _told) = Monitor::new("0123456789abcdef0123456789abcdef", Arc::default());
        let web = UnitName::new("web.service").unwrap();
        let hash = fleet_unit::UnitFile::parse("").unwrap().hash();
        let check = format!("exec:/bin/test -f {}", flag.display());
        let running =
            |failures| BTreeMap::from([(web.clone(), (hash, policy(&check, failures, 0)))]);
        monitor.follow(running(3));
        until(&monitor, &web, HealthState::Starting).await;
        std::fs::write(&flag, "").unwrap();
        until(&monitor, &web, HealthState::Healthy).await;
        std::fs::remove_file(&flag).unwrap();
        assert_eq!(
            until(&monitor, &web, HealthState::Unhealthy).await,
            "exit status: 1"
        );
        assert_eq!(monitor.unhealthy(), vec![web.clone()]);
        // No longer running: no longer watched.
        monitor.follow(BTreeMap::new());
        assert_eq!(monitor.health(&web), None);
        assert!(monitor.unhealthy().is_empty());
    }

    #[tokio::test]
    async fn failures_in_the_start_period_do_not_count_and_specifiers_resolve() {
        let (mut monitor, _told) = Monitor::new("0123456789abcdef0123456789abcdef", Arc::default());
        let unit = UnitName::new("probe@7.service").unwrap();
        let hash = fleet_unit::UnitFile::parse("").unwrap().hash();
        // Fails until the start period is over: stays starting, then unhealthy after one.
        let check = "exec:/bin/sh -c 'echo %i %m; exit 1'";
        monitor.follow(BTreeMap::from([(
            unit.clone(),
            (hash, policy(check, 1, 300)),
        )]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            monitor.health(&unit).map(|h| h.state),
            Some(HealthState::Starting)
        );
        let said = until(&monitor, &unit, HealthState::Unhealthy).await;
        assert_eq!(said, "7 0123456789abcdef0123456789abcdef");
        // A specifier that does not exist fails every round, saying so.
        let bad = UnitName::new("bad.service").unwrap();
        monitor.follow(BTreeMap::from([(
            bad.clone(),
            (hash, policy("tcp://localhost:%q", 1, 0)),
        )]));
        let said = until(&monitor, &bad, HealthState::Unhealthy).await;
        assert!(said.contains("tcp://localhost:%q"), "{said}");
    }
}
