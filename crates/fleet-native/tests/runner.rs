//! The service runner with real processes. Each scenario runs in a child process of its own
//! (a subreaper, as a shim is), which prints the unit's final status and its log; the test
//! asserts on them.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use fleet_native::process::identity;
use fleet_native::reaper::Reaper;
use fleet_native::runner::{Control, RunContext, Runner};
use fleet_native::service::Service;
use fleet_native::specifiers::SpecifierContext;
use fleet_native::status::{RunResult, SubState, UnitStatus};
use fleet_unit::UnitFile;
use tokio::sync::{mpsc, watch};

const UNIT_ENV: &str = "FLEET_AGENT_RUNNER_UNIT";
/// What the child tells its runner, when: `stop@500 reload@300` (milliseconds after the start).
const CONTROLS_ENV: &str = "FLEET_AGENT_RUNNER_CONTROLS";

#[tokio::test]
#[ignore = "runs as the child process of the runner tests"]
async fn runner_child() {
    let Ok(text) = std::env::var(UNIT_ENV) else {
        return;
    };
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let context = SpecifierContext {
        unit_name: "test.service".into(),
        ..SpecifierContext::default()
    };
    let service = Service::load(&UnitFile::parse(&text).unwrap(), &context).unwrap();
    let (log, mut records) = mpsc::channel(1024);
    let printer = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some((stream, line)) = records.recv().await {
            lines.push(format!("{stream:?}: {line}"));
        }
        lines
    });
    let run_context = RunContext {
        environment: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        working_directory: "/".into(),
        identity: Some(identity(None, None).unwrap()),
        reaper: Reaper::start().unwrap(),
        log,
        poll: Duration::from_millis(20),
        notify_socket: Some(format!("@fleet-notify-test/{}", std::process::id())),
    };
    let initial = UnitStatus::initial(String::new());
    let (status, _watcher) = watch::channel(initial);
    let (controls, receiver) = mpsc::channel(8);
    let runner = Runner::new(service, run_context, status, receiver);
    let run = tokio::spawn(runner.run());
    let started = tokio::time::Instant::now();
    let mut planned: Vec<(u64, &str)> = Vec::new();
    let spec = std::env::var(CONTROLS_ENV).unwrap_or_default();
    for item in spec.split_whitespace() {
        let (control, ms) = item.split_once('@').unwrap();
        planned.push((ms.parse().unwrap(), control));
    }
    planned.sort();
    for (ms, control) in planned {
        tokio::time::sleep_until(started + Duration::from_millis(ms)).await;
        let control = match control {
            "stop" => Control::Stop,
            "reload" => Control::Reload,
            other => panic!("no control {other}"),
        };
        controls.send(control).await.unwrap();
    }
    let status = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap()
        .unwrap();
    drop(controls);
    let lines = printer.await.unwrap();
    for line in lines {
        println!("log {line}");
    }
    println!("final {}", serde_json::to_string(&status).unwrap());
}

/// Runs `unit` in a child process, stopped after `stop_after`; its final status and log.
fn run(unit: &str, stop_after: Option<Duration>) -> (UnitStatus, Vec<String>) {
    let controls = stop_after.map(|after| format!("stop@{}", after.as_millis()));
    run_with(unit, &controls.unwrap_or_default())
}

/// Runs `unit` in a child process told `controls` (see `CONTROLS_ENV`); its final status
/// and log lines.
fn run_with(unit: &str, controls: &str) -> (UnitStatus, Vec<String>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["runner_child", "--exact", "--ignored", "--nocapture"])
        .env(UNIT_ENV, unit)
        .env(CONTROLS_ENV, controls);
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = stdout
        .lines()
        .find_map(|l| l.strip_prefix("final "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| {
            panic!(
                "no final status: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let log = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("log "))
        .map(str::to_owned)
        .collect();
    (status, log)
}

fn check(
    unit: &str,
    stop_after: Option<Duration>,
    sub: SubState,
    result: RunResult,
    log_has: &[&str],
) -> UnitStatus {
    let (status, log) = run(unit, stop_after);
    assert_eq!(
        (status.sub, status.result),
        (sub, result),
        "{unit}\n{status:?}\n{log:#?}"
    );
    for expected in log_has {
        assert!(
            log.iter().any(|l| l.contains(expected)),
            "{expected:?} not in {log:#?}"
        );
    }
    status
}

#[test]
fn a_oneshot_runs_its_commands_in_order_and_ends_dead() {
    check(
        "[Service]\nType=oneshot\nExecStartPre=/bin/echo pre\nExecStart=/bin/echo one\nExecStart=/bin/sh -c 'echo two >&2'\nExecStartPost=-/bin/false\n",
        None,
        SubState::Dead,
        RunResult::Success,
        &["Stdout: pre", "Stdout: one", "Stderr: two", "(ignored)"],
    );
}

#[test]
fn a_failing_start_pre_fails_the_unit_with_its_status() {
    let status = check(
        "[Service]\nExecStartPre=/bin/sh -c 'exit 3'\nExecStart=/bin/sleep 30\nExecStopPost=/bin/echo cleaned\n",
        None,
        SubState::Failed,
        RunResult::ExitCode,
        &["exited, code=exited, status=3", "Stdout: cleaned"],
    );
    assert!(status.reason.unwrap().contains("status=3"));
}

#[test]
fn a_missing_executable_is_a_clear_failure() {
    let status = check(
        "[Service]\nExecStart=/no/such/binary\n",
        None,
        SubState::Failed,
        RunResult::Resources,
        &[],
    );
    assert_eq!(
        status.reason.as_deref(),
        Some("Failed to locate executable /no/such/binary: No such file or directory")
    );
}

#[test]
fn a_main_process_exiting_non_zero_fails_the_unit() {
    check(
        "[Service]\nExecStart=/bin/sh -c 'echo bye; exit 7'\n",
        None,
        SubState::Failed,
        RunResult::ExitCode,
        &["Stdout: bye", "Main process exited, code=exited, status=7."],
    );
}

#[test]
fn restarts_stop_at_the_start_limit() {
    let status = check(
        "[Unit]\nStartLimitIntervalSec=10\nStartLimitBurst=3\n[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=50ms\n",
        None,
        SubState::Failed,
        RunResult::StartLimitHit,
        &["restart counter is at 3", "Start request repeated too quickly"],
    );
    // As systemd: the third restart is scheduled, then refused by the limit.
    assert_eq!(status.restarts, 3);
}

#[test]
fn stop_escalates_to_sigkill_for_a_process_ignoring_sigterm() {
    let status = check(
        "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; echo ready; while true; do sleep 0.1; done'\nTimeoutStopSec=1\n",
        Some(Duration::from_millis(500)),
        // As systemd: a unit that outlived its stop timeout failed (`timeout`).
        SubState::Failed,
        RunResult::Timeout,
        &["Stdout: ready", "State 'stop-sigterm' timed out. Killing."],
    );
    assert_eq!(
        status.reason.as_deref(),
        Some("State 'stop-sigterm' timed out.")
    );
}

#[test]
fn stop_runs_exec_stop_and_ends_a_forked_daemon_too() {
    check(
        "[Service]\nType=forking\nExecStart=/bin/sh -c 'sleep 30 & echo started'\nExecStop=/bin/echo stopping\n",
        Some(Duration::from_millis(500)),
        SubState::Dead,
        RunResult::Success,
        &["Stdout: started", "Stdout: stopping"],
    );
}

#[test]
fn a_reload_runs_exec_reload_beside_the_main_process() {
    // fleet never asks for a reload; a shim is sent `reload` by hand.
    let (status, log) = run_with(
        "[Service]\nExecStart=/bin/sleep 30\nExecStartPost=/bin/sh -c 'echo post $MAINPID'\nExecReload=/bin/sh -c 'echo reload $MAINPID'\n",
        "reload@500 stop@1000",
    );
    assert_eq!(
        (status.sub, status.result),
        (SubState::Dead, RunResult::Success)
    );
    let pid = |prefix: &str| {
        log.iter()
            .find_map(|l| l.strip_prefix(&format!("Stdout: {prefix} ")))
            .unwrap_or_else(|| panic!("no {prefix} in {log:#?}"))
            .to_owned()
    };
    assert!(pid("post").parse::<u32>().is_ok(), "{log:#?}");
    assert_eq!(pid("post"), pid("reload"), "the same main process");
}

#[test]
fn a_notify_service_is_running_after_ready() {
    // systemd-notify only sends a datagram to $NOTIFY_SOCKET; no systemd needs to run.
    check(
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'sleep 0.2; systemd-notify --ready; echo ready-sent; exec sleep 30'\nExecStartPost=/bin/echo post\n",
        // Room for a loaded machine: stopped before READY=1, the unit never logs it.
        Some(Duration::from_millis(2500)),
        SubState::Dead,
        RunResult::Success,
        &["Stdout: ready-sent", "Stdout: post"],
    );
    check(
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'exit 0'\n",
        None,
        SubState::Failed,
        RunResult::Resources,
        &["Main process exited before READY=1, code=exited, status=0."],
    );
}

#[test]
fn exec_stop_runs_after_the_main_process_crashed_but_not_after_a_failed_start() {
    // systemd runs ExecStop= whenever the start had succeeded, also when the main process
    // then ended on its own.
    check(
        "[Service]\nExecStart=/bin/sh -c 'echo up; kill -9 $$$$'\nExecStop=/bin/echo stop-ran\nExecStopPost=/bin/echo post-ran\n",
        None,
        SubState::Failed,
        RunResult::Signal,
        &["Stdout: up", "Stdout: stop-ran", "Stdout: post-ran"],
    );
    let (_, log) = run(
        "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/sleep 30\nExecStop=/bin/echo stop-ran\n",
        None,
    );
    assert!(!log.iter().any(|l| l.contains("stop-ran")), "{log:?}");
}

#[test]
fn a_control_group_stop_signals_every_process_at_once() {
    // A shell loop with a child: both get SIGTERM at once, so the stop takes no sleep's
    // length.
    let begun = std::time::Instant::now();
    check(
        "[Service]\nExecStart=/bin/sh -c 'echo ready; while :; do sleep 5; done'\n",
        Some(Duration::from_millis(300)),
        SubState::Dead,
        RunResult::Success,
        &["Stdout: ready"],
    );
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
}

#[test]
fn output_that_is_not_utf8_or_never_ends_a_line_is_logged_and_bounded() {
    // A byte that is not UTF-8 is shown as U+FFFD, and the unit writes on (no SIGPIPE).
    check(
        "[Service]\nExecStart=/bin/sh -c 'printf \"\\\\377\\\\n\"; sleep 0.2; echo after'\n",
        None,
        SubState::Dead,
        RunResult::Success,
        &["Stdout: \u{fffd}", "Stdout: after"],
    );
    // 200,000 bytes without a newline become records of at most LINE_MAX bytes.
    let (status, log) = run(
        "[Service]\nExecStart=/bin/sh -c 'head -c 200000 /dev/zero | tr \"\\\\000\" a'\n",
        None,
    );
    assert_eq!(
        (status.sub, status.result),
        (SubState::Dead, RunResult::Success)
    );
    let sizes: Vec<usize> = log
        .iter()
        .filter_map(|l| l.strip_prefix("Stdout: "))
        .map(str::len)
        .collect();
    let max = fleet_native::runner::LINE_MAX;
    assert_eq!(
        sizes,
        vec![max, max, max, max, 200_000 - 4 * max],
        "{sizes:?}"
    );
}
