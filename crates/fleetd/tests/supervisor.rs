//! The native supervisor with real shims: units load, start, report and stop, and a
//! supervisor killed with SIGKILL leaves its units running for the next one to find.

use fleet_testkit::measure::is_live;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_native::supervisor::{Supervisor, SupervisorConfig};
use fleet_unit::{UnitFile, UnitName};

const CHILD_ENV: &str = "FLEETD_SUPERVISOR_CHILD_DIR";

fn config(dir: &Path) -> SupervisorConfig {
    SupervisorConfig {
        machine_id: "m1".into(),
        ..SupervisorConfig::under(dir, Path::new(env!("CARGO_BIN_EXE_fleetd")))
    }
}

fn name(n: &str) -> UnitName {
    UnitName::new(n).unwrap()
}

/// The test's directory. On drop, also when the test fails, every shim under it is killed
/// with its unit's processes (the shim leads its own session), so a failing test leaves
/// nothing running: only processes whose working directory is one of its run directories.
struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Home {
        Home(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.path().join("run")) else {
            return;
        };
        for run in entries.flatten().map(|e| e.path()) {
            let pid = std::fs::read_to_string(run.join("shim.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|pid| *pid > 1);
            let Some(pid) = pid else { continue };
            let ours = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == run);
            if ours {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

const SLEEPER: &str = "[Service]\nExecStart=/bin/sleep 60\n";

#[tokio::test]
async fn load_start_state_stop_unload() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let unit = name("sleeper.service");
    let missing = supervisor.start(&unit).await.unwrap_err();
    assert_eq!(missing.to_string(), "Unit sleeper.service not loaded.");
    supervisor
        .load(&unit, &UnitFile::parse(SLEEPER).unwrap())
        .unwrap();
    let state = supervisor.state(&unit).await;
    assert_eq!(
        (state.load, state.active, state.sub),
        ("loaded", "inactive", "dead")
    );
    supervisor.start(&unit).await.unwrap();
    let mut state = supervisor.state(&unit).await;
    for _ in 0..100 {
        if state.sub == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = supervisor.state(&unit).await;
    }
    assert_eq!((state.active, state.sub), ("active", "running"));
    supervisor.stop(&unit).await.unwrap();
    let state = supervisor.state(&unit).await;
    assert_eq!((state.active, state.sub), ("inactive", "dead"));
    supervisor.unload(&unit).await.unwrap();
    assert_eq!(supervisor.state(&unit).await.load, "not-found");
}

/// Runs a supervisor that starts a unit, says so, and waits to be killed.
#[tokio::test]
#[ignore = "the child process of a_killed_supervisor_leaves_its_units_running"]
async fn supervisor_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let supervisor = Supervisor::open(config(Path::new(&dir))).unwrap();
    let unit = name("sleeper.service");
    supervisor
        .load(&unit, &UnitFile::parse(SLEEPER).unwrap())
        .unwrap();
    supervisor.start(&unit).await.unwrap();
    println!("started");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn a_killed_supervisor_leaves_its_units_running() {
    let dir = Home::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["supervisor_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "started");
    assert!(started, "the child supervisor started its unit");
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let unit = name("sleeper.service");
    let mut before = supervisor.state(&unit).await;
    for _ in 0..100 {
        if before.sub == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = supervisor.state(&unit).await;
    }
    let main = before
        .status
        .as_ref()
        .and_then(|s| s.main_pid)
        .expect("running");

    child.kill().unwrap(); // SIGKILL, as a crash
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A new supervisor on the same directories finds the unit still running, same process.
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    assert_eq!(supervisor.loaded_units(), vec![unit.clone()]);
    let after = supervisor.state(&unit).await;
    assert_eq!((after.load, after.sub), ("loaded", "running"));
    assert_eq!(after.status.and_then(|s| s.main_pid), Some(main));
    supervisor.stop(&unit).await.unwrap();
    assert_eq!(supervisor.state(&unit).await.sub, "dead");
    assert!(
        !Path::new(&format!("/proc/{main}/cmdline")).exists()
            || !std::fs::read_to_string(format!("/proc/{main}/cmdline"))
                .unwrap_or_default()
                .contains("sleep")
    );
}

async fn wait_sub(supervisor: &Supervisor, unit: &UnitName, sub: &str) {
    for _ in 0..250 {
        if supervisor.state(unit).await.sub == sub {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{unit} never {sub}: {:?}", supervisor.state(unit).await);
}

/// SIGKILLs a running unit's main process, as a crash would.
async fn kill_main_process(supervisor: &Supervisor, unit: &UnitName) {
    let status = supervisor.state(unit).await.status.expect("a status");
    let pid = status.main_pid.expect("a main process");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(killed.unwrap().success());
}

fn load(supervisor: &Supervisor, unit: &str, text: &str) -> UnitName {
    let unit = name(unit);
    supervisor
        .load(&unit, &UnitFile::parse(text).unwrap())
        .unwrap();
    unit
}

#[tokio::test]
async fn a_sidekick_starts_after_its_main_unit_and_stops_with_it() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let main = load(&supervisor, "main.service", SLEEPER);
    let side = load(
        &supervisor,
        "side.service",
        "[Unit]\nBindsTo=main.service\nAfter=main.service\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    supervisor.start(&side).await.unwrap();
    wait_sub(&supervisor, &main, "running").await;
    wait_sub(&supervisor, &side, "running").await;

    // Stopping the main unit stops the sidekick.
    supervisor.stop(&main).await.unwrap();
    assert_eq!(supervisor.state(&side).await.sub, "dead");

    // The main unit dying on its own takes the sidekick down too.
    supervisor.start(&side).await.unwrap();
    wait_sub(&supervisor, &main, "running").await;
    kill_main_process(&supervisor, &main).await;
    wait_sub(&supervisor, &main, "failed").await;
    supervisor.enforce_bindings().await.unwrap();
    let state = supervisor.state(&side).await;
    assert_eq!(state.sub, "dead");
    // Its state says why it ended.
    assert_eq!(
        state.status.and_then(|s| s.reason).as_deref(),
        Some("Stopped: the unit it is bound to (BindsTo=) is not active: main.service.")
    );

    // Without being asked: the supervisor's own loop hears the main unit's shim end (its
    // safety-net period is ten minutes).
    let supervisor = std::sync::Arc::new(supervisor);
    let watcher = {
        let supervisor = std::sync::Arc::clone(&supervisor);
        tokio::spawn(async move { supervisor.keep_bindings(Duration::from_secs(600)).await })
    };
    supervisor.start(&side).await.unwrap();
    wait_sub(&supervisor, &side, "running").await;
    kill_main_process(&supervisor, &main).await;
    wait_sub(&supervisor, &side, "dead").await;
    watcher.abort();
}

#[tokio::test]
async fn a_sidekick_without_after_started_with_its_main_unit_keeps_running() {
    // systemd stops a BindsTo= unit only when the unit it is bound to is inactive with no
    // start under way; started together, both run.
    let dir = Home::new();
    let supervisor = std::sync::Arc::new(Supervisor::open(config(dir.path())).unwrap());
    let bindings = {
        let supervisor = std::sync::Arc::clone(&supervisor);
        tokio::spawn(async move { supervisor.keep_bindings(Duration::from_secs(600)).await })
    };
    let main = load(
        &supervisor,
        "main.service",
        "[Service]\nExecStartPre=/bin/sleep 0.3\nExecStart=/bin/sleep 60\n",
    );
    let side = load(
        &supervisor,
        "side.service",
        "[Unit]\nBindsTo=main.service\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    let (a, b) = tokio::join!(supervisor.start(&side), supervisor.start(&main));
    a.unwrap();
    b.unwrap();
    wait_sub(&supervisor, &main, "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(supervisor.state(&side).await.sub, "running");
    supervisor.stop(&main).await.unwrap();
    wait_sub(&supervisor, &side, "dead").await;
    bindings.abort();
}

#[tokio::test]
async fn a_unit_wanted_by_another_starts_with_it() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let main = load(&supervisor, "main.service", SLEEPER);
    let helper = load(
        &supervisor,
        "helper.service",
        "[Service]\nExecStart=/bin/sleep 60\n[Install]\nWantedBy=main.service\n",
    );
    supervisor.start(&main).await.unwrap();
    wait_sub(&supervisor, &helper, "running").await;
    supervisor.stop(&main).await.unwrap();
    supervisor.stop(&helper).await.unwrap();
}

#[tokio::test]
async fn requirements_that_cannot_be_met_are_reported() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let lonely = load(
        &supervisor,
        "lonely.service",
        "[Unit]\nRequires=nope.service\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    let err = supervisor.start(&lonely).await.unwrap_err();
    assert_eq!(err.to_string(), "Unit nope.service not found.");
    assert_eq!(supervisor.state(&lonely).await.sub, "dead");

    let broken = load(
        &supervisor,
        "broken.service",
        "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/sleep 60\n",
    );
    let side = load(
        &supervisor,
        "needs-broken.service",
        "[Unit]\nRequires=broken.service\nAfter=broken.service\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    supervisor.start(&side).await.unwrap();
    assert_eq!(supervisor.state(&broken).await.sub, "failed");
    let state = supervisor.state(&side).await;
    // It never ran: inactive (dead) as in systemd, with the reason.
    assert_eq!((state.active, state.sub), ("inactive", "dead"));
    assert_eq!(
        state.status.unwrap().reason.as_deref(),
        Some("Dependency failed for needs-broken.service: broken.service is not active.")
    );
}

/// `native_host_units=`: units of the machine outside fleet are taken as active by a unit
/// that requires them; any other unit that is not loaded still refuses the start, named.
#[tokio::test]
async fn host_units_are_taken_as_active_and_other_missing_units_are_named() {
    let dir = Home::new();
    let supervisor = Supervisor::open(SupervisorConfig {
        host_units: [
            "docker.service".to_owned(),
            "network-online.target".to_owned(),
        ]
        .into(),
        ..config(dir.path())
    })
    .unwrap();
    let app = load(
        &supervisor,
        "app.service",
        "[Unit]\nRequires=docker.service\nAfter=docker.service network-online.target\nRequisite=network-online.target\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    supervisor.start(&app).await.unwrap();
    assert_eq!(supervisor.state(&app).await.active, "active");
    let other = load(
        &supervisor,
        "other.service",
        "[Unit]\nRequires=docker.service flanneld.service\n[Service]\nExecStart=/bin/sleep 60\n",
    );
    let err = supervisor.start(&other).await.unwrap_err();
    assert_eq!(err.to_string(), "Unit flanneld.service not found.");
    supervisor.stop(&app).await.unwrap();
}

#[tokio::test]
async fn through_the_unit_manager_trait_with_its_journal() {
    use fleet_agent::manager::{ManagerKind, UnitManager};
    let dir = Home::new();
    let manager: Box<dyn UnitManager> = Box::new(Supervisor::open(config(dir.path())).unwrap());
    assert_eq!(manager.kind(), ManagerKind::Native);
    let unit = name("hello.service");
    let text =
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo one; echo two'\n";
    manager
        .load(&unit, &UnitFile::parse(text).unwrap())
        .await
        .unwrap();
    manager.start(&unit).await.unwrap();
    let mut state = manager.state(&unit).await.unwrap();
    for _ in 0..250 {
        if state.sub == "exited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = manager.state(&unit).await.unwrap();
    }
    assert_eq!(
        (
            state.load.as_str(),
            state.active.as_str(),
            state.sub.as_str()
        ),
        ("loaded", "active", "exited")
    );
    // The output reaches the log on its own path (a pipe the shim drains): shortly after the
    // state, as with journald.
    let texts = fleet_testkit::wait::eventually_async(
        "both lines logged",
        Duration::from_secs(5),
        || async {
            let journal = manager.journal(&unit, 2).await.unwrap();
            let texts: Vec<String> = journal
                .iter()
                .map(|l| l.split_once(' ').unwrap().1.to_owned())
                .collect();
            match texts.len() {
                2 => Ok(texts),
                _ => Err(format!("{texts:?}")),
            }
        },
    )
    .await;
    assert_eq!(texts, vec!["stdout one", "stdout two"]);
    manager.unload(&unit).await.unwrap();
    assert!(manager.loaded().await.unwrap().is_empty());
    assert_eq!(manager.state(&unit).await.unwrap().load, "not-found");
}

#[tokio::test]
async fn a_unit_with_a_long_name_runs_too() {
    // Its socket path is far past the 108 bytes a socket address may hold.
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let long = format!("{}.service", "n".repeat(200));
    let unit = load(
        &supervisor,
        &long,
        "[Service]\nType=notify\nExecStart=/bin/sh -c 'systemd-notify --ready; exec sleep 60'\n",
    );
    supervisor.start(&unit).await.unwrap();
    wait_sub(&supervisor, &unit, "running").await;
    supervisor.stop(&unit).await.unwrap();
    assert_eq!(supervisor.state(&unit).await.sub, "dead");
}

#[tokio::test]
async fn a_change_of_state_is_told_without_polling() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let unit = load(&supervisor, "told.service", SLEEPER);
    let mut changes = supervisor.changes();
    supervisor.start(&unit).await.unwrap();
    wait_sub(&supervisor, &unit, "running").await;
    changes.borrow_and_update();

    kill_main_process(&supervisor, &unit).await;
    let told = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
    assert!(
        told.is_ok(),
        "no change told within 5 s of the unit's death"
    );
    wait_sub(&supervisor, &unit, "failed").await;

    // A supervisor opened afresh (fleetd restarted) watches the shims it finds.
    supervisor.start(&unit).await.unwrap();
    wait_sub(&supervisor, &unit, "running").await;
    let reopened = Supervisor::open(config(dir.path())).unwrap();
    let mut changes = reopened.changes();
    changes.borrow_and_update();
    reopened.stop(&unit).await.unwrap();
    let told = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
    assert!(told.is_ok(), "no change told when the found shim stopped");
    assert_eq!(reopened.state(&unit).await.sub, "dead");
}

/// The PID of the unit's live shim, from its run directory.
fn shim_of(dir: &Path, unit: &UnitName) -> u32 {
    let path = dir.join("run").join(unit.as_str()).join("shim.pid");
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn sigkill(pid: u32) {
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(killed.unwrap().success(), "kill -9 {pid}");
}

/// Waits (bounded) until the unit's state is `(active, sub)`; the state then.
async fn wait_state(
    supervisor: &Supervisor,
    unit: &UnitName,
    expected: (&str, &str),
) -> fleet_native::supervisor::UnitState {
    for _ in 0..500 {
        let state = supervisor.state(unit).await;
        if (state.active, state.sub) == expected {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{unit} never {expected:?}: {:?}",
        supervisor.state(unit).await
    );
}

#[tokio::test]
async fn a_killed_shim_fails_its_unit_and_ends_what_it_left_running() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let unit = load(&supervisor, "orphan.service", SLEEPER);
    supervisor.start(&unit).await.unwrap();
    let running = wait_state(&supervisor, &unit, ("active", "running")).await;
    let main = running.status.unwrap().main_pid.unwrap();
    let shim = shim_of(dir.path(), &unit);
    sigkill(shim); // as the OOM killer would
    let failed = wait_state(&supervisor, &unit, ("failed", "failed")).await;
    let reason = failed.status.unwrap().reason.unwrap();
    assert!(
        reason.starts_with(&format!("the unit's shim (PID {shim}) ended unexpectedly")),
        "{reason}"
    );
    assert!(
        reason.contains("1 process(es) of the unit ran on unsupervised and were stopped"),
        "{reason}"
    );
    assert!(
        !is_live(main),
        "the unit's process was ended, not left unmanaged"
    );
    assert_eq!(
        supervisor.take_lost(),
        vec![unit.clone()],
        "the agent is told"
    );
    assert_eq!(supervisor.take_lost(), Vec::<UnitName>::new(), "once");
    // A stop says nothing false, and a start starts it for real.
    supervisor.stop(&unit).await.unwrap();
    assert_eq!(supervisor.state(&unit).await.active, "failed");
    supervisor.start(&unit).await.unwrap();
    let again = wait_state(&supervisor, &unit, ("active", "running")).await;
    let new_main = again.status.unwrap().main_pid.unwrap();
    assert!(is_live(new_main) && new_main != main);
    supervisor.stop(&unit).await.unwrap();
    assert!(!is_live(new_main));
}

#[tokio::test]
async fn units_killed_with_their_shims_are_failed_when_the_supervisor_starts_again() {
    let dir = Home::new();
    let unit = name("crashed.service");
    let main = {
        let supervisor = Supervisor::open(config(dir.path())).unwrap();
        load(&supervisor, unit.as_str(), SLEEPER);
        supervisor.start(&unit).await.unwrap();
        let running = wait_state(&supervisor, &unit, ("active", "running")).await;
        let main = running.status.unwrap().main_pid.unwrap();
        // The machine's crash: shim and unit die together, fleetd with them.
        sigkill(shim_of(dir.path(), &unit));
        sigkill(main);
        main
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    assert_eq!(supervisor.take_lost(), vec![unit.clone()]);
    let state = supervisor.state(&unit).await;
    assert_eq!(
        (state.load, state.active, state.sub),
        ("loaded", "failed", "failed")
    );
    assert_eq!(
        state.status.unwrap().reason.as_deref(),
        Some(fleet_native::supervisor::GONE_AT_START)
    );
    supervisor.start(&unit).await.unwrap();
    let running = wait_state(&supervisor, &unit, ("active", "running")).await;
    assert_ne!(running.status.unwrap().main_pid, Some(main));
    supervisor.unload(&unit).await.unwrap();
}

/// Waits (bounded by `within`) until the unit's log has a record ending with `text`.
async fn wait_logged(supervisor: &Supervisor, unit: &UnitName, text: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let log = fleet_agent::manager::UnitManager::journal(supervisor, unit, 5)
            .await
            .unwrap_or_default();
        if log.iter().any(|r| r.ends_with(text)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{unit} never logged {text:?}: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The largest resident size a process has had (`VmHWM`), in KiB.
fn peak_kib(pid: u32) -> u64 {
    fleet_testkit::measure::memory_kib(pid)
        .expect("a live process")
        .peak
}

/// A unit writing 100 MB to its output: its log stays within its bound (rotated once past
/// it), its shim's memory flat, and the unit and its neighbour run on.
#[tokio::test]
async fn a_hundred_megabytes_of_output_keep_the_log_bounded_and_the_shim_small() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let neighbour = load(&supervisor, "neighbour.service", SLEEPER);
    supervisor.start(&neighbour).await.unwrap();
    let chatty = load(
        &supervisor,
        "chatty.service",
        "[Service]\nExecStart=/bin/sh -c 'yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 100000000; echo written; exec sleep 600'\n",
    );
    supervisor.start(&chatty).await.unwrap();
    wait_logged(&supervisor, &chatty, "written", Duration::from_secs(240)).await;
    let log_bytes: u64 = ["logs/chatty.service", "logs/rotated/chatty.service"]
        .iter()
        .map(|file| std::fs::metadata(dir.path().join(file)).unwrap().len())
        .sum();
    let bound = config(dir.path()).log_max_bytes;
    assert!(
        log_bytes <= 2 * bound + 64 * 1024,
        "the log holds {log_bytes} bytes (bound {bound})"
    );
    let shim = shim_of(dir.path(), &chatty);
    assert!(
        peak_kib(shim) < 32 * 1024,
        "the shim peaked at {} KiB",
        peak_kib(shim)
    );
    wait_state(&supervisor, &chatty, ("active", "running")).await;
    wait_state(&supervisor, &neighbour, ("active", "running")).await;
    supervisor.stop(&chatty).await.unwrap();
    supervisor.stop(&neighbour).await.unwrap();
}

/// A unit that forks a thousand children: they are its processes, and its stop ends every
/// one of them at once.
#[tokio::test]
async fn a_unit_with_a_thousand_children_is_stopped_whole() {
    let dir = Home::new();
    let supervisor = Supervisor::open(config(dir.path())).unwrap();
    let forking = load(
        &supervisor,
        "forking.service",
        "[Service]\nExecStart=/bin/sh -c 'i=0; while [ $i -lt 1000 ]; do sleep 6011 & i=$((i+1)); done; echo forked; wait'\n",
    );
    supervisor.start(&forking).await.unwrap();
    wait_logged(&supervisor, &forking, "forked", Duration::from_secs(60)).await;
    let shim = shim_of(dir.path(), &forking);
    let children = fleet_native::process::descendants(shim).len();
    assert!(children > 1000, "{children} processes under the shim");
    // "forked" comes once every child is forked, not once each has become `sleep`; and only
    // this unit's count (another run's leftovers are not its processes).
    let sleeps = || -> Vec<u32> {
        let ours = fleet_native::process::descendants(shim);
        fleet_testkit::measure::processes_running("sleep 6011")
            .into_iter()
            .filter(|pid| ours.contains(pid))
            .collect()
    };
    let forked =
        fleet_testkit::wait::eventually("a thousand sleeps", Duration::from_secs(30), || {
            let running = sleeps();
            match running.len() {
                1000 => Ok(running),
                other => Err(format!("{other} sleeps")),
            }
        });
    let begun = std::time::Instant::now();
    supervisor.stop(&forking).await.unwrap();
    let stopped_in = begun.elapsed();
    let state = supervisor.state(&forking).await;
    assert_eq!((state.active, state.sub), ("inactive", "dead"));
    let alive: Vec<&u32> = forked
        .iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .filter(|pid| fleet_testkit::measure::processes_running("sleep 6011").contains(pid))
        .collect();
    assert!(
        alive.is_empty(),
        "children outlived their unit's stop: {alive:?}"
    );
    assert!(
        stopped_in < Duration::from_secs(10),
        "the stop took {stopped_in:?}"
    );
}
