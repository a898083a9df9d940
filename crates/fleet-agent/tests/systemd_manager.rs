//! The systemd unit manager against a real systemd 252, booted per test in a sandbox
//! (`fleet_testkit::SystemdSandbox`; never the host's own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::manager::UnitManager;
use fleet_agent::systemd::{SystemdConfig, SystemdManager};
use fleet_testkit::SystemdSandbox;
use fleet_unit::{UnitFile, UnitName};

struct Machine {
    sandbox: SystemdSandbox,
    manager: Arc<SystemdManager>,
}

impl Machine {
    async fn boot() -> Machine {
        let sandbox = SystemdSandbox::boot(env!("CARGO_TARGET_TMPDIR").as_ref()).unwrap();
        let manager = SystemdManager::connect(config(&sandbox)).await.unwrap();
        Machine { sandbox, manager }
    }

    async fn load(&self, name: &str, text: &str) -> UnitName {
        let name = UnitName::new(name).unwrap();
        let unit = UnitFile::parse(text.as_bytes()).unwrap();
        self.manager.load(&name, &unit).await.unwrap();
        name
    }

    /// Waits (at most 10 s) until the manager reports `active`/`sub` for `name`.
    async fn until_state(&self, name: &UnitName, active: &str, sub: &str) -> Duration {
        let started = Instant::now();
        loop {
            let state = self.manager.state(name).await.unwrap();
            if state.active == active && state.sub == sub {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: {state:?}, not {active} ({sub})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (at most 10 s: journald writes a moment after the unit) for a record of `name`
    /// ending with `text`.
    async fn until_logged(&self, name: &UnitName, text: &str) {
        let started = Instant::now();
        loop {
            let log = self.manager.journal(name, 10).await.unwrap();
            if log.iter().any(|r| r.ends_with(text)) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: {log:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What systemd itself says (`systemctl is-active`).
    fn is_active(&self, name: &str) -> String {
        match self.sandbox.systemctl(&["is-active", name]) {
            Ok(out) => out,
            Err(e) => e.lines().last().unwrap_or_default().trim().to_owned(),
        }
    }
}

/// A property of a unit as systemd itself has it (`systemctl show -P`), e.g. `MainPID`.
fn property(sandbox: &SystemdSandbox, unit: &str, property: &str) -> String {
    let value = sandbox.systemctl(&["show", "-P", property, unit]);
    value.unwrap().trim().to_owned()
}

fn config(sandbox: &SystemdSandbox) -> SystemdConfig {
    SystemdConfig {
        address: Some(sandbox.bus_address()),
        user: false,
        units_dir: sandbox.shared_dir().join("units"),
        command_prefix: sandbox.enter(),
        root: sandbox.root(),
    }
}

const SLEEPER: &str = "[Unit]\nDescription=Sleeps\n\n[Service]\nExecStart=/bin/sh -c 'echo hello from systemd; exec sleep 300'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_start_stop_unload_and_the_log() {
    let machine = Machine::boot().await;
    let name = machine.load("hello.service", SLEEPER).await;
    let link = machine
        .sandbox
        .root()
        .join("run/systemd/system/hello.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        machine.sandbox.shared_dir().join("units/hello.service")
    );
    let state = machine.manager.state(&name).await.unwrap();
    assert_eq!(
        (state.load.as_str(), state.active.as_str()),
        ("loaded", "inactive")
    );
    machine.manager.start(&name).await.unwrap();
    let took = machine.until_state(&name, "active", "running").await;
    println!("StartUnit to active (signal): {took:?}");
    assert_eq!(machine.is_active("hello.service"), "active");
    let log = machine.manager.journal(&name, 10).await.unwrap();
    assert!(
        log.iter()
            .any(|r| r.ends_with(" stdout hello from systemd")),
        "{log:?}"
    );
    let status = machine.manager.status(&name).await.unwrap().unwrap();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.text.starts_with("● hello.service - Sleeps\n")
            && status.text.contains("Active: active (running)"),
        "{}",
        status.text
    );

    machine.manager.stop(&name).await.unwrap();
    machine.until_state(&name, "inactive", "dead").await;
    machine.manager.unload(&name).await.unwrap();
    assert!(machine.manager.loaded().await.unwrap().is_empty());
    assert!(!machine
        .sandbox
        .shared_dir()
        .join("units/hello.service")
        .exists());
    assert!(
        link.symlink_metadata().is_err(),
        "{} is left",
        link.display()
    );
    let state = machine.manager.state(&name).await.unwrap();
    assert_eq!(state.load, "not-found");
}

/// A unit is loaded without a `Reload` when systemd holds nothing under its name; a copy
/// that replaces one systemd still holds (named by another unit, unloaded a moment ago or
/// loaded over) is read with one: systemd runs the new text either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_copy_under_the_same_name_runs_its_own_text() {
    let machine = Machine::boot().await;
    let copy = |n: u32| {
        format!("[Unit]\nDescription=Copy {n}\n\n[Service]\nExecStart=/bin/sh -c 'echo copy {n}; exec sleep 300'\n")
    };
    // A unit that names it keeps systemd from collecting it while it is stopped.
    let holder = machine
        .load(
            "holder.service",
            "[Unit]\nAfter=copy.service\n\n[Service]\nExecStart=/bin/sleep 300\n",
        )
        .await;
    machine.manager.start(&holder).await.unwrap();
    let name = machine.load("copy.service", &copy(1)).await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    machine.until_logged(&name, "copy 1").await;

    // Unloaded while running and loaded again at once: systemd still has the old unit.
    machine.manager.unload(&name).await.unwrap();
    machine.load("copy.service", &copy(2)).await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    machine.until_logged(&name, "copy 2").await;

    assert_eq!(
        property(&machine.sandbox, "copy.service", "Description"),
        "Copy 2"
    );

    // Loaded over while it runs, then restarted, as a --replace does.
    machine.load("copy.service", &copy(3)).await;
    machine.manager.stop(&name).await.unwrap();
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    machine.until_logged(&name, "copy 3").await;
    assert_eq!(
        property(&machine.sandbox, "copy.service", "Description"),
        "Copy 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_unit_is_failed() {
    let machine = Machine::boot().await;
    let name = machine
        .load("broken.service", "[Service]\nExecStart=/bin/false\n")
        .await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "failed", "failed").await;
    let status = machine.manager.status(&name).await.unwrap().unwrap();
    assert_eq!(
        status.code, 3,
        "systemctl status of a failed unit: {status:?}"
    );
    assert!(status.text.contains("Active: failed"), "{}", status.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wanted_by_required_and_template_instances() {
    let machine = Machine::boot().await;
    let main = machine.load("main.service", "[Unit]\nRequires=db.service\nAfter=db.service\n\n[Service]\nExecStart=/bin/sleep 300\n").await;
    machine
        .load("db.service", "[Service]\nExecStart=/bin/sleep 300\n")
        .await;
    // Installed into main.service: started with it (fleet's TestInstallUnit).
    machine
        .load(
            "sidecar.service",
            "[Service]\nExecStart=/bin/sleep 300\n\n[Install]\nWantedBy=main.service\n",
        )
        .await;
    let instance = machine
        .load(
            "web@8080.service",
            "[Service]\nExecStart=/bin/sh -c 'echo port %i; exec sleep 300'\n",
        )
        .await;
    machine.manager.start(&main).await.unwrap();
    machine.manager.start(&instance).await.unwrap();
    for name in [
        "main.service",
        "db.service",
        "sidecar.service",
        "web@8080.service",
    ] {
        machine
            .until_state(&UnitName::new(name).unwrap(), "active", "running")
            .await;
    }
    machine.until_logged(&instance, " stdout port 8080").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_manager_finds_what_the_last_loaded_and_leaves_it_running() {
    let machine = Machine::boot().await;
    let name = machine.load("keep.service", SLEEPER).await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    let pid = property(&machine.sandbox, "keep.service", "MainPID");
    let hashes = machine.manager.loaded().await.unwrap();
    drop(machine.manager);

    let again = SystemdManager::connect(config(&machine.sandbox))
        .await
        .unwrap();
    assert_eq!(again.loaded().await.unwrap(), hashes);
    let state = again.state(&name).await.unwrap();
    assert_eq!(
        (state.active.as_str(), state.sub.as_str()),
        ("active", "running")
    );
    let pid_after = property(&machine.sandbox, "keep.service", "MainPID");
    assert_eq!(pid, pid_after, "restarted");
    // A unit fleetd did not load is never listed, whatever systemd runs.
    assert!(!again
        .loaded()
        .await
        .unwrap()
        .keys()
        .any(|n| n.as_str() == "dbus.service"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_systemd_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = SystemdManager::connect(SystemdConfig {
        address: Some(format!("unix:path={}/nothing", dir.path().display())),
        user: false,
        units_dir: dir.path().join("units"),
        command_prefix: Vec::new(),
        root: dir.path().to_owned(),
    })
    .await
    .err()
    .unwrap();
    assert!(
        error
            .0
            .starts_with("systemd is not reachable on unix:path="),
        "{}",
        error.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemd_reexec_restarts_nothing_and_keeps_states_current() {
    let machine = Machine::boot().await;
    let name = machine.load("steady.service", SLEEPER).await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    let main_pid = || property(&machine.sandbox, "steady.service", "MainPID");
    let before = main_pid();
    // systemd re-executes itself: it leaves the bus and takes its name again (its
    // subscribers survive a re-exec; those of a systemd that dbus-daemon disconnected do not,
    // which the manager handles by subscribing again: not reproduced here).
    machine.sandbox.systemctl(&["daemon-reexec"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while machine.sandbox.manager_property("SystemState").as_deref() != Ok("running") {
        assert!(Instant::now() < deadline, "systemd did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(main_pid(), before, "nothing restarted");
    // Signals come again: a stop made behind fleetd's back is seen without polling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    machine
        .sandbox
        .systemctl(&["stop", "steady.service"])
        .unwrap();
    machine.until_state(&name, "inactive", "dead").await;
}

/// dbus-daemon restarted under fleetd (an upgrade, a crash): the manager connects again,
/// restarts nothing, and its signals and calls work on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_connection_is_made_again_and_restarts_nothing() {
    let machine = Machine::boot().await;
    let name = machine.load("steady.service", SLEEPER).await;
    machine.manager.start(&name).await.unwrap();
    machine.until_state(&name, "active", "running").await;
    let pid = property(&machine.sandbox, "steady.service", "MainPID");

    machine
        .sandbox
        .systemctl(&["restart", "dbus.service"])
        .unwrap();
    // Calls work again on the new connection (a unit loaded and started through it)...
    let probe = machine.load("probe.service", SLEEPER).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while machine.manager.start(&probe).await.is_err() {
        assert!(Instant::now() < deadline, "no start on a new connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    machine.until_state(&probe, "active", "running").await;
    // ...the unit that ran before runs on, the same process...
    let now = property(&machine.sandbox, "steady.service", "MainPID");
    assert_eq!(now, pid, "steady.service was restarted");
    // ...and signals come on it: a stop behind fleetd's back is seen.
    machine
        .sandbox
        .systemctl(&["stop", "steady.service"])
        .unwrap();
    machine.until_state(&name, "inactive", "dead").await;
}
