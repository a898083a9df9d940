//! One machine end to end, in process but with real parts: the in-memory registry, the engine,
//! the agent and the native supervisor running real shims (the fleetd binary) and processes.

mod common;
use common::until;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::manager::UnitManager;
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_native::supervisor::{Supervisor, SupervisorConfig};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{Registry, Snapshot};
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};
use tokio::sync::watch;

fn sub_of(snapshot: &Snapshot, machine: &MachineId, unit: &UnitName) -> Option<String> {
    snapshot
        .states
        .get(machine)?
        .get(unit)
        .map(|s| s.sub.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_unit_runs_and_an_inactive_one_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(Arc::new(LocalStore::in_memory()))
        .await
        .unwrap();
    let me = MachineId::new("node1").unwrap();
    let supervisor = Supervisor::open(SupervisorConfig {
        machine_id: me.to_string(),
        hostname: "node1".into(),
        ..SupervisorConfig::under(dir.path(), Path::new(env!("CARGO_BIN_EXE_fleetd")))
    })
    .unwrap();
    let manager: Arc<dyn UnitManager> = Arc::new(supervisor);
    let (stop, shutdown) = watch::channel(false);
    let engine = tokio::spawn(reconciler::run(
        registry.clone(),
        EngineConfig {
            machine: me.clone(),
            lease_ttl: Duration::from_secs(2),
            resync: Duration::from_secs(5),
            version: "test".into(),
            machine_grace: Duration::from_secs(2),
            collect_unit_files: Duration::from_secs(3600),
            reschedule_failed_units: true,
        },
        shutdown.clone(),
    ));
    let agent = tokio::spawn(agent::run(
        registry.clone(),
        Arc::clone(&manager),
        AgentConfig {
            machine: me.clone(),
            record: MachineRecord::default(),
            ttl: Duration::from_secs(5),
            lease_file: dir.path().join("lease"),
            started_file: None,
            state_poll: Duration::from_millis(50),
            health: Default::default(),
            reschedule_failed_units: true,
            resync: Duration::from_secs(5),
            updates: None,
        },
        shutdown,
    ));

    let name = UnitName::new("hello.service").unwrap();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 60\n").unwrap();
    let requested = Instant::now();
    registry
        .create_job(&name, &unit, JobState::Launched)
        .await
        .unwrap();
    until(&registry, "running", Duration::from_secs(15), |s| {
        sub_of(s, &me, &name).as_deref() == Some("running")
    })
    .await;
    eprintln!("launched to running: {:?}", requested.elapsed());

    registry
        .set_desired(&name, JobState::Inactive)
        .await
        .unwrap();
    until(&registry, "gone", Duration::from_secs(15), |s| {
        sub_of(s, &me, &name).is_none() && s.schedule.is_empty()
    })
    .await;
    assert!(manager.loaded().await.unwrap().is_empty(), "unloaded");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), engine)
        .await
        .unwrap()
        .unwrap();
    let agent_result = tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .unwrap();
    let agent_result = agent_result.unwrap();
    assert!(agent_result.is_ok(), "{agent_result:?}");
}
