//! The same machine with systemd as its unit manager: a sandboxed systemd (booted on an
//! overlay of the root, never the host's) running the release fleetd as `fleet.service` from
//! `contrib/systemd/`, N units submitted with one API request each (16 at a time); the
//! ceiling is systemd's own rate, N services started by one `systemctl start`, measured on
//! the same systemd in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_testkit::measure::{built_binary, http_unix};
use fleet_testkit::SystemdSandbox;

use crate::{
    from_log_text, pss_kib, threads, unit_processes, wait_processes, Cost, Mode, StartRow, SLEEP,
};

/// How many requests (API or D-Bus) are in flight at once.
const CONCURRENT: usize = 16;

pub fn run(units: usize, idle: Duration) -> (StartRow, Cost) {
    // Under the target directory, as the tests' sandboxes are: the sandbox has a /tmp of its
    // own, so a directory under the host's /tmp is not where fleetd looks.
    let base = built_binary("fleetd")
        .parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .join("tmp");
    std::fs::create_dir_all(&base).expect("target/tmp");
    let sandbox = SystemdSandbox::boot(&base)
        .unwrap_or_else(|e| panic!("a sandboxed systemd (needs root): {e}"));
    // systemd's own rate first, before fleetd is there.
    let ceiling = systemd_itself(&sandbox, units);

    let socket = sandbox
        .install_fleetd(
            &built_binary("fleetd"),
            "Environment=FLEET_AGENT_TTL=5s\nLimitNOFILE=65536\n",
        )
        .unwrap_or_else(|e| panic!("fleet.service: {e}\n{}", sandbox.console()));
    wait_api(&socket);

    let names: Vec<String> = (0..units).map(|i| format!("u{i:05}.service")).collect();
    let body = serde_json::json!({
        "desiredState": "launched",
        "options": [{"section": "Service", "name": "ExecStart", "value": SLEEP}],
    })
    .to_string();
    let begun = Instant::now();
    in_parallel(&names, |name| {
        let (status, answer) = http_unix(
            &socket,
            "PUT",
            &format!("/fleet/v1/units/{name}"),
            Some(&body),
        );
        assert_eq!(status, 201, "PUT {name}: {answer}");
    });
    let submitted = begun.elapsed();
    wait_running(&sandbox, "u*.service", units);
    let running = begun.elapsed();

    let cost = cost_of(&sandbox, units, idle);

    let begun = Instant::now();
    in_parallel(&names, |name| {
        let (status, answer) =
            http_unix(&socket, "DELETE", &format!("/fleet/v1/units/{name}"), None);
        assert!(status == 204 || status == 404, "DELETE {name}: {answer}");
    });
    let destroyed = begun.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !unit_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !unit_processes().is_empty() {
        let left = running_units(&sandbox, "u*.service");
        let log = sandbox
            .run(
                "journalctl",
                &["--no-pager", "-o", "cat", "-p", "warning", "-n", "40"],
            )
            .unwrap_or_default();
        let shown: Vec<&String> = left.iter().take(5).collect();
        panic!(
            "after the destroy, {} units still run ({shown:?}, ...)\n{log}",
            left.len()
        );
    }
    let gone = begun.elapsed();
    let log = sandbox
        .run(
            "journalctl",
            &["--no-pager", "-o", "cat", "-u", "fleet.service"],
        )
        .unwrap_or_default();
    if let Some(path) = std::env::var_os("FLEET_BENCH_JOURNAL") {
        // For a look at where the time went: fleetd's log with precise times.
        let precise = sandbox
            .run(
                "journalctl",
                &["--no-pager", "-o", "short-precise", "-u", "fleet.service"],
            )
            .unwrap_or_default();
        std::fs::write(&path, precise).expect("FLEET_BENCH_JOURNAL is writable");
    }
    let (missed, restarted) = from_log_text(&log);
    let row = StartRow {
        units,
        mode: Mode::SystemdApi,
        submitted,
        running,
        ceiling,
        destroyed: Some(destroyed),
        gone,
        missed,
        restarted,
    };
    (row, cost)
}

fn wait_api(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "no API at {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `each` for every name, [`CONCURRENT`] at a time.
fn in_parallel(names: &[String], each: impl Fn(&str) + Sync) {
    std::thread::scope(|scope| {
        for worker in 0..CONCURRENT {
            let each = &each;
            scope.spawn(move || {
                for name in names.iter().skip(worker).step_by(CONCURRENT) {
                    each(name);
                }
            });
        }
    });
}

/// The units matching `pattern` that systemd has running.
fn running_units(sandbox: &SystemdSandbox, pattern: &str) -> Vec<String> {
    sandbox
        .systemctl(&[
            "list-units",
            "--no-legend",
            "--plain",
            "--state=running",
            pattern,
        ])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How many units matching `pattern` systemd has running.
fn running_count(sandbox: &SystemdSandbox, pattern: &str) -> usize {
    running_units(sandbox, pattern).len()
}

fn wait_running(sandbox: &SystemdSandbox, pattern: &str, count: usize) {
    let begun = Instant::now();
    loop {
        let running = running_count(sandbox, pattern);
        if running == count {
            return;
        }
        assert!(
            begun.elapsed() < crate::LIMIT,
            "{pattern}: {running} running, not {count}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ceiling: `units` services of the same command, their unit files written to systemd's
/// runtime unit directory and read with one `daemon-reload` (not timed), then all started by
/// one `systemctl start --no-block` (as root, over systemd's private socket); the time from
/// that command until all run. They are stopped and removed afterwards.
fn systemd_itself(sandbox: &SystemdSandbox, units: usize) -> Duration {
    let names: Vec<String> = (0..units)
        .map(|i| format!("ceiling{i:05}.service"))
        .collect();
    let directory = sandbox.dir().join("run/systemd/system");
    for name in &names {
        std::fs::write(
            directory.join(name),
            format!("[Service]\nExecStart={SLEEP}\n"),
        )
        .expect("a unit file in the sandbox");
    }
    sandbox
        .systemctl(&["daemon-reload"])
        .expect("daemon-reload");
    let mut args = vec!["start", "--no-block"];
    args.extend(names.iter().map(String::as_str));
    let begun = Instant::now();
    sandbox.systemctl(&args).expect("systemctl start");
    wait_running(sandbox, "ceiling*.service", units);
    let elapsed = begun.elapsed();
    let _ = sandbox.systemctl(&["stop", "ceiling*.service"]);
    wait_processes(0, "the ceiling's services stopped");
    for name in &names {
        let _ = std::fs::remove_file(directory.join(name));
    }
    let _ = sandbox.systemctl(&["daemon-reload"]);
    elapsed
}

/// fleetd's cost with `units` units in systemd (the units themselves are systemd's).
fn cost_of(sandbox: &SystemdSandbox, units: usize, idle: Duration) -> Cost {
    std::thread::sleep(Duration::from_secs(2));
    let cgroup = sandbox.unit_cgroup("fleet.service");
    let pid: u32 = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("fleetd's PID");
    let usage = || -> f64 {
        std::fs::read_to_string(cgroup.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e6
    };
    let before = usage();
    std::thread::sleep(idle);
    let after = usage();
    assert_eq!(unit_processes().len(), units, "every unit still runs");
    Cost {
        units,
        manager: "systemd",
        fleetd_pss_kib: pss_kib(pid),
        shims_pss_kib: 0,
        fleetd_threads: threads(pid),
        shim_threads: 0,
        fleetd_fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        idle_cpu_percent: (after - before) / idle.as_secs_f64() * 100.0,
    }
}
