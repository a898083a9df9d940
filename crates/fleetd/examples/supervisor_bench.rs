//! Native supervisor benchmark: the time from "start" to the unit's process running, and the
//! memory of a shim, for N units, next to the floor: spawning the same process directly.
//!
//! Run with `scripts/bench supervisor` (release build). Option: `--units N` (default 50).

use std::time::{Duration, Instant};

use fleet_native::supervisor::{Supervisor, SupervisorConfig};
use fleet_testkit::measure::{
    built_binary, count_option, latency_table, memory_kib, percentile, spawn_floor, Memory,
};
use fleet_unit::{UnitFile, UnitName};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count = count_option("--units", 50);
    let dir = tempfile::tempdir().expect("temp dir");
    let supervisor = Supervisor::open(SupervisorConfig {
        log_max_bytes: 1024 * 1024,
        ..SupervisorConfig::under(dir.path(), &built_binary("fleetd"))
    })
    .expect("supervisor");
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/sleep 600\n").unwrap();

    // The floor: the same process spawned directly.
    let direct = spawn_floor(count);

    let mut latencies = Vec::new();
    let mut memory = Vec::new();
    let mut names = Vec::new();
    for i in 0..count {
        let name = UnitName::new(format!("bench{i}.service")).unwrap();
        supervisor.load(&name, &unit).unwrap();
        let started = Instant::now();
        supervisor.start(&name).await.expect("start");
        loop {
            let state = supervisor.state(&name).await;
            if state.sub == "running" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name} never ran: {state:?}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed());
        names.push(name);
    }
    for name in &names {
        let pid: u32 = std::fs::read_to_string(supervisor.run_dir(name).join("shim.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .expect("shim pid");
        memory.extend(memory_kib(pid));
    }
    latencies.sort();
    for name in &names {
        supervisor.stop(name).await.expect("stop");
    }
    let average = |of: fn(&Memory) -> u64| {
        memory.iter().map(of).sum::<u64>() as f64 / memory.len().max(1) as f64
    };
    print!(
        "{}",
        latency_table(&[
            ("floor: spawn /bin/sleep directly".to_owned(), &direct),
            (
                format!("start to running through a shim ({count} units)"),
                &latencies
            ),
        ])
    );
    println!(
        "shim memory per unit (average): {:.0} KiB resident, of which {:.0} KiB its own (the rest is the shared binary)",
        average(|m| m.resident),
        average(|m| m.private)
    );
    println!(
        "ratio start-to-running / direct spawn (median): {:.1}x",
        percentile(&latencies, 0.5).as_secs_f64() / percentile(&direct, 0.5).as_secs_f64()
    );
}
