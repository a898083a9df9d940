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

/// The main PIDs of `units` in the native supervisor's state, each while it runs.
fn main_pids(dir: &Path, units: &[&str]) -> Vec<Option<u64>> {
    units
        .iter()
        .map(|unit| {
            let path = dir.join(format!("run/native/{unit}/state.json"));
            let state: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            (state["sub"] == "running")
                .then(|| state["main_pid"].as_u64())
                .flatten()
        })
        .collect()
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// An etcd wiped under a running fleetd (started again empty at the same address) is a fault,
/// not "nothing is wanted any more": the units keep running with the same processes, fleetd
/// writes nothing into the new etcd, says why (log, API, fleetctl), refuses to start on it
/// after a restart, and takes the registry as it is only once the operator removed the file
/// that remembers the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_etcd_stops_no_unit_and_gets_nothing_written_until_accepted() {
    let mut etcd = EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fleetd.log");
    let socket = dir.path().join("fleet.sock");
    let servers = etcd.endpoint();
    let start = || {
        let mut command = common::fleetd(dir.path(), "m1");
        command
            .env("FLEET_ETCD_SERVERS", &servers)
            .env("FLEET_AGENT_TTL", "2s")
            .stderr(std::fs::File::create(&log).unwrap());
        command
    };
    let mut fleetd = common::serving(start(), dir.path());
    let endpoint = format!("unix://{}", socket.display());
    let fleetctl = |args: &[&str]| {
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend(args);
        common::fleetctl(&all, &[])
    };
    let units = ["a.service", "b.service"];
    for unit in units {
        std::fs::write(
            dir.path().join(unit),
            "[Service]\nExecStart=/bin/sleep 600\n",
        )
        .unwrap();
    }
    let files: Vec<String> = units
        .iter()
        .map(|u| dir.path().join(u).display().to_string())
        .collect();
    let mut args = vec!["start", "--no-block"];
    args.extend(files.iter().map(String::as_str));
    let (code, _, err) = fleetctl(&args);
    assert_eq!(code, 0, "{err}");
    let pids = common::eventually("both running", Duration::from_secs(20), || {
        let pids = main_pids(dir.path(), &units);
        pids.iter()
            .all(Option::is_some)
            .then_some(pids)
            .ok_or_else(|| "not yet".to_owned())
    });

    etcd.wipe();
    // Several machine TTLs: the lease is gone from the new etcd, and the agent's watch broke.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(main_pids(dir.path(), &units), pids, "same processes");
    assert_eq!(
        etcd.keys("").unwrap(),
        Vec::<String>::new(),
        "nothing written"
    );
    let (code, out, err) = fleetctl(&["list-units"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("the registry is empty") && err.contains("registry-known.json to accept it"),
        "{err}"
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("leaves its units as they run"), "{said}");

    // A fleetd started again on it refuses to (and still writes nothing, stops nothing).
    let quit = common::signal_and_wait(&mut fleetd, "-QUIT");
    assert!(quit.success(), "{quit:?}");
    let mut again = start().spawn().unwrap();
    let status = common::eventually("the restart refused", Duration::from_secs(20), || {
        again.try_wait().unwrap().ok_or_else(String::new)
    });
    assert_eq!(status.code(), Some(1));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("the registry is empty"), "{said}");
    assert_eq!(main_pids(dir.path(), &units), pids, "same processes");
    assert_eq!(
        etcd.keys("").unwrap(),
        Vec::<String>::new(),
        "nothing written"
    );

    // The operator accepts the registry as it is (empty): fleetd starts on it, and what it
    // now says is wanted is what runs (nothing).
    std::fs::remove_file(dir.path().join("data/registry-known.json")).unwrap();
    let _fleetd = common::serving(start(), dir.path());
    common::eventually("units stopped", Duration::from_secs(20), || {
        common::holds(pids.iter().flatten().all(|pid| !alive(*pid)))
    });
    let keys = etcd.keys("").unwrap();
    assert!(keys.iter().any(|k| k.ends_with("registry-id")), "{keys:?}");
}
