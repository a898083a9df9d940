//! fleetd as production runs it on a systemd machine: started by a real systemd 252 (booted per
//! test in a sandbox, never the host's) from the project's own `contrib/systemd/fleet.service`
//! and `fleet.socket`, with every default (unit_manager=auto, /run/fleet/units, the embedded
//! registry in /var/lib/fleet), driving that systemd over D-Bus. fleetctl runs outside, on the
//! socket systemd listens on. Needs root.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{eventually, holds};
use fleet_testkit::SystemdSandbox;

/// A machine: a sandboxed systemd running fleetd as `fleet.service`.
struct Host {
    sandbox: SystemdSandbox,
    /// Unit files to submit, written outside the sandbox.
    files: tempfile::TempDir,
}

impl Host {
    fn boot() -> Host {
        let sandbox = SystemdSandbox::boot(env!("CARGO_TARGET_TMPDIR").as_ref()).unwrap();
        // Only the binary and the socket's path differ from an installation.
        sandbox
            .install_fleetd(
                env!("CARGO_BIN_EXE_fleetd").as_ref(),
                "Environment=FLEET_VERBOSITY=1\n",
            )
            .unwrap_or_else(|e| {
                let log = sandbox.run(
                    "journalctl",
                    &["--no-pager", "-u", "fleet.service", "-n", "20"],
                );
                panic!(
                    "fleet.service: {e}\n{}\n{}",
                    log.unwrap_or_else(|e| e),
                    sandbox.console()
                )
            });
        Host {
            sandbox,
            files: tempfile::tempdir().unwrap(),
        }
    }

    fn systemctl(&self, args: &[&str]) -> String {
        self.sandbox
            .systemctl(args)
            .unwrap_or_else(|e| panic!("systemctl {args:?}: {e}\n{}", self.fleetd_log()))
    }

    /// A property of a unit, as systemd has it.
    fn property(&self, unit: &str, name: &str) -> String {
        self.systemctl(&["show", "--value", "-p", name, unit])
    }

    /// fleetd's own log, for failure messages.
    fn fleetd_log(&self) -> String {
        self.sandbox
            .run(
                "journalctl",
                &["--no-pager", "-u", "fleet.service", "-n", "40"],
            )
            .unwrap_or_else(|e| e)
    }

    fn fleetctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.sandbox.shared_dir().join("fleet.sock");
        let endpoint = format!("--endpoint=unix://{}", socket.display());
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(args);
        common::fleetctl(&all, &[])
    }

    /// `fleetctl ARGS`, which must succeed; its output.
    fn fleetctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.fleetctl(args);
        assert_eq!(
            code,
            0,
            "fleetctl {args:?}: {out}{err}\n{}",
            self.fleetd_log()
        );
        out
    }

    /// Writes unit files to submit; their paths.
    fn files(&self, units: &[(&str, &str)]) -> Vec<String> {
        units
            .iter()
            .map(|(name, text)| {
                let path = self.files.path().join(name);
                std::fs::write(&path, text).unwrap();
                path.display().to_string()
            })
            .collect()
    }

    /// `list-units` as unit → (active, sub).
    fn listed(&self) -> BTreeMap<String, (String, String)> {
        self.fleetctl_ok(&["list-units", "--no-legend", "--fields=unit,active,sub"])
            .lines()
            .filter_map(|line| {
                // Columns are padded with tabs (fleet's tabwriter).
                let mut columns = line.split('\t').filter(|c| !c.is_empty());
                let unit = columns.next()?.to_owned();
                let active = columns.next()?.to_owned();
                let sub = columns.next()?.to_owned();
                Some((unit, (active, sub)))
            })
            .collect()
    }

    /// Waits (at most `within`) until `list-units` shows `unit` `active` (`sub`); how long.
    fn until_listed(&self, unit: &str, active: &str, sub: &str, within: Duration) -> Duration {
        let started = Instant::now();
        let wanted = (active.to_owned(), sub.to_owned());
        eventually(&format!("{unit} {active} ({sub})"), within, || {
            let listed = self.listed();
            holds(listed.get(unit) == Some(&wanted)).map_err(|_| {
                let systemd = self.sandbox.systemctl(&["status", "--no-pager", unit]);
                format!(
                    "{listed:?}\n{}\n{}",
                    self.fleetd_log(),
                    systemd.unwrap_or_else(|e| e)
                )
            })
        });
        started.elapsed()
    }

    /// The units directory fleetd writes, as seen from outside (the sandbox's /run).
    fn units_dir(&self) -> PathBuf {
        self.sandbox.root().join("run/fleet/units")
    }

    /// The host PID of fleetd (fleet.service's main process).
    fn fleetd_pid(&self) -> u32 {
        let procs = self
            .sandbox
            .unit_cgroup("fleet.service")
            .join("cgroup.procs");
        std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no fleetd in {}", procs.display()))
    }

    /// CPU time fleet.service's cgroup has used (fleetd and anything it ran).
    fn fleetd_cpu(&self) -> Duration {
        let stat = self.sandbox.unit_cgroup("fleet.service").join("cpu.stat");
        let text = std::fs::read_to_string(&stat).unwrap();
        let micros = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        Duration::from_micros(micros)
    }
}

const HELLO: &str = "[Unit]\nDescription=Says hello\n\n[Service]\nExecStart=/bin/sh -c 'echo hello from systemd; exec sleep 300'\n";
const SLEEPER: &str = "[Service]\nExecStart=/bin/sleep 300\n";

#[test]
fn fleetd_drives_systemd_as_an_installed_service() {
    let host = Host::boot();
    // Type=notify: fleetd told systemd it was ready, on the socket systemd passed it.
    assert_eq!(host.property("fleet.service", "ActiveState"), "active");
    let machine_id = host.sandbox.run("cat", &["/etc/machine-id"]).unwrap();
    let machines = host.fleetctl_ok(&["list-machines", "--full", "--no-legend"]);
    assert!(machines.starts_with(&machine_id), "{machines}");

    let files = host.files(&[
        ("hello.service", HELLO),
        // Fails before it is ever active (a simple service that exits is active for a moment).
        ("broken.service", "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/sleep 300\n"),
        (
            "main.service",
            "[Unit]\nRequires=db.service\nAfter=db.service\n\n[Service]\nExecStart=/bin/sleep 300\n",
        ),
        ("db.service", SLEEPER),
        (
            "sidecar.service",
            "[Service]\nExecStart=/bin/sleep 300\n\n[Install]\nWantedBy=main.service\n",
        ),
        (
            "web@.service",
            "[Service]\nExecStart=/bin/sh -c 'echo port %i; exec sleep 300'\n",
        ),
    ]);
    let file = |name: &str| files.iter().find(|f| f.ends_with(name)).unwrap().as_str();
    // Loaded only: systemd starts them for main.service (Requires=, WantedBy=).
    host.fleetctl_ok(&["load", file("db.service"), file("sidecar.service")]);
    host.fleetctl_ok(&["submit", file("web@.service")]);
    let started = Instant::now();
    host.fleetctl_ok(&["start", "--no-block", file("hello.service")]);
    host.until_listed(
        "hello.service",
        "active",
        "running",
        Duration::from_secs(20),
    );
    println!(
        "fleetctl start to active in systemd, seen in list-units: {:?}",
        started.elapsed()
    );
    // fleet's fleetctl waited for a failed unit forever.
    let (code, _, err) = host.fleetctl(&["start", file("broken.service")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "Unit broken.service failed to start on {machine_id}: failed (failed)"
        )),
        "{err}"
    );
    host.fleetctl_ok(&["start", file("main.service"), "web@8080.service"]);
    let within = Duration::from_secs(20);
    host.until_listed("broken.service", "failed", "failed", within);
    for unit in [
        "main.service",
        "db.service",
        "sidecar.service",
        "web@8080.service",
    ] {
        host.until_listed(unit, "active", "running", within);
    }
    // What fleet shows is what systemd says.
    for (unit, (active, sub)) in host.listed() {
        assert_eq!(
            (
                host.property(&unit, "ActiveState"),
                host.property(&unit, "SubState")
            ),
            (active, sub),
            "{unit}"
        );
    }

    // status is systemctl's, journal journalctl's, on the unit's machine.
    let (code, out, err) = host.fleetctl(&["status", "hello.service"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("● hello.service - Says hello\n")
            && out.contains("Loaded: loaded (/run/systemd/system/hello.service; linked-runtime")
            && out.contains("Active: active (running)"),
        "{out}"
    );
    let (code, out, _) = host.fleetctl(&["status", "broken.service"]);
    assert_eq!(code, 3, "systemctl's code for a unit not active: {out}");
    assert!(out.contains("Active: failed"), "{out}");
    eventually("the journal of hello.service", within, || {
        let (_, out, err) = host.fleetctl(&["journal", "hello.service"]);
        holds(out.contains("hello from systemd")).map_err(|_| format!("{out}{err}"))
    });
    eventually("the journal of web@8080.service", within, || {
        let (_, out, err) = host.fleetctl(&["journal", "--output=cat", "web@8080.service"]);
        holds(out.lines().any(|l| l == "port 8080")).map_err(|_| format!("{out}{err}"))
    });

    // destroy: stopped, gone from systemd and from the units directory.
    host.fleetctl_ok(&["destroy", "hello.service"]);
    eventually(
        "hello.service gone from systemd and its file",
        within,
        || {
            holds(
                host.property("hello.service", "LoadState") == "not-found"
                    && !host.units_dir().join("hello.service").exists(),
            )
        },
    );
    assert!(host.units_dir().join("main.service").exists());
    // What fleet did not load is never touched.
    assert_eq!(host.property("dbus.service", "ActiveState"), "active");
}

#[test]
fn fleetd_restarted_or_stopped_as_a_service() {
    let host = Host::boot();
    let units = ["a.service", "b.service", "c.service"];
    let files = host.files(&units.map(|u| (u, SLEEPER)));
    let mut args = vec!["start"];
    args.extend(files.iter().map(String::as_str));
    host.fleetctl_ok(&args);
    let within = Duration::from_secs(20);
    for unit in units {
        host.until_listed(unit, "active", "running", within);
    }
    let pids: Vec<String> = units.iter().map(|u| host.property(u, "MainPID")).collect();

    // An upgrade: SIGQUIT ends fleetd alone and Restart=always starts it again.
    let fleetd = host.property("fleet.service", "MainPID");
    host.systemctl(&["kill", "--signal=SIGQUIT", "fleet.service"]);
    eventually("fleetd back", within, || {
        let now = host.property("fleet.service", "MainPID");
        holds(
            now != fleetd
                && now != "0"
                && host.property("fleet.service", "ActiveState") == "active",
        )
    });
    host.until_listed("a.service", "active", "running", within);
    let after: Vec<String> = units.iter().map(|u| host.property(u, "MainPID")).collect();
    assert_eq!(pids, after, "a unit was restarted with fleetd");
    // The new fleetd drives what the old one loaded.
    host.fleetctl_ok(&["stop", "a.service"]);
    eventually("a.service stopped in systemd", within, || {
        holds(host.property("a.service", "ActiveState") == "inactive")
    });

    // `systemctl stop fleet`: a clean exit, and the machine's units stopped and unloaded
    // (fleet's TestShutdown and TestNodeShutdown).
    host.systemctl(&["stop", "fleet.service"]);
    assert_eq!(host.property("fleet.service", "Result"), "success");
    for unit in units {
        assert_eq!(host.property(unit, "LoadState"), "not-found", "{unit}");
    }
    assert_eq!(
        std::fs::read_dir(host.units_dir()).unwrap().count(),
        0,
        "unit files left in the units directory"
    );
}

/// Self-healing on systemd: a unit whose check fails is restarted in place (a new main
/// process in systemd) until its budget is spent, then left unhealthy with the reason; a unit
/// that fails is started again where it is (the only machine) after its delay, and given up on
/// after `RescheduleAttempts=`, with the failures in the API.
#[test]
fn units_heal_on_systemd_as_on_the_native_supervisor() {
    let host = Host::boot();
    let flag = host.sandbox.root().join("run/healthy");
    std::fs::write(&flag, "").unwrap();
    let checked = "[Service]\nExecStart=/bin/sleep 300\n[X-Fleet]\nHealthCheck=exec:/bin/test -f /run/healthy\nHealthCheckInterval=200ms\nHealthCheckStartPeriod=0\nHealthCheckFailures=2\nRescheduleAfterRestarts=1\n";
    let broken =
        "[Service]\nExecStart=/bin/false\n[X-Fleet]\nRescheduleDelay=1s\nRescheduleAttempts=1\n";
    let files = host.files(&[("checked.service", checked), ("broken.service", broken)]);
    host.fleetctl_ok(&["start", "--no-block", &files[0], &files[1]]);
    let within = Duration::from_secs(20);
    host.until_listed("checked.service", "active", "running", within);
    let health = || {
        host.fleetctl_ok(&["list-units", "--no-legend", "--fields=unit,health,reason"])
            .lines()
            .find(|l| l.starts_with("checked.service"))
            .unwrap_or_default()
            .to_owned()
    };
    eventually("healthy", within, || holds(health().contains("healthy")));
    let first = host.property("checked.service", "MainPID");
    std::fs::remove_file(&flag).unwrap();
    eventually("restarted by its checks", within, || {
        let now = host.property("checked.service", "MainPID");
        holds(now != first && now != "0")
    });
    eventually("left unhealthy once the budget is spent", within, || {
        let line = health();
        holds(line.contains("unhealthy") && line.contains("RescheduleAfterRestarts=1"))
            .map_err(|_| line)
    });
    let socket = host.sandbox.shared_dir().join("fleet.sock");
    let actions = common::actions_until(
        &socket,
        "broken.service",
        "gave up",
        Duration::from_secs(30),
    );
    // The only machine: moved back to it.
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions[0].starts_with("moved to "), "{actions:?}");
    assert_eq!(
        actions[1],
        "left where it failed: gave up after 1 moves (RescheduleAttempts=1)"
    );
    assert_eq!(host.property("broken.service", "ActiveState"), "failed");
}

/// Units ended outside fleet on systemd while wanted launched are started again by the
/// agent and recorded: `systemctl stop` of a unit that exits 0 on SIGTERM (only the stop job
/// tells), with its `BindsTo=` sidekick, which comes back with it; `systemctl kill` of a main
/// process (no job: its exit status tells). A unit that ended by itself stays ended.
#[test]
fn units_stopped_by_hand_on_systemd_are_started_again() {
    let host = Host::boot();
    let trapping =
        "[Service]\nExecStart=/bin/sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.2; done'\n";
    let side = "[Unit]\nBindsTo=trapping.service\nAfter=trapping.service\n[Service]\nExecStart=/bin/sleep 300\n[X-Fleet]\nMachineOf=trapping.service\n";
    let killed = "[Service]\nExecStart=/bin/sleep 300\n";
    let finite = "[Service]\nExecStart=/bin/sleep 1\n";
    let files = host.files(&[
        ("trapping.service", trapping),
        ("side.service", side),
        ("killed.service", killed),
        ("finite.service", finite),
    ]);
    let mut args = vec!["start", "--no-block"];
    args.extend(files.iter().map(String::as_str));
    host.fleetctl_ok(&args);
    let within = Duration::from_secs(20);
    for unit in ["trapping.service", "side.service", "killed.service"] {
        host.until_listed(unit, "active", "running", within);
    }
    let pid = |unit: &str| host.property(unit, "MainPID");
    let (trapping_pid, side_pid, killed_pid) = (
        pid("trapping.service"),
        pid("side.service"),
        pid("killed.service"),
    );

    host.systemctl(&["stop", "trapping.service"]);
    host.systemctl(&[
        "kill",
        "--signal=TERM",
        "--kill-whom=main",
        "killed.service",
    ]);
    for (unit, before) in [
        ("trapping.service", &trapping_pid),
        ("side.service", &side_pid),
        ("killed.service", &killed_pid),
    ] {
        let again = || {
            let now = pid(unit);
            holds(now != *before && now != "0" && host.property(unit, "ActiveState") == "active")
        };
        let every = Duration::from_millis(100);
        common::poll(
            &format!("{unit} started again"),
            within,
            every,
            again,
            || host.fleetd_log(),
        );
    }
    let socket = host.sandbox.shared_dir().join("fleet.sock");
    let stopped = common::failures_until(&socket, "trapping.service", "started again", within);
    assert_eq!(
        stopped,
        [(
            "stopped outside fleet (a stop job fleetd did not queue: systemctl stop)".to_owned(),
            "started again".to_owned()
        )]
    );
    let killed = common::failures_until(&socket, "killed.service", "started again", within);
    assert_eq!(
        killed,
        [(
            "its main process was killed by SIGTERM outside fleet".to_owned(),
            "started again".to_owned()
        )]
    );
    // Ended by itself: inactive, and left so.
    eventually("finite.service ended", within, || {
        holds(host.property("finite.service", "ActiveState") == "inactive")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(host.property("finite.service", "ActiveState"), "inactive");
    assert_eq!(host.property("finite.service", "NRestarts"), "0");
    let (_, body) =
        fleet_testkit::measure::http_unix(&socket, "GET", "/fleet/v1/units/finite.service", None);
    assert!(!body.contains("failures"), "{body}");
}

/// A `Restart=always` crash loop on systemd never shows failed (systemd's start limit is not
/// reached with `RestartSec=2`): its restarts (`NRestarts`) count, and past the budget it is
/// moved (here: started again where it is, the only machine) and then given up on.
#[test]
fn a_crash_loop_on_systemd_is_caught_by_its_restarts() {
    let host = Host::boot();
    let looping = "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=2\n[X-Fleet]\nRescheduleAfterRestarts=2\nRescheduleDelay=1s\nRescheduleAttempts=1\n";
    let files = host.files(&[("looping.service", looping)]);
    host.fleetctl_ok(&["start", "--no-block", &files[0]]);
    let socket = host.sandbox.shared_dir().join("fleet.sock");
    let failures = common::failures_until(
        &socket,
        "looping.service",
        "gave up",
        Duration::from_secs(40),
    );
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (what, _) in &failures {
        assert!(
            what.starts_with("restarted 2 times by its Restart= within 10 minutes"),
            "{what}"
        );
    }
    assert!(failures[0].1.starts_with("moved to "), "{failures:?}");
}

#[test]
fn two_hundred_units_are_cheap_to_hold() {
    const COUNT: usize = 200;
    let host = Host::boot();
    let names: Vec<String> = (0..COUNT).map(|i| format!("idle{i:03}.service")).collect();
    let files = host.files(
        &names
            .iter()
            .map(|n| (n.as_str(), "[Service]\nExecStart=/bin/sleep infinity\n"))
            .collect::<Vec<_>>(),
    );
    let started = Instant::now();
    let mut args = vec!["start", "--no-block"];
    args.extend(files.iter().map(String::as_str));
    host.fleetctl_ok(&args);
    eventually(
        "200 units active",
        Duration::from_secs(120),
        || -> Result<(), String> {
            let listed = host.listed();
            let running = listed
                .values()
                .filter(|(a, s)| a == "active" && s == "running")
                .count();
            holds(running == COUNT).map_err(|_| format!("{running} of {COUNT} running"))
        },
    );
    let all_active = started.elapsed();
    // systemd agrees.
    let running = host.systemctl(&[
        "list-units",
        "--no-legend",
        "--plain",
        "--state=running",
        "idle*.service",
    ]);
    assert_eq!(running.lines().count(), COUNT, "{running}");

    // Idle: nothing changes; what does holding 200 units cost?
    std::thread::sleep(Duration::from_secs(2));
    let window = Duration::from_secs(10);
    let before = host.fleetd_cpu();
    std::thread::sleep(window);
    let used = host.fleetd_cpu() - before;
    let share = used.as_secs_f64() / window.as_secs_f64();
    let memory = fleet_testkit::measure::memory_kib(host.fleetd_pid()).unwrap();
    println!(
        "{COUNT} units: all active {all_active:?} after fleetctl start; idle fleetd: \
         {used:?} CPU in {window:?} ({:.2}% of a core), RSS {} KiB ({} KiB its own)",
        share * 100.0,
        memory.resident,
        memory.private
    );
    // fleet's agent polled every unit every second and burned a core's worth at 500 units.
    assert!(
        share < 0.02,
        "fleetd used {:.1}% of a core while idle",
        share * 100.0
    );
    assert_eq!(host.listed().len(), COUNT);
}

/// A thousand units at once through D-Bus: each runs once, systemd stays on the bus (with
/// every start queued at once it was thrown off at about 540), and a destroy of all of them
/// leaves no process and no file behind.
#[test]
fn a_thousand_units_through_dbus_run_once_and_go_with_destroy() {
    const COUNT: usize = 1000;
    const COMMAND: &str = "/bin/sleep 7201";
    let host = Host::boot();
    let socket = host.sandbox.shared_dir().join("fleet.sock");
    let names: Vec<String> = (0..COUNT).map(|i| format!("k{i:04}.service")).collect();
    let body = format!(
        r#"{{"desiredState":"launched","options":[{{"section":"Service","name":"ExecStart","value":"{COMMAND}"}}]}}"#
    );
    let each = |method: &str, body: Option<&str>| {
        std::thread::scope(|scope| {
            for worker in 0..8 {
                let names = &names;
                let socket = &socket;
                scope.spawn(move || {
                    for name in names.iter().skip(worker).step_by(8) {
                        let path = format!("/fleet/v1/units/{name}");
                        let (status, answer) =
                            fleet_testkit::measure::http_unix(socket, method, &path, body);
                        assert!(
                            matches!(status, 201 | 204),
                            "{method} {name}: {status} {answer}"
                        );
                    }
                });
            }
        })
    };
    let started = Instant::now();
    each("PUT", Some(&body));
    eventually("a thousand units running", Duration::from_secs(60), || {
        let running = fleet_testkit::measure::processes_running(COMMAND).len();
        holds(running == COUNT).map_err(|_| format!("{running} of {COUNT} running"))
    });
    let all_running = started.elapsed();
    let pids = fleet_testkit::measure::processes_running(COMMAND);
    // Reported as systemd has them, and none started twice meanwhile.
    eventually("every unit listed running", Duration::from_secs(60), || {
        let listed = host.listed();
        let running = listed.values().filter(|(_, s)| s == "running").count();
        holds(running == COUNT).map_err(|_| format!("{running} of {COUNT} listed running"))
    });
    assert_eq!(
        fleet_testkit::measure::processes_running(COMMAND),
        pids,
        "units were started again"
    );
    let log = host
        .sandbox
        .run(
            "journalctl",
            &["--no-pager", "-o", "cat", "-u", "fleet.service"],
        )
        .unwrap_or_else(|e| e);
    for trouble in [
        "systemd left the bus",
        "LimitsExceeded",
        "load failed",
        "start failed",
    ] {
        assert!(!log.contains(trouble), "fleetd logged {trouble:?}:\n{log}");
    }

    let destroyed = Instant::now();
    each("DELETE", None);
    // 55 s when every unlink cost systemd a walk of its unit directories.
    eventually("every unit's process gone", Duration::from_secs(20), || {
        let left = fleet_testkit::measure::processes_running(COMMAND).len();
        holds(left == 0).map_err(|_| format!("{left} still run"))
    });
    let all_gone = destroyed.elapsed();
    eventually("every unit file removed", Duration::from_secs(30), || {
        let left = std::fs::read_dir(host.units_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        holds(left == 0).map_err(|_| format!("{left} files left"))
    });
    let links = host.sandbox.root().join("run/systemd/system");
    let left: Vec<String> = std::fs::read_dir(&links)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('k'))
        .collect();
    assert!(left.is_empty(), "links left: {left:?}");
    println!("{COUNT} units through D-Bus: all running {all_running:?}; gone {all_gone:?} after the destroy");
}
