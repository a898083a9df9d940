//! Failed units move, with real fleetds: two machines on a real etcd, a unit that fails on
//! one of them only (its command fails unless `%m` is the other) ends up running on the other
//! within its `RescheduleDelay=` and a few seconds, with the failure recorded; with
//! `Reschedule=no` it stays where it failed; a unit whose health check fails on one machine
//! is restarted there, then moved; on a single machine a unit that fails everywhere is
//! started again there with a growing delay and given up on after `RescheduleAttempts=`.

mod common;
use common::{until, Daemon};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::{Registry, Snapshot};
use fleet_testkit::EtcdServer;
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};

const PREFIX: &str = "/fleet-rescheduling/";

fn fleetd(etcd: &EtcdServer, dir: &Path, machine: &str) -> Daemon {
    let home = dir.join(machine);
    std::fs::create_dir_all(&home).unwrap();
    let mut command = common::fleetd(&home, machine);
    command
        .env("FLEET_ETCD_SERVERS", etcd.endpoint())
        .env("FLEET_ETCD_KEY_PREFIX", PREFIX)
        .env("FLEET_AGENT_TTL", "2s")
        .env("FLEET_ENGINE_RECONCILE_INTERVAL", "0.2")
        .stderr(std::fs::File::create(home.join("fleetd.log")).unwrap());
    common::serving(command, &home)
}

async fn cluster() -> (
    EtcdServer,
    tempfile::TempDir,
    Vec<Daemon>,
    Registry,
    Vec<MachineId>,
) {
    let etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let fleetds = vec![
        fleetd(&etcd, dir.path(), "m1"),
        fleetd(&etcd, dir.path(), "m2"),
    ];
    let store = EtcdStore::connect(&EtcdConfig::new(vec![etcd.endpoint()], PREFIX))
        .await
        .unwrap();
    let registry = Registry::open(Arc::new(store)).await.unwrap();
    let snapshot = until(&registry, "both machines", Duration::from_secs(20), |s| {
        s.machines.len() == 2
    })
    .await;
    // On a tie the scheduler takes the machine of the lowest ID first.
    let machines: Vec<MachineId> = snapshot.machines.keys().cloned().collect();
    (etcd, dir, fleetds, registry, machines)
}

async fn launch(registry: &Registry, name: &UnitName, unit: &UnitFile) {
    registry
        .create_job(name, unit, JobState::Launched)
        .await
        .unwrap();
}

fn running_on(snapshot: &Snapshot, unit: &UnitName) -> Option<MachineId> {
    snapshot
        .states
        .iter()
        .find(|(_, states)| states.get(unit).is_some_and(|s| s.sub == "running"))
        .map(|(machine, _)| machine.clone())
}

/// A unit whose command fails on `fails_on` and runs elsewhere, with `x_fleet` lines.
fn failing_on(fails_on: &MachineId, x_fleet: &str) -> UnitFile {
    UnitFile::parse(format!(
        "[Service]\nExecStart=/bin/sh -c 'test %m != {fails_on} && exec sleep 600'\n[X-Fleet]\n{x_fleet}"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_failing_on_one_machine_moves_to_one_where_it_works() {
    let (_etcd, dir, _fleetds, registry, machines) = cluster().await;
    let name = UnitName::new("picky.service").unwrap();
    let unit = failing_on(&machines[0], "RescheduleDelay=1s\n");
    launch(&registry, &name, &unit).await;
    let began = Instant::now();
    let snapshot = until(
        &registry,
        "running on the other machine",
        Duration::from_secs(20),
        |s| running_on(s, &name).as_ref() == Some(&machines[1]),
    )
    .await;
    let took = began.elapsed();
    assert!(took < Duration::from_secs(8), "moved after {took:?}");
    let moves = &snapshot.moves[&name];
    assert_eq!(moves.moves, 1);
    let entry = &moves.history[0];
    assert_eq!(
        (entry.machine.as_str(), entry.action.clone()),
        (machines[0].as_str(), format!("moved to {}", machines[1]))
    );
    assert!(
        entry.what.contains("exit") || entry.what.contains("failed"),
        "{entry:?}"
    );
    // It runs on one machine, is placed on one, and the failure report is withdrawn.
    let snapshot = until(
        &registry,
        "the report withdrawn",
        Duration::from_secs(10),
        |s| {
            s.failures
                .values()
                .all(|reports| !reports.contains_key(&name))
        },
    )
    .await;
    let placed: Vec<_> = snapshot
        .schedule
        .iter()
        .filter(|(_, units)| units.contains_key(&name))
        .map(|(machine, _)| machine.clone())
        .collect();
    assert_eq!(placed, vec![machines[1].clone()]);
    let socket = dir.path().join("m2/fleet.sock");
    let (_, metrics) = fleet_testkit::measure::http_unix(&socket, "GET", "/metrics", None);
    assert!(
        metrics.contains("fleet_unit_moves_recorded{reason=\"failed\"} 1\n"),
        "{metrics}"
    );
}

/// An HTTP server on loopback answering `/<machine>` with 503 for `sick` and 200 otherwise;
/// its port.
fn health_endpoint(sick: MachineId) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..read]).into_owned();
            let status = match line.starts_with(&format!("GET /{sick} ")) {
                true => "503 Service Unavailable",
                false => "200 OK",
            };
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_unhealthy_on_one_machine_is_restarted_then_moved() {
    let (_etcd, _dir, _fleetds, registry, machines) = cluster().await;
    let port = health_endpoint(machines[0].clone());
    let name = UnitName::new("checked.service").unwrap();
    let unit = UnitFile::parse(format!(
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nHealthCheck=http://127.0.0.1:{port}/%m\nHealthCheckInterval=100ms\nHealthCheckStartPeriod=0\nHealthCheckFailures=2\nRescheduleAfterRestarts=1\nRescheduleDelay=1s\n"
    ))
    .unwrap();
    launch(&registry, &name, &unit).await;
    let snapshot = until(
        &registry,
        "healthy on the other machine",
        Duration::from_secs(30),
        |s| {
            s.states
                .get(&machines[1])
                .and_then(|states| states.get(&name))
                .is_some_and(|state| {
                    state.sub == "running"
                        && state.health.as_ref().is_some_and(|h| h.state == "healthy")
                })
        },
    )
    .await;
    let entry = &snapshot.moves[&name].history[0];
    assert_eq!(entry.machine, machines[0].as_str());
    assert!(entry.action.starts_with("moved "), "{entry:?}");
    assert!(
        entry
            .what
            .starts_with("unhealthy after 1 restarts within 10 minutes")
            && entry.what.contains("503 Service Unavailable"),
        "{entry:?}"
    );
}

/// `Restart=always` on a machine where it cannot run: the unit never shows failed (its own
/// restarts go on), so its restarts count: past `RescheduleAfterRestarts=` it is moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_caught_by_the_restart_budget_and_moved() {
    let (_etcd, _dir, _fleetds, registry, machines) = cluster().await;
    let name = UnitName::new("looping.service").unwrap();
    let unit = UnitFile::parse(format!(
        "[Service]\nExecStart=/bin/sh -c 'test %m != {} && exec sleep 600; exit 1'\nRestart=always\nRestartSec=3\n[X-Fleet]\nRescheduleAfterRestarts=2\nRescheduleDelay=1s\n",
        machines[0]
    ))
    .unwrap();
    launch(&registry, &name, &unit).await;
    let snapshot = until(
        &registry,
        "running on the other machine",
        Duration::from_secs(40),
        |s| running_on(s, &name).as_ref() == Some(&machines[1]),
    )
    .await;
    let entry = &snapshot.moves[&name].history[0];
    assert_eq!(entry.machine, machines[0].as_str());
    assert!(
        entry
            .what
            .starts_with("restarted 2 times by its Restart= within 10 minutes"),
        "{entry:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reschedule_no_a_failed_unit_stays_where_it_failed() {
    let (_etcd, _dir, _fleetds, registry, machines) = cluster().await;
    let name = UnitName::new("stays.service").unwrap();
    let unit = failing_on(&machines[0], "Reschedule=no\nRescheduleDelay=0\n");
    launch(&registry, &name, &unit).await;
    until(
        &registry,
        "recorded as left",
        Duration::from_secs(20),
        |s| {
            s.moves.get(&name).is_some_and(|m| {
                m.history
                    .last()
                    .is_some_and(|e| e.action == "left where it failed: Reschedule=no")
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = registry
        .snapshot(&fleet_registry::Scope::All)
        .await
        .unwrap();
    assert!(snapshot.schedule[&machines[0]].contains_key(&name), "moved");
    assert_eq!(snapshot.moves[&name].moves, 0);
    let state = &snapshot.states[&machines[0]][&name];
    assert_eq!(state.active, "failed");
}

/// One machine, embedded registry: a unit that fails everywhere is started again where it is
/// after 1 s, then 2 s, and left after two moves.
#[test]
fn a_unit_failing_everywhere_backs_off_and_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = common::serving(common::fleetd(dir.path(), "node1"), dir.path());
    let unit = dir.path().join("broken.service");
    std::fs::write(
        &unit,
        "[Service]\nExecStart=/bin/false\n[X-Fleet]\nRescheduleDelay=1s\nRescheduleAttempts=2\n",
    )
    .unwrap();
    let endpoint = format!(
        "--endpoint=unix://{}",
        dir.path().join("fleet.sock").display()
    );
    let (code, _, err) = common::fleetctl(
        &[
            &endpoint,
            "start",
            "--no-block",
            &unit.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let began = Instant::now();
    let socket = dir.path().join("fleet.sock");
    let moves = common::actions_until(
        &socket,
        "broken.service",
        "gave up",
        Duration::from_secs(30),
    );
    assert_eq!(moves.len(), 3, "{moves:?}");
    assert!(
        moves[..2].iter().all(|a| a.starts_with("moved to ")),
        "{moves:?}"
    );
    assert_eq!(
        moves[2],
        "left where it failed: gave up after 2 moves (RescheduleAttempts=2)"
    );
    // 1 s, then 2 s: at least 3 s in all.
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    common::stop(&mut fleetd, "-TERM");
}
