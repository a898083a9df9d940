//! The fleetd binary as a daemon: it starts on the embedded registry with the native
//! supervisor, stops cleanly on SIGTERM, and refuses a bad configuration with a message
//! naming the option.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fleetd(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetd"));
    command
        .arg("--config")
        .arg(dir.join("fleet.conf"))
        .env_clear()
        .env("FLEET_DATA_DIR", dir.join("data"))
        .env("FLEET_UNITS_DIRECTORY", dir.join("units"))
        .env("FLEET_MACHINE_ID", "node1")
        .env("FLEET_UNIT_MANAGER", "native")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[test]
fn starts_on_the_embedded_registry_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.conf"),
        "metadata = role=test\nagent_ttl = 5s\n",
    )
    .unwrap();
    let mut child = fleetd(dir.path()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("data/machine-lease").exists() {
        assert!(
            Instant::now() < deadline,
            "fleetd never announced its machine"
        );
        assert!(child.try_wait().unwrap().is_none(), "fleetd exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.path().join("data/registry.redb").exists());
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "fleetd ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("registry: embedded"), "{log}");
}

#[test]
fn a_bad_configuration_is_refused_with_the_option_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.conf"), "agent_ttl = forever\n").unwrap();
    let output = fleetd(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "fleetd: fleet.conf line 1: invalid value \"forever\" for agent_ttl: not a duration like \"30s\" or \"1m30s\""
    );
    let missing = fleetd(dir.path()).arg("extra").output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
}
