//! One machine with a thousand units, for real: the fleetd binary with the native supervisor,
//! a thousand `/bin/sleep` services submitted at once through the API. Every unit runs, once,
//! with one process; the machine lease is never taken for lost meanwhile (a 5 s agent TTL);
//! and SIGTERM of fleetd ends them all well within systemd's 90 s stop timeout.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_testkit::measure::http_unix;

const UNITS: usize = 1000;
/// What each unit runs; the argument tells this test's processes from any other's.
const COMMAND: &str = "/bin/sleep 3597";

/// The live processes running [`COMMAND`].
fn unit_processes() -> usize {
    fleet_testkit::measure::processes_running(COMMAND).len()
}

#[test]
fn a_thousand_units_start_once_each_and_the_lease_holds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fleetd.log");
    let mut command = common::fleetd(dir.path(), "thousand");
    command
        .env("FLEET_AGENT_TTL", "5s")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let mut daemon = common::Daemon(command.spawn().unwrap());
    let socket = dir.path().join("fleet.sock");
    common::eventually("no API socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket)
            .map(drop)
            .map_err(|e| e.to_string())
    });

    let body = serde_json::json!({
        "desiredState": "launched",
        "options": [{"section": "Service", "name": "ExecStart", "value": COMMAND}],
    })
    .to_string();
    let begun = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..16 {
            let (socket, body) = (&socket, &body);
            scope.spawn(move || {
                for i in (worker..UNITS).step_by(16) {
                    let path = format!("/fleet/v1/units/t{i:04}.service");
                    let (status, answer) = http_unix(socket, "PUT", &path, Some(body));
                    assert_eq!(status, 201, "{path}: {answer}");
                }
            });
        }
    });
    // A debug build on two shared cores: generous, but far below what one start after
    // another would take.
    common::eventually("not all units run", Duration::from_secs(180), || {
        let running = unit_processes();
        (running == UNITS)
            .then_some(())
            .ok_or(format!("{running} of {UNITS} run"))
    });
    let all_running = begun.elapsed();
    common::eventually("not all reported running", Duration::from_secs(60), || {
        let running = count_states(&socket);
        (running == UNITS)
            .then_some(())
            .ok_or(format!("{running} of {UNITS} reported running"))
    });
    eprintln!("{UNITS} units running {all_running:?} after the first request");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("taken for lost") && !text.contains("lease expired"),
        "the machine lease was lost under load:\n{}",
        text.lines()
            .filter(|l| l.contains("lease"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let starts = text
        .lines()
        .filter(|l| l.contains("agent: starting"))
        .count();
    assert_eq!(starts, UNITS, "every unit started exactly once");

    let stopping = Instant::now();
    let status = common::signal_and_wait(&mut daemon, "-TERM");
    assert!(status.success(), "{status:?}");
    let stopped = stopping.elapsed();
    common::eventually(
        "unit processes outlived fleetd",
        Duration::from_secs(10),
        || {
            let left = unit_processes();
            (left == 0).then_some(()).ok_or(format!("{left} left"))
        },
    );
    eprintln!("SIGTERM with {UNITS} units: fleetd gone in {stopped:?}");
    assert!(stopped < Duration::from_secs(60), "{stopped:?}");
}

/// Running units over every page of the state listing.
fn count_states(socket: &std::path::Path) -> usize {
    let mut running = 0;
    let mut token = String::new();
    loop {
        let (_, body) = http_unix(socket, "GET", &format!("/fleet/v1/state{token}"), None);
        let page: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        running += page["states"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["systemdSubState"] == "running")
            .count();
        match page["nextPageToken"].as_str() {
            Some(next) => token = format!("?nextPageToken={next}"),
            None => return running,
        }
    }
}
