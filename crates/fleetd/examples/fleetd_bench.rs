//! fleetd end to end, release build, default intervals: the time from a unit set "launched"
//! through the API to its process running on one node (next to the floor: spawning the process
//! directly), and the engine leader takeover after `kill -9` with two fleetds on one etcd.
//!
//! Run with `scripts/bench fleetd`. Options: `--units N` (default 20), `--takeovers N` (default 2).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::measure::{
    built_binary, count_option, http_unix as http, latency_table, spawn_floor,
};
use fleet_testkit::{DataDir, EtcdServer};

fn spawn_fleetd(dir: &Path, machine: &str, etcd: Option<&str>) -> Child {
    let mut command = Command::new(built_binary("fleetd"));
    command
        .env_clear()
        .env("FLEET_DATA_DIR", dir.join(machine))
        .env("FLEET_UNITS_DIRECTORY", dir.join(machine).join("units"))
        .env("FLEET_MACHINE_ID", machine)
        .env("FLEET_UNIT_MANAGER", "native")
        .env(
            "FLEET_API_LISTEN",
            format!("unix://{}", dir.join(format!("{machine}.sock")).display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(endpoint) = etcd {
        command
            .env("FLEET_ETCD_SERVERS", endpoint)
            .env("FLEET_ETCD_KEY_PREFIX", "/bench/");
    }
    command.spawn().expect("fleetd")
}

fn wait_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no API socket at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The machine ID of the engine leader, from `machines`... the API has no leader field, so it
/// is read from the fleetd logs' absence: the registry is asked through a fleetd's state dir.
fn leader(etcd: &EtcdServer) -> Option<String> {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            "--print-value-only",
            "/bench/leader",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    value["machine"].as_str().map(str::to_owned)
}

fn main() {
    let units = count_option("--units", 20);
    let takeovers = count_option("--takeovers", 2);
    let dir = tempfile::tempdir().expect("temp dir");

    // The floor: spawning the same process directly.
    let floor = spawn_floor(units);

    // One node, embedded registry, default intervals.
    let mut node = spawn_fleetd(dir.path(), "single", None);
    let socket = dir.path().join("single.sock");
    wait_socket(&socket);
    let mut latencies = Vec::new();
    for i in 0..units {
        let name = format!("bench{i}.service");
        let body = format!(
            r#"{{"desiredState":"launched","name":"{name}","options":[{{"name":"ExecStart","section":"Service","value":"/bin/sleep 600"}}]}}"#
        );
        let started = Instant::now();
        assert_eq!(
            http(
                &socket,
                "PUT",
                &format!("/fleet/v1/units/{name}"),
                Some(&body)
            )
            .0,
            201
        );
        loop {
            let (status, body) = http(&socket, "GET", &format!("/fleet/v1/state/{name}"), None);
            if status == 200 && body.contains(r#""systemdSubState":"running""#) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} never ran"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status()
        .ok();
    node.wait().ok();

    // Two fleetds on one etcd (data on disk), default intervals: kill -9 the leader.
    let etcd = EtcdServer::start_in(DataDir::Disk);
    let mut takeover_times = Vec::new();
    let mut fleetds = vec![
        (
            "a".to_string(),
            spawn_fleetd(dir.path(), "a", Some(&etcd.endpoint())),
        ),
        (
            "b".to_string(),
            spawn_fleetd(dir.path(), "b", Some(&etcd.endpoint())),
        ),
    ];
    for round in 0..takeovers {
        let deadline = Instant::now() + Duration::from_secs(60);
        let current = loop {
            if let Some(leader) = leader(&etcd) {
                break leader;
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(50));
        };
        let index = fleetds
            .iter()
            .position(|(m, _)| *m == current)
            .expect("leader is ours");
        let (machine, mut child) = fleetds.remove(index);
        child.kill().ok(); // SIGKILL
        child.wait().ok();
        let killed = Instant::now();
        loop {
            if leader(&etcd).is_some_and(|l| l != machine) {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no takeover");
            std::thread::sleep(Duration::from_millis(20));
        }
        takeover_times.push(killed.elapsed());
        let replacement = format!("{machine}{round}");
        fleetds.push((
            replacement.clone(),
            spawn_fleetd(dir.path(), &replacement, Some(&etcd.endpoint())),
        ));
    }
    for (_, mut child) in fleetds {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .ok();
        child.wait().ok();
    }
    takeover_times.sort();

    print!(
        "{}",
        latency_table(&[
            ("floor: spawn /bin/sleep directly".to_owned(), &floor),
            (
                format!("API PUT launched -> running, one node ({units} units)"),
                &latencies
            ),
            (
                format!("leader takeover after kill -9, default lease ({takeovers}x)"),
                &takeover_times
            ),
        ])
    );
    println!("(default engine_lease_ttl 3 s; fleet 1.0 used 5 x engine_reconcile_interval = 10 s)");
}
