//! An etcd outage restarts nothing: a real fleetd on a real etcd keeps its unit running, with
//! the same process, while etcd is down, and goes on reporting it once etcd is back.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::Registry;
use fleet_testkit::EtcdServer;
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};

fn main_pid(dir: &Path) -> Option<u64> {
    let state = std::fs::read_to_string(dir.join("run/native/hello.service/state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&state).ok()?;
    (state["sub"] == "running")
        .then(|| state["main_pid"].as_u64())
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_restarts_no_unit() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Stopped on drop, also when the test fails: no fleetd outlives its test.
    let mut fleetd = common::Daemon(
        common::fleetd(dir.path(), "m1")
            .env("FLEET_ETCD_SERVERS", etcd.endpoint())
            .env("FLEET_ETCD_KEY_PREFIX", "/fleet-blip/")
            .env("FLEET_AGENT_TTL", "30s")
            .spawn()
            .unwrap(),
    );
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint()], "/fleet-blip/"))
        .await
        .unwrap();
    let registry = Registry::open(Arc::new(store)).await.unwrap();
    let name = UnitName::new("hello.service").unwrap();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 60\n").unwrap();
    registry
        .create_job(&name, &unit, JobState::Launched)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = main_pid(dir.path()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    etcd.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        main_pid(dir.path()),
        Some(pid),
        "still running, same process, during the outage"
    );
    etcd.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        main_pid(dir.path()),
        Some(pid),
        "not restarted after the outage"
    );
    let me = MachineId::new(fleet_testkit::machine_id("m1")).unwrap();
    common::until(
        &registry,
        "the state is reported again",
        Duration::from_secs(20),
        |s| {
            s.states
                .get(&me)
                .and_then(|states| states.get(&name))
                .is_some_and(|s| s.sub == "running")
        },
    )
    .await;
    common::stop(&mut fleetd, "-TERM");
}
