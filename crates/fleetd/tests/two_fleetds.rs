//! Two real fleetd processes on a real etcd: a unit launched through the registry runs on one
//! of them; when the engine leader is killed with SIGKILL the other takes over, and when a
//! machine dies its unit is placed on the survivor and runs there.

mod common;
use common::until;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::{Registry, Snapshot};
use fleet_testkit::EtcdServer;
use fleet_unit::{JobState, UnitFile, UnitName};

struct Fleetd {
    child: Child,
}

impl Fleetd {
    fn start(etcd: &EtcdServer, dir: &Path, machine: &str) -> Fleetd {
        let child = common::fleetd(&dir.join(machine), machine)
            .env("FLEET_ETCD_SERVERS", etcd.endpoint())
            .env("FLEET_ETCD_KEY_PREFIX", "/fleet-test/")
            .env("FLEET_AGENT_TTL", "2s")
            .env("FLEET_ENGINE_RECONCILE_INTERVAL", "0.2")
            .env("FLEET_ENGINE_LEASE_TTL", "1s")
            .spawn()
            .unwrap();
        Fleetd { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn running_on(snapshot: &Snapshot, unit: &UnitName) -> Option<String> {
    snapshot
        .states
        .iter()
        .find(|(_, states)| states.get(unit).is_some_and(|s| s.sub == "running"))
        .map(|(machine, _)| machine.to_string())
}

/// Stops the unit processes a killed fleetd left running (its shims outlive it by design).
fn stop_leftover_shims(dir: &Path) {
    for machine in ["m1", "m2"] {
        let Ok(entries) = std::fs::read_dir(dir.join(machine).join("run/native")) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("shim.pid")) {
                let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_and_rescheduling_with_real_fleetds() {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut fleetds = [
        Fleetd::start(&etcd, dir.path(), "m1"),
        Fleetd::start(&etcd, dir.path(), "m2"),
    ];
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint()], "/fleet-test/"))
        .await
        .unwrap();
    let registry = Registry::open(Arc::new(store)).await.unwrap();
    let both = until(
        &registry,
        "both machines and a leader",
        Duration::from_secs(20),
        |s| s.machines.len() == 2 && s.leader.is_some(),
    )
    .await;

    let name = UnitName::new("hello.service").unwrap();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 20\n").unwrap();
    let requested = Instant::now();
    registry
        .create_job(&name, &unit, JobState::Launched)
        .await
        .unwrap();
    let placed = until(&registry, "running", Duration::from_secs(20), |s| {
        running_on(s, &name).is_some()
    })
    .await;
    let launched_to_running = requested.elapsed();
    let host = running_on(&placed, &name).unwrap();

    // Kill -9 the engine leader: the other fleetd leads within the lease TTL (5 × 0.2 s).
    let (m1, m2) = (
        fleet_testkit::machine_id("m1"),
        fleet_testkit::machine_id("m2"),
    );
    let leader = both.leader.unwrap().machine.to_string();
    let leader_index = if leader == m1 { 0 } else { 1 };
    fleetds[leader_index].kill();
    let killed = Instant::now();
    until(&registry, "takeover", Duration::from_secs(20), |s| {
        s.leader
            .as_ref()
            .is_some_and(|l| l.machine.as_str() != leader)
    })
    .await;
    let takeover = killed.elapsed();

    // If the killed fleetd hosted the unit, its machine's lease expires (agent_ttl 2 s) and
    // the unit runs on the survivor; otherwise it stays where it is.
    let survivor = if leader == m1 {
        m2.as_str()
    } else {
        m1.as_str()
    };
    let after = until(
        &registry,
        "running on the survivor",
        Duration::from_secs(30),
        |s| running_on(s, &name).as_deref() == Some(survivor) && s.machines.len() == 1,
    )
    .await;
    assert!(after.machines.keys().all(|m| m.as_str() == survivor));
    eprintln!(
        "launched to running: {launched_to_running:?} (on {host}); leader takeover after kill -9: {takeover:?}"
    );
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    drop(fleetds);
    stop_leftover_shims(dir.path());
}
