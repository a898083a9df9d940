//! `fleetd shim` as the supervisor runs it: a real process per unit, with its state file,
//! control socket in the unit's run directory and its log (here in the run directory's `logs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_native::log::{tail, LogFiles};
use fleet_native::shim::{read_state, ShimSpec, SOCKET, SPEC};
use fleet_native::status::{SubState, UnitStatus};
use fleet_testkit::measure::memory_kib;

fn spec(dir: &Path, unit_text: &str) -> ShimSpec {
    ShimSpec {
        log_dir: dir.join("logs"),
        unit_name: "hello.service".into(),
        unit_text: unit_text.into(),
        machine_id: "m1".into(),
        public_ip: "10.0.0.9".into(),
        hostname: "host1".into(),
        boot_id: "b1".into(),
        log_max_bytes: 64 * 1024,
    }
}

/// The log of the shim's unit in run directory `dir`.
fn log_of(dir: &Path) -> LogFiles {
    LogFiles::of(&dir.join("logs"), "hello.service")
}

fn start_shim(dir: &Path, unit_text: &str) -> Child {
    std::fs::write(
        dir.join(SPEC),
        serde_json::to_vec(&spec(dir, unit_text)).unwrap(),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .arg("shim")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `state.json` until `done` holds (bounded).
fn wait_state(dir: &Path, what: &str, done: impl Fn(&UnitStatus) -> bool) -> UnitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = read_state(dir).unwrap() {
            if done(&status) {
                return status;
            }
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", read_state(dir));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn request(dir: &Path, line: &str) -> UnitStatus {
    let mut stream = UnixStream::connect(dir.join(SOCKET)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
}

#[test]
fn a_shim_runs_a_unit_reports_it_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "[Service]\nExecStart=/bin/sh -c 'echo \"up on $FLEET_MACHINE_ID $COREOS_PUBLIC_IPV4\"; exec sleep 30'\n";
    let started = Instant::now();
    let mut shim = start_shim(dir.path(), unit);
    let running = wait_state(dir.path(), "running", |s| s.sub == SubState::Running);
    let to_running = started.elapsed();
    let main = running.main_pid.expect("a main PID");
    assert!(Path::new(&format!("/proc/{main}")).exists());
    let memory = memory_kib(shim.id());
    eprintln!("start to running: {to_running:?}; shim memory (KiB): {memory:?}");

    assert_eq!(request(dir.path(), "status").sub, SubState::Running);
    request(dir.path(), "stop");
    let stopped = wait_state(dir.path(), "dead", |s| s.sub == SubState::Dead);
    assert_eq!(stopped.reason, None);
    let exit = shim.wait().unwrap();
    assert!(exit.success(), "shim exit {exit:?}");
    assert!(!Path::new(&format!("/proc/{main}")).exists() || is_zombie_free(main));
    let log = tail(&log_of(dir.path()), 10).unwrap();
    assert!(
        log.iter().any(|l| l.ends_with("stdout up on m1 10.0.0.9")),
        "{log:#?}"
    );
    assert!(!dir.path().join(SOCKET).exists(), "socket removed");
}

/// A PID that still exists must belong to another process by now (PID reuse), not ours.
fn is_zombie_free(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.contains("(sleep)")
}

#[test]
fn a_unit_that_cannot_start_leaves_a_failed_state_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "[Service]\nExecStart=/bin/true\nUser=no-such-user-xyz\n";
    let mut shim = start_shim(dir.path(), unit);
    assert!(shim.wait().unwrap().success());
    let status = read_state(dir.path()).unwrap().unwrap();
    assert_eq!(status.sub, SubState::Failed);
    assert_eq!(
        status.reason.as_deref(),
        Some("Failed to determine user credentials: No such user \"no-such-user-xyz\"")
    );
}

#[test]
fn a_shim_outlives_its_parent() {
    // The shim is started by a short-lived parent (as by a fleetd that is then killed): the
    // unit keeps running, and its socket still answers.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(SPEC),
        serde_json::to_vec(&spec(dir.path(), "[Service]\nExecStart=/bin/sleep 30\n")).unwrap(),
    )
    .unwrap();
    let parent = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{} shim {} </dev/null >/dev/null 2>&1 & exit 0",
            env!("CARGO_BIN_EXE_fleetd"),
            dir.path().display()
        ))
        .status()
        .unwrap();
    assert!(parent.success());
    let running = wait_state(dir.path(), "running", |s| s.sub == SubState::Running);
    assert_eq!(request(dir.path(), "status").main_pid, running.main_pid);
    request(dir.path(), "stop");
    wait_state(dir.path(), "dead", |s| s.sub == SubState::Dead);
}

#[test]
fn reload_runs_exec_reload_and_keeps_the_unit_running() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "[Service]\nExecStart=/bin/sleep 30\nExecReload=/bin/echo reloaded\n";
    let mut shim = start_shim(dir.path(), unit);
    let running = wait_state(dir.path(), "running", |s| s.sub == SubState::Running);
    request(dir.path(), "reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tail(&log_of(dir.path()), 10)
        .unwrap()
        .iter()
        .any(|l| l.ends_with("stdout reloaded"))
    {
        assert!(Instant::now() < deadline, "ExecReload never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = wait_state(dir.path(), "running again", |s| s.sub == SubState::Running);
    assert_eq!(
        after.main_pid, running.main_pid,
        "the main process was not restarted"
    );
    request(dir.path(), "stop");
    assert!(shim.wait().unwrap().success());
}
