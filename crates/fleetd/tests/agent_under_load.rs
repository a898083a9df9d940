//! The agent under load, in process: a unit manager whose every load and start takes longer
//! than the machine lease's TTL must neither lose the lease nor stop a unit, and a slow unit
//! holds up no other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::fake::FakeManager;
use fleet_agent::manager::{ManagerKind, Result, UnitManager};
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{KvStore, Registry};
use fleet_unit::{JobState, MachineId, SystemdState, UnitFile, UnitHash, UnitName};
use tokio::sync::watch;

/// The fake manager, with loads and starts that take `delay` (a start of units named
/// `slow*` takes forty times as long).
struct Slow {
    inner: FakeManager,
    delay: Duration,
}

#[async_trait]
impl UnitManager for Slow {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Native
    }
    async fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.load(name, unit).await
    }
    async fn unload(&self, name: &UnitName) -> Result<()> {
        self.inner.unload(name).await
    }
    async fn start(&self, name: &UnitName) -> Result<()> {
        let factor = if name.as_str().starts_with("slow") {
            10
        } else {
            1
        };
        tokio::time::sleep(self.delay * factor).await;
        self.inner.start(name).await
    }
    async fn stop(&self, name: &UnitName) -> Result<()> {
        self.inner.stop(name).await
    }
    async fn loaded(&self) -> Result<BTreeMap<UnitName, UnitHash>> {
        self.inner.loaded().await
    }
    async fn state(&self, name: &UnitName) -> Result<SystemdState> {
        self.inner.state(name).await
    }
    async fn journal(&self, name: &UnitName, lines: usize) -> Result<Vec<String>> {
        self.inner.journal(name, lines).await
    }
    async fn follow(&self, name: &UnitName) -> Result<tokio::sync::mpsc::Receiver<String>> {
        self.inner.follow(name).await
    }
}

fn engine_config(machine: &MachineId, ttl: Duration) -> EngineConfig {
    EngineConfig {
        machine: machine.clone(),
        lease_ttl: Duration::from_secs(2),
        resync: Duration::from_secs(5),
        version: "test".into(),
        machine_grace: ttl,
        collect_unit_files: Duration::from_secs(3600),
        reschedule_failed_units: true,
    }
}

/// Waits (bounded) for the engine and the agent to end after shutdown, the agent without error.
async fn both_stop(
    engine: tokio::task::JoinHandle<()>,
    agent: tokio::task::JoinHandle<std::result::Result<(), fleet_agent::AgentError>>,
) {
    tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("the engine stops")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
}

fn agent_config(machine: &MachineId, ttl: Duration, dir: &std::path::Path) -> AgentConfig {
    AgentConfig {
        machine: machine.clone(),
        record: MachineRecord::default(),
        ttl,
        lease_file: dir.join("lease"),
        started_file: None,
        state_poll: Duration::from_millis(50),
        health: Default::default(),
        reschedule_failed_units: true,
        resync: Duration::from_secs(5),
        updates: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_manager_slower_than_the_lease_ttl_loses_no_lease_and_stops_no_unit() {
    let store = Arc::new(LocalStore::in_memory());
    let registry = Registry::open(store.clone() as Arc<dyn KvStore>)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let machine = MachineId::new("a").unwrap();
    let ttl = Duration::from_secs(1);
    let manager = Arc::new(Slow {
        inner: FakeManager::default(),
        delay: Duration::from_millis(2500),
    });
    let (stop, shutdown) = watch::channel(false);
    let engine = tokio::spawn(reconciler::run(
        registry.clone(),
        engine_config(&machine, ttl),
        shutdown.clone(),
    ));
    let agent = tokio::spawn(agent::run(
        registry.clone(),
        manager.clone(),
        agent_config(&machine, ttl, dir.path()),
        shutdown,
    ));
    let key = format!("machines/{machine}");
    let lease_of = || async { store.get(&key).await.unwrap().map(|kv| kv.lease) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        if let Some(lease) = lease_of().await {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "the machine never announced itself"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 60\n").unwrap();
    let names: Vec<String> = (0..40)
        .map(|i| format!("u{i:02}.service"))
        .chain(["slow.service".to_owned()])
        .collect();
    for name in &names {
        registry
            .create_job(&UnitName::new(name).unwrap(), &unit, JobState::Launched)
            .await
            .unwrap();
    }
    // Every load and start takes 2.5 TTLs; the slow start 100. Meanwhile the lease is held
    // throughout, every time it is looked at.
    let submitted = Instant::now();
    let quick: Vec<String> = names
        .iter()
        .filter(|n| !n.starts_with("slow"))
        .cloned()
        .collect();
    let all_quick_active = loop {
        assert_eq!(
            lease_of().await,
            Some(lease),
            "the machine lease was lost or replaced"
        );
        let active = manager.inner.active();
        if quick.iter().all(|n| active.contains(n)) {
            break submitted.elapsed();
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(60),
            "not all units started: {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 40 loads and 40 starts of 2.5 s each, concurrently: two delays and some scheduling
    // (more on a loaded machine), not 80 delays (200 s); the slow unit (100 s) held nothing up.
    assert!(
        all_quick_active < Duration::from_secs(30),
        "units were started one after another: {all_quick_active:?}"
    );
    assert!(
        !manager.inner.active().contains(&"slow.service".to_owned()),
        "the slow start is still under way"
    );
    let stopped: Vec<String> = manager
        .inner
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("stop") || call.starts_with("unload"))
        .collect();
    assert!(stopped.is_empty(), "units were stopped: {stopped:?}");
    assert_eq!(lease_of().await, Some(lease));
    stop.send(true).unwrap();
    both_stop(engine, agent).await;
}

/// A second fleetd with a machine ID in use (a copied disk image, a typo) must fail before it
/// touches a unit: the units placed on that ID run on the other machine.
#[tokio::test(start_paused = true)]
async fn an_agent_whose_machine_id_is_in_use_starts_nothing() {
    let registry = Registry::open(Arc::new(LocalStore::in_memory()) as Arc<dyn KvStore>)
        .await
        .unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let machine = MachineId::new("a").unwrap();
    let ttl = Duration::from_secs(30);
    let (stop, shutdown) = watch::channel(false);
    let engine = tokio::spawn(reconciler::run(
        registry.clone(),
        engine_config(&machine, ttl),
        shutdown.clone(),
    ));
    let owner = Arc::new(FakeManager::default());
    let first = tokio::spawn(agent::run(
        registry.clone(),
        owner.clone(),
        agent_config(&machine, ttl, dirs[0].path()),
        shutdown.clone(),
    ));
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 60\n").unwrap();
    let name = UnitName::new("placed.service").unwrap();
    registry
        .create_job(&name, &unit, JobState::Launched)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner.active().is_empty() {
        assert!(Instant::now() < deadline, "the unit never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let intruder = Arc::new(FakeManager::default());
    let second = agent::run(
        registry.clone(),
        intruder.clone(),
        agent_config(&machine, ttl, dirs[1].path()),
        shutdown.clone(),
    );
    let refused = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second agent gives up")
        .expect_err("the second agent is refused");
    assert!(
        matches!(&refused, fleet_agent::AgentError::MachineTaken(why) if why.contains("already in use")),
        "{refused}"
    );
    assert_eq!(intruder.calls(), Vec::<String>::new());
    assert_eq!(owner.active(), vec!["placed.service".to_owned()]);

    stop.send(true).unwrap();
    both_stop(engine, first).await;
}
