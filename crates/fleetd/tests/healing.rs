//! Self-healing on a real fleetd (embedded registry, native supervisor): a unit's HTTP health
//! check, served by the test and turned unhealthy at will, restarts the unit in place until its
//! budget is spent, after which the unit is left running, unhealthy, with the reason; with
//! `OnUnhealthy=none` it is only reported. What the checks say is in the API, `list-units
//! --fields=...,health` and `status`.

mod common;
use common::{eventually, Daemon};
use fleet_testkit::measure::http_unix;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An HTTP server on loopback answering 200 while `healthy` holds, 503 otherwise; its port.
fn health_endpoint(healthy: Arc<AtomicBool>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let status = match healthy.load(Ordering::SeqCst) {
                true => "200 OK",
                false => "503 Service Unavailable",
            };
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

fn started(dir: &Path) -> Daemon {
    let mut command = common::fleetd(dir, "node1");
    if let Ok(log) = std::env::var("HEALING_TEST_LOG") {
        command
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(log).unwrap());
    }
    common::serving(command, dir)
}

/// `unit`'s main PID while the native supervisor says it runs.
fn main_pid(dir: &Path, unit: &str) -> Option<u64> {
    let state = std::fs::read_to_string(dir.join(format!("run/native/{unit}/state.json"))).ok()?;
    let state: serde_json::Value = serde_json::from_str(&state).ok()?;
    (state["sub"] == "running")
        .then(|| state["main_pid"].as_u64())
        .flatten()
}

/// The unit's state object as the API gives it.
fn state(dir: &Path, unit: &str) -> serde_json::Value {
    let (status, body) = http_unix(
        &dir.join("fleet.sock"),
        "GET",
        &format!("/fleet/v1/state/{unit}"),
        None,
    );
    match status {
        200 => serde_json::from_str(&body).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

fn fleetctl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let endpoint = format!("--endpoint=unix://{}", dir.join("fleet.sock").display());
    let mut all = vec![endpoint.as_str()];
    all.extend(args);
    common::fleetctl(&all, &[])
}

/// Starts `unit` (checked at `port`) with `x_fleet` lines besides the check; its main PID
/// once the checks say it is healthy.
fn start_checked(dir: &Path, unit: &str, port: u16, x_fleet: &str) -> u64 {
    let file = dir.join(unit);
    std::fs::write(
        &file,
        format!(
            "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nHealthCheck=http://127.0.0.1:{port}/health\nHealthCheckInterval=200ms\nHealthCheckStartPeriod=0\nHealthCheckFailures=2\n{x_fleet}"
        ),
    )
    .unwrap();
    let (code, _, err) = fleetctl(dir, &["start", &file.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    eventually("healthy", Duration::from_secs(15), || {
        let state = state(dir, unit);
        common::holds(state["health"] == "healthy" && state["healthOutput"] == "HTTP/1.1 200 OK")
    });
    main_pid(dir, unit).expect("running")
}

#[test]
fn an_unhealthy_unit_is_restarted_in_place_until_its_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let healthy = Arc::new(AtomicBool::new(true));
    let port = health_endpoint(Arc::clone(&healthy));
    let unit = "web.service";
    let first = start_checked(dir.path(), unit, port, "RescheduleAfterRestarts=2\n");

    healthy.store(false, Ordering::SeqCst);
    // Two restarts (each a new process), then the budget is spent.
    let second = eventually("restarted once", Duration::from_secs(15), || {
        main_pid(dir.path(), unit)
            .filter(|pid| *pid != first)
            .ok_or_else(|| "not yet".to_owned())
    });
    let third = eventually("restarted twice", Duration::from_secs(15), || {
        main_pid(dir.path(), unit)
            .filter(|pid| *pid != second)
            .ok_or_else(|| "not yet".to_owned())
    });
    let reason = "unhealthy after 2 restarts within 10 minutes (RescheduleAfterRestarts=2)";
    eventually(
        "left, unhealthy, with the reason",
        Duration::from_secs(15),
        || {
            let state = state(dir.path(), unit);
            common::holds(state["health"] == "unhealthy" && state["reason"] == reason)
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        main_pid(dir.path(), unit),
        Some(third),
        "restarted past its budget"
    );

    let (code, out, err) = fleetctl(
        dir.path(),
        &["list-units", "--no-legend", "--fields=unit,active,health"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "web.service\tactive\tunhealthy\n"),
        "{err}"
    );
    let (_, out, _) = fleetctl(dir.path(), &["status", unit]);
    assert!(
        out.contains("   Health: unhealthy (HTTP/1.1 503 Service Unavailable)"),
        "{out}"
    );
    assert!(out.contains(&format!("   Reason: {reason}")), "{out}");

    // Each restart is in the unit's failure history, with what the check said.
    let history = common::failures_until(
        &dir.path().join("fleet.sock"),
        unit,
        "restarted in place",
        Duration::from_secs(5),
    );
    let expected = (
        "unhealthy: HTTP/1.1 503 Service Unavailable".to_owned(),
        "restarted in place (OnUnhealthy=restart)".to_owned(),
    );
    assert_eq!(history, [expected.clone(), expected]);

    let (_, metrics) = http_unix(&dir.path().join("fleet.sock"), "GET", "/metrics", None);
    assert!(
        metrics.contains("fleet_health_restarts_total 2\n"),
        "{metrics}"
    );
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fleet_health_checks_total{result=\"failed\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failed >= 6, "{failed} failed checks: {metrics}");

    // Healthy again: the reason goes; the same process runs on.
    healthy.store(true, Ordering::SeqCst);
    eventually("healthy again", Duration::from_secs(15), || {
        let state = state(dir.path(), unit);
        common::holds(state["health"] == "healthy" && state["reason"].is_null())
    });
    assert_eq!(main_pid(dir.path(), unit), Some(third));
    common::stop(&mut fleetd, "-TERM");
}

#[test]
fn with_on_unhealthy_none_the_unit_is_only_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let healthy = Arc::new(AtomicBool::new(true));
    let port = health_endpoint(Arc::clone(&healthy));
    let unit = "watched.service";
    let pid = start_checked(dir.path(), unit, port, "OnUnhealthy=none\n");
    healthy.store(false, Ordering::SeqCst);
    eventually("reported unhealthy", Duration::from_secs(15), || {
        let state = state(dir.path(), unit);
        common::holds(
            state["health"] == "unhealthy"
                && state["reason"] == "unhealthy; OnUnhealthy=none: only reported",
        )
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(main_pid(dir.path(), unit), Some(pid), "never restarted");
    common::stop(&mut fleetd, "-TERM");
}

#[test]
fn a_health_check_that_cannot_be_used_is_refused_at_submit_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let body = r#"{"desiredState":"launched","options":[{"section":"Service","name":"ExecStart","value":"/bin/sleep 600"},{"section":"X-Fleet","name":"HealthCheck","value":"tcp://localhost:99999"}]}"#;
    let (status, answer) = http_unix(
        &dir.path().join("fleet.sock"),
        "PUT",
        "/fleet/v1/units/bad.service",
        Some(body),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .contains("invalid HealthCheck=tcp://localhost:99999: port \\\"99999\\\" out of range"),
        "{answer}"
    );
    let (_, listed) = http_unix(
        &dir.path().join("fleet.sock"),
        "GET",
        "/fleet/v1/units",
        None,
    );
    assert!(!listed.contains("bad.service"), "{listed}");
    common::stop(&mut fleetd, "-TERM");
}

/// A global unit is never moved: one that fails is started again where it is, after its
/// delay doubled per restart, and left failed (with the reason) after `RescheduleAttempts=`.
#[test]
fn a_failed_global_unit_is_restarted_in_place_and_not_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let starts = dir.path().join("starts");
    let file = dir.path().join("flaky.service");
    std::fs::write(
        &file,
        format!(
            "[Service]\nExecStart=/bin/sh -c 'echo start >> {}; exit 1'\n[X-Fleet]\nGlobal=true\nRescheduleDelay=1s\nRescheduleAttempts=2\n",
            starts.display()
        ),
    )
    .unwrap();
    let began = std::time::Instant::now();
    let (code, _, err) = fleetctl(
        dir.path(),
        &["start", "--no-block", &file.display().to_string()],
    );
    assert_eq!(code, 0, "{err}");
    let reason = "failed; restarted 2 times (RescheduleAttempts=2)";
    eventually("given up, with the reason", Duration::from_secs(60), || {
        let state = state(dir.path(), "flaky.service");
        common::holds(state["systemdActiveState"] == "failed" && state["reason"] == reason)
            .map_err(|_| state.to_string())
    });
    // Started, then again after 1 s and after 2 s more.
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(started.lines().count(), 3, "{started}");
    let history = common::failures_until(
        &dir.path().join("fleet.sock"),
        "flaky.service",
        "left failed",
        Duration::from_secs(5),
    );
    let actions: Vec<&str> = history.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "restarted in place (a global unit is never moved)",
            "restarted in place (a global unit is never moved)",
            &format!("left failed: {reason}"),
        ]
    );
    common::stop(&mut fleetd, "-TERM");
}

fn kill(pid: u64, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

fn start_file(dir: &Path, unit: &str, text: &str) {
    let file = dir.join(unit);
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = fleetctl(dir, &["start", "--no-block", &file.display().to_string()]);
    assert_eq!(code, 0, "{err}");
}

/// A unit whose main process is killed outside fleet while it is wanted launched is started
/// again by its agent, within its budget, and each time is in its failure history; a unit
/// whose process ended by itself is left as systemd leaves it.
#[test]
fn a_unit_killed_outside_fleet_is_started_again_and_one_that_ended_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let socket = dir.path().join("fleet.sock");
    let unit = "killed.service";
    start_file(
        dir.path(),
        unit,
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nRescheduleAfterRestarts=2\n",
    );
    start_file(
        dir.path(),
        "done.service",
        "[Service]\nExecStart=/bin/sh -c 'sleep 0.5'\n",
    );
    let within = Duration::from_secs(15);
    let mut pid = eventually("running", within, || {
        main_pid(dir.path(), unit).ok_or_else(|| "not yet".to_owned())
    });
    let killed_what = "its main process was killed by SIGTERM outside fleet";
    for round in 1..=2 {
        kill(pid, "-TERM");
        pid = eventually("started again", within, || {
            main_pid(dir.path(), unit)
                .filter(|new| *new != pid)
                .ok_or_else(|| "not yet".to_owned())
        });
        let history = common::failures_until(&socket, unit, "started again", within);
        assert_eq!(history.len(), round, "{history:?}");
        assert_eq!(history[round - 1].0, killed_what);
    }
    // Past its budget: left stopped, and said so.
    kill(pid, "-TERM");
    let history = common::failures_until(&socket, unit, "left stopped", within);
    assert_eq!(history.len(), 3, "{history:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(main_pid(dir.path(), unit), None, "started past its budget");
    let left = state(dir.path(), unit);
    assert_eq!(left["systemdActiveState"], "inactive");
    assert_eq!(
        left["reason"],
        format!("{killed_what}; left stopped after 2 restarts within 10 minutes (RescheduleAfterRestarts=2)")
    );

    // The unit that ended by itself: inactive, never started again, no failures.
    eventually("ended", within, || {
        common::holds(state(dir.path(), "done.service")["systemdSubState"] == "dead")
    });
    std::thread::sleep(Duration::from_secs(1));
    let (_, body) = http_unix(&socket, "GET", "/fleet/v1/units/done.service", None);
    assert!(!body.contains("failures"), "{body}");
    assert_eq!(
        state(dir.path(), "done.service")["systemdActiveState"],
        "inactive"
    );
    common::stop(&mut fleetd, "-TERM");
}
