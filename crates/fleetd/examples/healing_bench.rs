//! Self-healing on real processes (release fleetd, native supervisor, two machines on one
//! etcd): how long a unit that fails takes to run healthy on another machine with
//! `RescheduleDelay=1s` (the delay itself is the ceiling: nothing can be faster), and what
//! 1,000 healthy units with a health check write to etcd while idle (the target is nothing).
//!
//! Run with `scripts/bench healing`. Options: `--trials N` (default 10), `--units N`
//! (default 1000), `--idle-seconds S` (default 30).

#[path = "node_bench/node.rs"]
#[allow(dead_code)]
mod node;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use fleet_testkit::measure::{count_option, percentile};
use fleet_testkit::{DataDir, EtcdServer};

use node::{until, Node, Setup};

const DELAY: Duration = Duration::from_secs(1);

fn main() {
    let trials = count_option("--trials", 10);
    let units = count_option("--units", 1000);
    let window = Duration::from_secs(count_option("--idle-seconds", 30) as u64);
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path();
    let etcd = EtcdServer::start_in(DataDir::Disk);
    // The health checks' endpoint: a listener that is always there (a TCP check passes on a
    // connection).
    let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let check = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    // Accepted and closed at once: a listener that never accepts fills its queue, and then
    // connections (checks) hang.
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            drop(connection);
        }
    });
    let setup = Setup {
        etcd: Some(etcd.endpoint()),
        settings: vec![
            ("AGENT_TTL", "5s".into()),
            ("ENGINE_RECONCILE_INTERVAL", "1".into()),
        ],
        log: None,
    };
    let a = Node::start(base, "heal-a", &setup);
    let b = Node::start(base, "heal-b", &setup);

    let moves = move_trials(&a, &b, &check, trials);
    let idle = idle_writes(&etcd, &a, &check, units, window);
    a.stop();
    b.stop();

    let p50 = percentile(&moves, 0.5);
    let max = moves.iter().max().copied().unwrap_or_default();
    println!(
        "{:<58} {:>7} {:>10} {:>10} {:>10} {:>7}",
        "failure to running healthy elsewhere", "trials", "p50", "max", "ceiling", "ratio"
    );
    println!(
        "{:<58} {:>7} {:>10} {:>10} {:>10} {:>7.2}",
        format!(
            "RescheduleDelay=1s, target delay + 1 s ({})",
            millis(DELAY + Duration::from_secs(1))
        ),
        moves.len(),
        millis(p50),
        millis(max),
        millis(DELAY),
        DELAY.as_secs_f64() / p50.as_secs_f64()
    );
    println!("ceiling: the delay itself (the move cannot come sooner); ratio: ceiling / p50.");
    println!();
    println!(
        "{:<58} {:>12} {:>14} {:>12}",
        "idle healthy units with a check (1 s interval)", "checks/s", "etcd writes/s", "target"
    );
    println!(
        "{:<58} {:>12.0} {:>14.3} {:>12}",
        format!("{units} units, {}s", window.as_secs()),
        idle.0,
        idle.1,
        "0"
    );
    println!("etcd writes: keys put or deleted (etcd_mvcc_put_total + delete), all machines.");
}

/// Each trial: a unit that fails on `a` (where it is placed: `b` is busier) and runs on `b`;
/// from the moment its failure shows until it runs healthy on `b`.
fn move_trials(a: &Node, b: &Node, check: &str, trials: usize) -> Vec<Duration> {
    // `b` holds one unit more from the start, so each new unit goes to `a` first.
    b.launch("heal-ballast.service", &[("MachineID", &b.machine)]);
    let command = format!("/bin/sh -c 'test %m = {} && exec sleep 3600'", b.machine);
    let mut times = Vec::new();
    for trial in 0..trials {
        let name = format!("heal{trial}.service");
        let body = serde_json::json!({"desiredState": "launched", "options": [
            {"section": "Service", "name": "ExecStart", "value": command},
            {"section": "X-Fleet", "name": "RescheduleDelay", "value": "1s"},
            {"section": "X-Fleet", "name": "HealthCheck", "value": check},
            {"section": "X-Fleet", "name": "HealthCheckInterval", "value": "100ms"},
            {"section": "X-Fleet", "name": "HealthCheckStartPeriod", "value": "0"},
        ]});
        let (status, answer) = a.api(
            "PUT",
            &format!("/fleet/v1/units/{name}"),
            Some(&body.to_string()),
        );
        assert_eq!(status, 201, "{answer}");
        until(Duration::from_secs(30), "the unit failed on a", || {
            state_of(a, &name, &a.machine).is_some_and(|s| s["systemdActiveState"] == "failed")
        });
        let failed = Instant::now();
        until(Duration::from_secs(60), "the unit healthy on b", || {
            state_of(a, &name, &b.machine)
                .is_some_and(|s| s["systemdSubState"] == "running" && s["health"] == "healthy")
        });
        times.push(failed.elapsed());
    }
    times.sort();
    times
}

/// The unit's state on `machine`, if it has one.
fn state_of(node: &Node, name: &str, machine: &str) -> Option<serde_json::Value> {
    let states = node.get(&format!("/fleet/v1/state?unitName={name}"));
    states["states"]
        .as_array()?
        .iter()
        .find(|s| s["machineID"] == machine)
        .cloned()
}

/// `units` healthy units with a check on `node`, idle: (check rounds/s, etcd writes/s).
fn idle_writes(
    etcd: &EtcdServer,
    node: &Node,
    check: &str,
    units: usize,
    window: Duration,
) -> (f64, f64) {
    for i in 0..units {
        node.launch(
            &format!("idle{i}.service"),
            &[
                ("MachineID", &node.machine),
                ("HealthCheck", check),
                ("HealthCheckInterval", "1s"),
                ("HealthCheckStartPeriod", "0"),
            ],
        );
    }
    until(Duration::from_secs(300), "every idle unit healthy", || {
        count_healthy(node) >= units
    });
    std::thread::sleep(Duration::from_secs(5));
    let writes = || {
        etcd.metric("etcd_mvcc_put_total").unwrap_or(0.0)
            + etcd.metric("etcd_mvcc_delete_total").unwrap_or(0.0)
    };
    let (w0, c0) = (writes(), checks(node));
    std::thread::sleep(window);
    let (w1, c1) = (writes(), checks(node));
    let seconds = window.as_secs_f64();
    ((c1 - c0) / seconds, (w1 - w0) / seconds)
}

fn count_healthy(node: &Node) -> usize {
    let mut healthy = 0;
    let mut token = String::new();
    loop {
        let page = node.get(&format!("/fleet/v1/state{token}"));
        healthy += page["states"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["health"] == "healthy")
            .count();
        match page["nextPageToken"].as_str() {
            Some(next) => token = format!("?nextPageToken={next}"),
            None => return healthy,
        }
    }
}

/// Health check rounds run on `node` so far.
fn checks(node: &Node) -> f64 {
    let (_, text) = node.api("GET", "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with("fleet_health_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn millis(d: Duration) -> String {
    format!("{:.0}ms", d.as_secs_f64() * 1000.0)
}
