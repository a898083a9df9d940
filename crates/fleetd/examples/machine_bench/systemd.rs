//! The same machine with systemd as its unit manager: a sandboxed systemd (booted on an
//! overlay of the root, never the host's) running the release fleetd as `fleet.service` from
//! `contrib/systemd/`, N units submitted with one API request each (16 at a time); the
//! ceiling is systemd's own rate, N transient services made and started with
//! `StartTransientUnit` (16 calls at a time), measured on the same systemd in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use fleet_agent::systemd::jobs::{follow_removals, JobTracker};
use futures_util::StreamExt;

use fleet_testkit::measure::{built_binary, cpu_seconds, http_unix};
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
    let systemd_cpu = || cpu_seconds(&PathBuf::from(format!("/proc/{}/stat", sandbox.pid1())));
    let bus_cpu = || cgroup_cpu_seconds(&sandbox.unit_cgroup("dbus.service"));
    let (cpu_before, bus_before) = (systemd_cpu(), bus_cpu());
    let ceiling = systemd_itself(&sandbox, units);
    let ceiling_cpu = delta(cpu_before, systemd_cpu());
    let ceiling_bus = delta(bus_before, bus_cpu());

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
    let (cpu_before, bus_before) = (systemd_cpu(), bus_cpu());
    let fleetd_before = cgroup_cpu_seconds(&sandbox.unit_cgroup("fleet.service"));
    let submitted = begun.elapsed();
    // Counted in /proc, not with systemctl, whose every listing of a thousand units is work
    // for the systemd measured.
    wait_processes(units, "fleetd's units running");
    let running = begun.elapsed();
    // Where a start's time goes: systemd's own work for each, against the ceiling's.
    let seconds = |s: Option<f64>| s.map_or("?".into(), |s| format!("{s:.2}"));
    println!(
        "CPU for {units} starts: systemd {} s and dbus-daemon {} s for the ceiling; systemd {} \
         s and dbus-daemon {} s through fleetd, whose own was {} s",
        seconds(ceiling_cpu),
        seconds(ceiling_bus),
        seconds(delta(cpu_before, systemd_cpu())),
        seconds(delta(bus_before, bus_cpu())),
        seconds(delta(
            fleetd_before,
            cgroup_cpu_seconds(&sandbox.unit_cgroup("fleet.service"))
        )),
    );

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

/// A cgroup's CPU time so far (`usage_usec` of `cpu.stat`), in seconds.
fn cgroup_cpu_seconds(cgroup: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(cgroup.join("cpu.stat")).ok()?;
    let usec: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec / 1e6)
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
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

/// systemd's `StartTransientUnit`: a service made and started in one call.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Transient {
    fn subscribe(&self) -> zbus::Result<()>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, zbus::Variant<'_>)],
        aux: &[(&str, &[(&str, zbus::Variant<'_>)])],
    ) -> zbus::Result<zbus::OwnedObjectPath>;
}

/// The ceiling: `units` services of the same command made and started by systemd itself
/// with `StartTransientUnit` over its bus ([`CONCURRENT`] calls in flight, as the API
/// requests are, and no more jobs queued at once than fleetd queues: without a bound,
/// systemd is thrown off the bus at about 540), the time from the first call until all run.
/// They are stopped afterwards (transient units leave nothing behind).
fn systemd_itself(sandbox: &SystemdSandbox, units: usize) -> Duration {
    let names: Vec<String> = (0..units)
        .map(|i| format!("ceiling{i:05}.service"))
        .collect();
    let (program, arg) = SLEEP.split_once(' ').expect("a command with an argument");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let begun = Instant::now();
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(sandbox.bus_address().as_str())
            .build()
            .await
            .expect("the sandbox's bus");
        let systemd = TransientProxy::new(&connection)
            .await
            .expect("systemd on the bus");
        let removals = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .member("JobRemoved")
            .build()
            .expect("a match rule");
        let removals = zbus::MessageStream::for_match_rule(removals, &connection, None)
            .await
            .expect("JobRemoved signals");
        systemd.subscribe().await.expect("Subscribe");
        let jobs = Arc::new(JobTracker::default());
        tokio::spawn(follow_removals(removals, Arc::downgrade(&jobs)));
        let calls = names.iter().map(|name| {
            let (systemd, jobs) = (&systemd, &jobs);
            async move {
                let exec = vec![(program, vec![program, arg], false)];
                let properties = [("ExecStart", zbus::Variant::from(exec))];
                let permit = jobs.for_start(name).await;
                let job = systemd
                    .start_transient_unit(name, "fail", &properties, &[])
                    .await
                    .unwrap_or_else(|e| panic!("StartTransientUnit {name}: {e}"));
                jobs.queued(job.as_str(), permit);
            }
        });
        futures_util::stream::iter(calls)
            .buffer_unordered(CONCURRENT)
            .collect::<Vec<()>>()
            .await;
    });
    wait_processes(units, "the ceiling's services running");
    let elapsed = begun.elapsed();
    let _ = sandbox.systemctl(&["stop", "ceiling*.service"]);
    wait_processes(0, "the ceiling's services stopped");
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
    let usage = || cgroup_cpu_seconds(&cgroup).unwrap_or(0.0);
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
