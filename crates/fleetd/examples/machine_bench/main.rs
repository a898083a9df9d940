//! One machine at realistic counts (issue 17): a release fleetd with the native supervisor on
//! the embedded registry, N units (`/bin/sleep`) started with one `fleetctl start --no-block`
//! and with one API request each (16 at a time); the time until every unit runs, next to the
//! ceiling of spawning the same N processes directly from one process, measured in the same
//! run; what the running units cost (PSS of fleetd and its shims, threads, descriptors, idle
//! CPU); the time until every process is gone after a destroy of all, and after SIGTERM of
//! fleetd; and, from fleetd's own log, lease renewals missed and units started more than once
//! (both must be 0).
//!
//! The same with systemd as the unit manager (`systemd.rs`), against systemd's own rate.
//!
//! Run with `scripts/bench machine`. Options: `--sizes 100,1000,2000`, `--idle-seconds S`
//! (default 10), `--no-systemd` (native only; the systemd rows need root), `--only-systemd`.

#[path = "../node_bench/node.rs"]
#[allow(dead_code)]
mod node;
mod systemd;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::measure::{built_binary, count_option, cpu_seconds, memory_kib};

use node::{Node, Setup};

/// What each unit runs; the argument tells this benchmark's processes from any other.
pub const SLEEP: &str = "/bin/sleep 3599";
/// How long any phase may take before the benchmark gives up.
pub const LIMIT: Duration = Duration::from_secs(600);

fn main() {
    let sizes = sizes_option();
    let idle = Duration::from_secs(count_option("--idle-seconds", 10) as u64);
    let with_systemd = !std::env::args().any(|a| a == "--no-systemd");
    let with_native = !std::env::args().any(|a| a == "--only-systemd");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut starts = Vec::new();
    let mut costs = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &units in &sizes {
        let ceiling = spawn_directly(units);
        let native_modes = match with_native {
            true => vec![Mode::Fleetctl, Mode::Api],
            false => Vec::new(),
        };
        for mode in native_modes {
            let base = dir.path().join(format!("{units}-{}", mode.label()));
            std::fs::create_dir_all(&base).expect("bench dir");
            let log = base.join("fleetd.log");
            let node = Node::start(
                &base,
                &format!("machine{units}{}", mode.label()),
                &Setup {
                    etcd: None,
                    settings: vec![("AGENT_TTL", "5s".to_owned())],
                    log: Some(log.clone()),
                },
            );
            let names: Vec<String> = (0..units).map(|i| format!("u{i:05}.service")).collect();
            let (submitted, running) = start_all(&node, &base, mode, &names);
            assert_all_running(&node, &names);
            let cost = match mode {
                Mode::Api | Mode::SystemdApi => Some(cost_of(&node, units, idle)),
                Mode::Fleetctl => None,
            };
            let (destroyed, gone) = match mode {
                Mode::Fleetctl => {
                    let (destroyed, gone) = destroy_all(&node, &base, &names);
                    node.stop();
                    (Some(destroyed), gone)
                }
                // The API run's units go with fleetd's SIGTERM, as a machine leaving does.
                Mode::Api | Mode::SystemdApi => {
                    let begun = Instant::now();
                    node.stop();
                    wait_processes(0, "fleetd's SIGTERM");
                    (None, begun.elapsed())
                }
            };
            let (missed, restarted) = from_log(&log);
            starts.push(StartRow {
                units,
                mode,
                submitted,
                running,
                ceiling,
                destroyed,
                gone,
                missed,
                restarted,
            });
            if let Some(cost) = cost {
                costs.push(cost);
            }
        }
        if with_systemd {
            // A failure is a result too (the row says why), not the end of the run.
            match std::panic::catch_unwind(|| systemd::run(units, idle)) {
                Ok((row, cost)) => {
                    starts.push(row);
                    costs.push(cost);
                }
                Err(why) => {
                    let why = why
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| why.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let first = why.lines().take(3).collect::<Vec<_>>().join(" / ");
                    failures.push(format!("{units} units, systemd: {first}"));
                }
            }
        }
    }
    print_starts(&starts);
    println!();
    print_costs(&costs);
    for failure in &failures {
        println!("FAILED: {failure}");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `fleetctl start --no-block` of every unit file.
    Fleetctl,
    /// One `PUT /fleet/v1/units/<name>` per unit, launched, 16 at a time.
    Api,
    /// The same, with systemd as the unit manager; its ceiling is systemd's own.
    SystemdApi,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Fleetctl => "fleetctl",
            Mode::Api => "api",
            Mode::SystemdApi => "api",
        }
    }

    fn manager(self) -> &'static str {
        match self {
            Mode::SystemdApi => "systemd",
            _ => "native",
        }
    }
}

pub struct StartRow {
    units: usize,
    mode: Mode,
    /// Until fleetctl returned, or every PUT was answered.
    submitted: Duration,
    /// Until every unit's process ran, from the first request.
    running: Duration,
    /// Spawning the same processes directly.
    ceiling: Duration,
    /// Until `fleetctl destroy` returned.
    destroyed: Option<Duration>,
    /// Until every process was gone, from the destroy (or fleetd's SIGTERM).
    gone: Duration,
    missed: usize,
    restarted: usize,
}

pub struct Cost {
    units: usize,
    manager: &'static str,
    fleetd_pss_kib: u64,
    shims_pss_kib: u64,
    fleetd_threads: u64,
    shim_threads: u64,
    fleetd_fds: usize,
    idle_cpu_percent: f64,
}

fn sizes_option() -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--sizes") {
        None => vec![100, 1000, 2000],
        Some(at) => args
            .get(at + 1)
            .map(|list| {
                list.split(',')
                    .map(|n| n.trim().parse().expect("--sizes: numbers, e.g. 100,1000"))
                    .collect()
            })
            .unwrap_or_else(|| {
                eprintln!("--sizes needs a list, e.g. 100,1000");
                std::process::exit(2)
            }),
    }
}

/// The ceiling: `units` processes spawned one after another from one process, until all
/// have been spawned; then ended.
fn spawn_directly(units: usize) -> Duration {
    let (program, args) = SLEEP.split_once(' ').expect("a command with an argument");
    let begun = Instant::now();
    let children = Spawned(
        (0..units)
            .map(|_| {
                Command::new(program)
                    .arg(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn")
            })
            .collect(),
    );
    wait_processes(units, "directly spawned processes");
    let elapsed = begun.elapsed();
    drop(children);
    elapsed
}

/// Processes the benchmark spawned itself: ended when dropped, also by a panic.
struct Spawned(Vec<std::process::Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn start_all(node: &Node, base: &Path, mode: Mode, names: &[String]) -> (Duration, Duration) {
    let begun = Instant::now();
    match mode {
        Mode::Fleetctl => {
            let files = base.join("files");
            std::fs::create_dir_all(&files).expect("unit files dir");
            for name in names {
                let text = format!("[Service]\nExecStart={SLEEP}\n");
                std::fs::write(files.join(name), text).expect("unit file");
            }
            let status = fleetctl(node)
                .arg("start")
                .arg("--no-block")
                .args(names)
                .current_dir(&files)
                .status()
                .expect("fleetctl runs");
            assert!(status.success(), "fleetctl start: {status}");
        }
        Mode::Api | Mode::SystemdApi => {
            let (program, arg) = SLEEP.split_once(' ').expect("a command with an argument");
            let body = serde_json::json!({
                "desiredState": "launched",
                "options": [{"section": "Service", "name": "ExecStart", "value": format!("{program} {arg}")}],
            })
            .to_string();
            std::thread::scope(|scope| {
                for worker in 0..16 {
                    let body = &body;
                    scope.spawn(move || {
                        for name in names.iter().skip(worker).step_by(16) {
                            let path = format!("/fleet/v1/units/{name}");
                            let (status, answer) = node.api("PUT", &path, Some(body));
                            assert_eq!(status, 201, "PUT {name}: {answer}");
                        }
                    });
                }
            });
        }
    }
    let submitted = begun.elapsed();
    if let Err(found) = processes_reach(names.len(), START_LIMIT) {
        panic!(
            "units running: {found} processes, not {}, after {START_LIMIT:?}; {}",
            names.len(),
            not_running(node, base, names)
        );
    }
    (submitted, begun.elapsed())
}

/// How long a start may take before the run stops with the units that did not start.
const START_LIMIT: Duration = Duration::from_secs(180);

/// The units the API does not show running, with their states and what fleetd logged of
/// them: a start that fails says why.
fn not_running(node: &Node, base: &Path, names: &[String]) -> String {
    let states: BTreeMap<String, String> = node
        .states()
        .into_iter()
        .map(|(name, machine, sub)| (name, format!("{sub} on {machine}")))
        .collect();
    let log = std::fs::read_to_string(base.join("fleetd.log")).unwrap_or_default();
    let mut report = String::new();
    for name in names
        .iter()
        .filter(|n| states.get(*n).is_none_or(|s| !s.starts_with("running")))
        .take(5)
    {
        let state = states.get(name).map_or("no state", String::as_str);
        report.push_str(&format!("\n{name}: {state}"));
        for line in log.lines().filter(|l| l.contains(name.as_str())) {
            report.push_str(&format!("\n  {line}"));
        }
        // The unit's own log and last state, as its shim left them.
        let files = [
            ("log", node.data.join("logs").join(name)),
            (
                "state.json",
                node.runtime.join("native").join(name).join("state.json"),
            ),
        ];
        for (file, path) in files {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(10)..] {
                report.push_str(&format!("\n  {file}: {line}"));
            }
        }
    }
    report
}

fn fleetctl(node: &Node) -> Command {
    let mut command = Command::new(built_binary("fleetctl"));
    command
        .arg(format!("--endpoint=unix://{}", node.socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// The API shows every unit running (the processes alone could run unreported).
fn assert_all_running(node: &Node, names: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = node.states();
        let running = states.iter().filter(|(_, _, sub)| sub == "running").count();
        if running == names.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{running} of {} reported running",
            names.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn destroy_all(node: &Node, base: &Path, names: &[String]) -> (Duration, Duration) {
    let begun = Instant::now();
    let status = fleetctl(node)
        .arg("destroy")
        .args(names)
        .current_dir(base)
        .status()
        .expect("fleetctl runs");
    assert!(status.success(), "fleetctl destroy: {status}");
    let destroyed = begun.elapsed();
    wait_processes(0, "units gone after destroy");
    (destroyed, begun.elapsed())
}

/// Waits (bounded) until exactly `count` of this benchmark's unit processes exist.
pub fn wait_processes(count: usize, what: &str) {
    if let Err(found) = processes_reach(count, LIMIT) {
        panic!("{what}: {found} processes, not {count}");
    }
}

/// Waits until exactly `count` of this benchmark's unit processes exist; `Err` with the
/// number found when `limit` passes first.
fn processes_reach(count: usize, limit: Duration) -> Result<(), usize> {
    let begun = Instant::now();
    loop {
        let found = unit_processes().len();
        if found == count {
            return Ok(());
        }
        if begun.elapsed() >= limit {
            return Err(found);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes running [`SLEEP`].
pub fn unit_processes() -> Vec<u32> {
    fleet_testkit::measure::processes_running(SLEEP)
        .into_iter()
        .collect()
}

/// The shims of `node`'s units, from their run directories.
fn shims(node: &Node) -> Vec<u32> {
    std::fs::read_dir(node.runtime.join("native"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("shim.pid")).ok())
        .filter_map(|pid| pid.trim().parse().ok())
        .collect()
}

/// A process's proportional set size (shared pages split among their users), in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// What `units` running units cost their machine, measured once they are idle.
fn cost_of(node: &Node, units: usize, idle: Duration) -> Cost {
    std::thread::sleep(Duration::from_secs(2));
    let shim_pids = shims(node);
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|pid| cpu_seconds(Path::new(&format!("/proc/{pid}/stat"))))
            .sum()
    };
    let mut everyone = shim_pids.clone();
    everyone.push(node.pid());
    let before = cpu(&everyone);
    std::thread::sleep(idle);
    let after = cpu(&everyone);
    let _ = memory_kib(node.pid());
    Cost {
        units,
        manager: "native",
        fleetd_pss_kib: pss_kib(node.pid()),
        shims_pss_kib: shim_pids.iter().map(|pid| pss_kib(*pid)).sum(),
        fleetd_threads: threads(node.pid()),
        shim_threads: shim_pids.iter().map(|pid| threads(*pid)).sum(),
        fleetd_fds: std::fs::read_dir(format!("/proc/{}/fd", node.pid()))
            .map(|d| d.count())
            .unwrap_or(0),
        idle_cpu_percent: (after - before) / idle.as_secs_f64() * 100.0,
    }
}

/// From fleetd's log file: see [`from_log_text`].
fn from_log(log: &Path) -> (usize, usize) {
    from_log_text(&std::fs::read_to_string(log).unwrap_or_default())
}

/// From fleetd's log: renewals missed (the lease taken for lost, or found expired) and units
/// started more than once.
pub fn from_log_text(text: &str) -> (usize, usize) {
    let missed = text
        .lines()
        .filter(|l| l.contains("lease is taken for lost") || l.contains("lease expired"))
        .count();
    let mut starts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("agent: starting")) {
        if let Some(unit) = line.split("unit=").nth(1) {
            *starts.entry(unit.trim()).or_default() += 1;
        }
    }
    (missed, starts.values().filter(|n| **n > 1).count())
}

fn seconds(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn print_starts(rows: &[StartRow]) {
    println!(
        "{:>6} {:<8} {:<9} {:>10} {:>11} {:>10} {:>11} {:>7} {:>10} {:>9} {:>7} {:>10}",
        "units",
        "manager",
        "via",
        "submit s",
        "running s",
        "units/s",
        "ceiling/s",
        "ratio",
        "destroy s",
        "gone s",
        "missed",
        "restarted"
    );
    for row in rows {
        let rate = row.units as f64 / row.running.as_secs_f64();
        let ceiling = row.units as f64 / row.ceiling.as_secs_f64();
        println!(
            "{:>6} {:<8} {:<9} {:>10} {:>11} {:>10.0} {:>11.0} {:>7.2} {:>10} {:>9} {:>7} {:>10}",
            row.units,
            row.mode.manager(),
            row.mode.label(),
            seconds(row.submitted),
            seconds(row.running),
            rate,
            ceiling,
            rate / ceiling,
            row.destroyed
                .map(seconds)
                .unwrap_or_else(|| "SIGTERM".into()),
            seconds(row.gone),
            row.missed,
            row.restarted,
        );
    }
    println!(
        "running: from the first request until every unit's process exists (submit included);"
    );
    println!(
        "ceiling: native, the same number of processes spawned one after another from one process;"
    );
    println!(
        "         systemd, as many transient services made and started by systemd (StartTransientUnit);"
    );
    println!("gone: from fleetctl destroy (or fleetd's SIGTERM) until no unit process is left.");
}

fn print_costs(costs: &[Cost]) {
    println!(
        "{:>6} {:<8} {:>14} {:>13} {:>14} {:>9} {:>13} {:>7} {:>11}",
        "units",
        "manager",
        "fleetd PSS MiB",
        "shims PSS MiB",
        "KiB/unit (PSS)",
        "threads",
        "shim threads",
        "fds",
        "idle CPU %"
    );
    for cost in costs {
        let total = cost.fleetd_pss_kib + cost.shims_pss_kib;
        println!(
            "{:>6} {:<8} {:>14.1} {:>13.1} {:>14.0} {:>9} {:>13} {:>7} {:>11.2}",
            cost.units,
            cost.manager,
            cost.fleetd_pss_kib as f64 / 1024.0,
            cost.shims_pss_kib as f64 / 1024.0,
            total as f64 / cost.units as f64,
            cost.fleetd_threads,
            cost.shim_threads,
            cost.fleetd_fds,
            cost.idle_cpu_percent,
        );
    }
}
