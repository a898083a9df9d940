//! Placement at scale, against etcd's own limit measured in the same run: M simulated machines
//! (real agents in one process, each with its own lease and watch, with a unit manager that
//! starts units instantly, like kubemark or nomad-nodesim) and one real engine, on one etcd
//! member with its data on disk. U units of a realistic mix are submitted as jobs in batched
//! transactions; the clock runs from the first job written to every unit placed and reported
//! launched (global units on every machine). Then every placement rule is checked on what the
//! registry holds. Two ceilings of the same etcd are measured first: keys per second written
//! in 128-put transactions, and, once every machine is connected, one-put transactions per
//! second from 256 writers at once (agents report in small transactions); `txns/unit` is how
//! many transactions etcd committed per unit during the run.
//!
//! Run with `scripts/bench placement`. Options: `--sizes 1000/100,10000/1000` (units/machines;
//! `100000/5000` is the big one), `--agent-ttl S` (default 30, fleet's default).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::fake::FakeManager;
use fleet_engine::invariants::{self, Observed, Strictness};
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::keys;
use fleet_registry::keys::RegistryKey;
use fleet_registry::kv::EventKind;
use fleet_registry::kv::{batched_put_rate, small_txn_rate, KvStore, Op, MAX_TXN_OPS};
use fleet_registry::records::{decode, MachineRecord, StateRecord};
use fleet_registry::registry::submissions;
use fleet_registry::{Registry, Scope, Snapshot};
use fleet_testkit::measure::cpu_seconds;
use fleet_testkit::{DataDir, EtcdServer};
use fleet_unit::{Constraints, JobState, Machine, MachineId, Requirements, UnitFile, UnitName};
use tokio::sync::watch;

const AGENTS_PER_CONNECTION: usize = 100;

struct Options {
    sizes: Vec<(usize, usize)>,
    agent_ttl: Duration,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        sizes: vec![(1_000, 100), (10_000, 1_000)],
        agent_ttl: Duration::from_secs(30),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => {
                options.sizes = value
                    .split(',')
                    .map(|size| {
                        let (units, machines) = size
                            .split_once('/')
                            .ok_or(format!("--sizes: {size:?} is not UNITS/MACHINES"))?;
                        let number = |n: &str| {
                            n.parse::<usize>()
                                .ok()
                                .filter(|n| *n > 0)
                                .ok_or(format!("--sizes: {n:?} is not a positive number"))
                        };
                        Ok((number(units)?, number(machines)?))
                    })
                    .collect::<Result<_, String>>()?
            }
            "--agent-ttl" => {
                let seconds: u64 = value
                    .parse()
                    .map_err(|_| format!("--agent-ttl: not a number of seconds: {value}"))?;
                options.agent_ttl = Duration::from_secs(seconds.max(1));
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// The unit files of the mix, by template: what fleet clusters ran (instances of a few
/// templates), with every kind of constraint.
fn templates() -> BTreeMap<&'static str, UnitFile> {
    let service = "[Service]\nExecStart=/bin/sleep infinity\n";
    [
        ("web@.service", String::new()),
        ("app@.service", String::new()),
        ("side@.service", "MachineOf=app@%i.service\n".to_owned()),
        ("db@.service", "MachineMetadata=disk=ssd\n".to_owned()),
        ("lb@.service", "Conflicts=lb@*\n".to_owned()),
        ("monitor@.service", "Global=true\n".to_owned()),
    ]
    .into_iter()
    .map(|(name, x_fleet)| {
        let text = match x_fleet.is_empty() {
            true => service.to_owned(),
            false => format!("{service}\n[X-Fleet]\n{x_fleet}"),
        };
        (name, UnitFile::parse(&text).expect("a valid unit"))
    })
    .collect()
}

/// `units` instances: per 1,000, 100 app/side pairs, 50 on SSD machines, 40 mutually
/// conflicting, 2 global units in all, the rest plain.
fn mix(units: usize) -> Vec<(UnitName, &'static str)> {
    let per = |n: usize| (units * n).div_ceil(1000);
    let mut mix = Vec::new();
    let mut add = |template: &'static str, count: usize| {
        for i in 0..count {
            let name = template.replace("@.", &format!("@{i}."));
            mix.push((UnitName::new(&name).expect("a valid name"), template));
        }
    };
    let (pairs, ssd, conflicting, global) = (per(100), per(50), per(40), 2);
    add("app@.service", pairs);
    add("side@.service", pairs);
    add("db@.service", ssd);
    add("lb@.service", conflicting);
    add("monitor@.service", global);
    add(
        "web@.service",
        units.saturating_sub(2 * pairs + ssd + conflicting + global),
    );
    mix
}

struct Outcome {
    units: usize,
    machines: usize,
    ceiling: f64,
    small_ceiling: f64,
    placed_in: Duration,
    launched_in: Duration,
    violations: Vec<String>,
    /// Transactions etcd committed from the first job to the last unit launched (its raft
    /// proposals: jobs, placements, agents' reports, lease grants), per unit: what bounds the
    /// rate once each is small.
    proposals_per_unit: f64,
    /// CPU seconds used from the first job to the last unit launched.
    cpu: Cpu,
    /// Wall time of `fleetctl list-units` and `list-unit-files` against the cluster.
    list_units: Duration,
    list_unit_files: Duration,
}

/// CPU seconds: etcd's, the simulated machines' (this process but the engine's thread), and
/// the engine's.
struct Cpu {
    etcd: f64,
    process: f64,
    engine: f64,
}

async fn measure(units: usize, machines: usize, agent_ttl: Duration) -> Outcome {
    let etcd = EtcdServer::start_in(DataDir::Disk);
    let mut config = EtcdConfig::new(vec![etcd.endpoint()], "/bench/");
    // At 100,000 units etcd answers a busy client in seconds, not fleetd's default bound.
    config.request_timeout = Duration::from_secs(15);
    let store: Arc<dyn KvStore> = Arc::new(EtcdStore::connect(&config).await.expect("etcd"));
    let ceiling = batched_put_rate(store.as_ref(), 20_000)
        .await
        .expect("ceiling write");
    let registry = Registry::open(Arc::clone(&store)).await.expect("registry");
    let dir = tempfile::tempdir().expect("temp dir");
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    // Real machines each have a connection of their own; a hundred agents share one here (all
    // on one, thousands of watch and keep-alive streams trip HTTP/2's reset limits).
    let mut connections = Vec::new();
    for _ in 0..machines.div_ceil(AGENTS_PER_CONNECTION) {
        let store = EtcdStore::connect(&config).await.expect("etcd");
        let registry = Registry::open(Arc::new(store)).await.expect("registry");
        connections.push(registry);
    }
    for m in 0..machines {
        let machine = MachineId::new(format!("m{m:05}")).expect("machine ID");
        let mut metadata = BTreeMap::new();
        if m % 2 == 0 {
            metadata.insert("disk".to_owned(), "ssd".to_owned());
        }
        let config = AgentConfig {
            machine,
            record: MachineRecord {
                metadata,
                ..MachineRecord::default()
            },
            ttl: agent_ttl,
            lease_file: dir.path().join(format!("m{m}.lease")),
            started_file: None,
            state_poll: Duration::from_secs(1),
            health: Default::default(),
            reschedule_failed_units: true,
            resync: Duration::from_secs(600),
            updates: None,
        };
        let manager = Arc::new(FakeManager::default());
        let registry = connections[m / AGENTS_PER_CONNECTION].clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = agent::run(registry, manager, config, shutdown).await {
                eprintln!("agent: {error}");
            }
        }));
    }
    until(Duration::from_secs(600), || async {
        let snapshot = registry.snapshot(&Scope::Engine).await.ok()?;
        (snapshot.machines.len() == machines).then_some(())
    })
    .await
    .expect("every machine registered within 10 minutes");
    // Agents report in small transactions, many at once: etcd's rate for those, with every
    // machine connected (keep-alives and watches, as during the run), is the other ceiling.
    let small_ceiling = small_txn_rate(store.as_ref(), 3_000, 256)
        .await
        .expect("ceiling write");
    let engine = EngineConfig {
        machine: MachineId::new("m00000").expect("machine ID"),
        lease_ttl: Duration::from_secs(10),
        resync: Duration::from_secs(600),
        version: "bench".into(),
        machine_grace: agent_ttl,
        collect_unit_files: Duration::from_secs(3600),
        reschedule_failed_units: true,
    };
    // The engine leads from a fleetd of its own in a real cluster: here a thread with its own
    // runtime and etcd connection, so it does not wait behind the simulated agents' tasks.
    let (engine_tid, tid_receiver) = std::sync::mpsc::channel();
    let engine_thread = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        std::thread::spawn(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`, relative to /proc.
            let task = std::fs::read_link("/proc/thread-self").ok();
            let _ = engine_tid.send(task.map(|task| std::path::Path::new("/proc").join(task)));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("engine runtime");
            runtime.block_on(async move {
                let store = EtcdStore::connect(&config).await.expect("etcd");
                let registry = Registry::open(Arc::new(store)).await.expect("registry");
                reconciler::run(registry, engine, shutdown).await
            })
        })
    };

    // Unit files are content, written before the clock starts; jobs (desired states) are what
    // is timed, written 128 to a transaction as a bulk submission would.
    let templates = templates();
    // Templates with the same text share one file.
    let files: BTreeMap<String, String> = templates
        .values()
        .map(|unit| (RegistryKey::Unit(unit.hash()).path(), unit.serialize()))
        .collect();
    let files = files
        .into_iter()
        .map(|(key, text)| Op::put(key, text))
        .collect();
    store.txn(vec![], files).await.expect("unit files");
    let mix = mix(units);
    let globals = mix.iter().filter(|(_, t)| *t == "monitor@.service").count();
    let singles = mix.len() - globals;
    // Progress is followed by watching (a listing of everything, again and again, would load
    // etcd as much as what is measured).
    let (_, revision) = store.range(&[keys::SCHEDULE]).await.expect("range");
    let mut schedule = store
        .watch(keys::SCHEDULE, revision + 1)
        .await
        .expect("watch");
    let mut states = store
        .watch(keys::STATES, revision + 1)
        .await
        .expect("watch");
    let proposals = || {
        etcd.metric("etcd_server_proposals_committed_total")
            .unwrap_or(0.0)
    };
    let proposals_before = proposals();
    // Where the CPU goes: etcd, this process (the simulated machines, and the engine's thread,
    // counted apart).
    let engine_stat = tid_receiver
        .recv()
        .ok()
        .flatten()
        .map(|task| task.join("stat"));
    let cpu = || Cpu {
        etcd: etcd.metric("process_cpu_seconds_total").unwrap_or(0.0),
        process: cpu_seconds(std::path::Path::new("/proc/self/stat")).unwrap_or(0.0),
        engine: engine_stat.as_deref().and_then(cpu_seconds).unwrap_or(0.0),
    };
    let cpu_before = cpu();
    let started = Instant::now();
    tracing::info!("bench: writing jobs");
    // Each batch with the number of units in it that get a placement (all but globals).
    let batches: Vec<(Vec<Op>, usize)> = mix
        .chunks(MAX_TXN_OPS)
        .map(|chunk| {
            let ops = chunk
                .iter()
                .map(|(name, template)| {
                    submissions::job(name, &templates[template], JobState::Launched)
                })
                .collect();
            let singles = chunk
                .iter()
                .filter(|(_, t)| *t != "monitor@.service")
                .count();
            (ops, singles)
        })
        .collect();
    let launched_so_far = Arc::new(AtomicUsize::new(0));
    let metrics = etcd.metrics_reader();
    let backlog = move || {
        let read = metrics(&[
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
        ]);
        read[0].unwrap_or(0.0) - read[1].unwrap_or(0.0)
    };
    let submitter = tokio::spawn(submit(
        Arc::clone(&store),
        batches,
        launched_so_far.clone(),
        backlog,
    ));
    let mut placed_in = None;
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut launched: BTreeSet<String> = BTreeSet::new();
    // Nothing here should ever be taken off a machine: each one is churn (the engine once
    // placed units again on a view that did not show its own writes yet).
    let mut unplaced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1800);
    let launched_in = loop {
        let batch = tokio::select! {
            batch = schedule.next() => batch,
            batch = states.next() => batch,
            _ = tokio::time::sleep_until(deadline) => panic!("not every unit launched within 30 minutes"),
        };
        let batch = batch.expect("the watch ended").expect("watch");
        for event in batch.events {
            let key = event.kv.key.clone();
            let is_state = key.starts_with(keys::STATES);
            let set = if is_state { &mut launched } else { &mut placed };
            if event.kind == EventKind::Delete && !is_state {
                unplaced += 1;
            }
            let counts = match event.kind {
                EventKind::Delete => false,
                EventKind::Put if is_state => {
                    decode::<StateRecord>(&key, &event.kv.value).is_ok_and(|state| state.launched)
                }
                EventKind::Put => true,
            };
            match counts {
                true => set.insert(key),
                false => set.remove(&key),
            };
        }
        launched_so_far.store(launched.len(), Ordering::Relaxed);
        if placed.len() == singles && placed_in.is_none() {
            placed_in = Some(started.elapsed());
        }
        if std::env::var_os("BENCH_PROGRESS").is_some() {
            eprintln!(
                "{:?}: placed {}, launched {}",
                started.elapsed(),
                placed.len(),
                launched.len()
            );
        }
        if launched.len() == singles + globals * machines {
            break started.elapsed();
        }
    };
    let proposals_per_unit = (proposals() - proposals_before) / units as f64;
    let cpu_after = cpu();
    let cpu_used = Cpu {
        etcd: cpu_after.etcd - cpu_before.etcd,
        engine: cpu_after.engine - cpu_before.engine,
        process: (cpu_after.process - cpu_after.engine) - (cpu_before.process - cpu_before.engine),
    };
    submitter.await.expect("every job written");
    let snapshot = registry.snapshot(&Scope::All).await.expect("snapshot");
    let mut violations = violations(&snapshot, &templates, &mix);
    if unplaced > 0 {
        violations.push(format!(
            "{unplaced} placements were taken back during the run"
        ));
    }
    let (list_units, list_unit_files) = listings(&registry, dir.path()).await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    Outcome {
        cpu: cpu_used,
        small_ceiling,
        proposals_per_unit,
        units,
        machines,
        ceiling,
        placed_in: placed_in.unwrap_or(launched_in),
        launched_in,
        violations,
        list_units,
        list_unit_files,
    }
}

/// At most this many units submitted and not yet reported launched: a bulk submission paced
/// by what the cluster takes in. At 100,000 units, writing every job at once left etcd's apply
/// so far behind its raft log that its own proposals timed out, and lease renewals (which
/// etcd answers only once it has applied what it committed) with them. Above 10,000, so the
/// smaller sizes are submitted in one go.
const UNLAUNCHED_AT_MOST: usize = 16_384;

/// At most this many raft entries committed by etcd and not yet applied before the next jobs
/// are written: etcd refuses proposals (`too many requests`) at 5,000, and holds lease renewals
/// until it has applied what it committed, so a deep backlog expires machines' leases.
const APPLY_BACKLOG_AT_MOST: f64 = 500.0;

/// Writes the jobs, eight transactions in flight, as a bulk submission through a few API
/// clients would, never more than `UNLAUNCHED_AT_MOST` ahead of the units launched, and only
/// while etcd keeps up with applying what it commits (`backlog`, from its metrics).
async fn submit(
    store: Arc<dyn KvStore>,
    batches: Vec<(Vec<Op>, usize)>,
    launched: Arc<AtomicUsize>,
    backlog: impl Fn() -> f64,
) {
    let mut submitted = 0;
    for wave in batches.chunks(8) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while submitted > launched.load(Ordering::Relaxed) + UNLAUNCHED_AT_MOST
            || backlog() > APPLY_BACKLOG_AT_MOST
        {
            assert!(Instant::now() < deadline, "nothing launched for 10 minutes");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent = wave.iter().map(|(ops, _)| async {
            // Plain puts: sending one again after a timeout is harmless. A busy etcd is given
            // time, not a failure: the bench ends at its own deadline if it never recovers.
            let mut pause = Duration::from_millis(100);
            loop {
                match store.txn(vec![], ops.clone()).await {
                    Ok(_) => return,
                    Err(error) => {
                        eprintln!("jobs: {error}; sending again in {pause:?}");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        futures_util::future::join_all(sent).await;
        submitted += wave.iter().map(|(_, singles)| singles).sum::<usize>();
    }
}

/// The median wall time of five runs each of `fleetctl list-units` and `list-unit-files`
/// through the API (fleet's page size, 100) served on a unix socket from this registry.
async fn listings(registry: &Registry, dir: &std::path::Path) -> (Duration, Duration) {
    let socket = dir.join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("API socket");
    let router = fleet_api::server::router(fleet_api::server::ApiState::new(
        registry.clone(),
        100,
        "bench",
    ));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let endpoint = format!("--endpoint=unix://{}", socket.display());
    let mut medians = Vec::new();
    for command in ["list-units", "list-unit-files"] {
        let endpoint = endpoint.clone();
        let mut times = tokio::task::spawn_blocking(move || {
            (0..5)
                .map(|_| {
                    let started = Instant::now();
                    let (code, out, err) =
                        fleetctl::run_captured(&[&endpoint, command, "--no-legend"], &[]);
                    assert_eq!(code, 0, "fleetctl {command}: {err}");
                    assert!(!out.is_empty());
                    started.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("fleetctl");
        times.sort();
        medians.push(times[2]);
    }
    server.abort();
    (medians[0], medians[1])
}

/// Calls `probe` every 250 ms until it gives a value, at most `within`.
async fn until<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(value) = probe().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Every placement rule (`fleet_engine::invariants`, at its strictest: every unit here is
/// launched and can be placed), on what the registry holds: where the engine placed each unit,
/// and where each global unit was reported launched.
fn violations(
    snapshot: &Snapshot,
    templates: &BTreeMap<&'static str, UnitFile>,
    mix: &[(UnitName, &'static str)],
) -> Vec<String> {
    let units: BTreeMap<String, (Constraints, bool)> = mix
        .iter()
        .map(|(name, template)| {
            let constraints =
                Requirements::for_unit(&templates[template], name.as_str()).constraints();
            (name.to_string(), (constraints, true))
        })
        .collect();
    let mut hosts: BTreeMap<String, Vec<String>> = snapshot
        .placed_units()
        .into_iter()
        .map(|(name, machines)| {
            let machines = machines.into_iter().map(MachineId::to_string).collect();
            (name.to_string(), machines)
        })
        .collect();
    for (machine, states) in &snapshot.states {
        for (name, state) in states {
            let global = units.get(name.as_str()).is_some_and(|(c, _)| c.global);
            if global && state.launched {
                hosts
                    .entry(name.to_string())
                    .or_default()
                    .push(machine.to_string());
            }
        }
    }
    let machines = snapshot
        .machines
        .keys()
        .map(|id| Machine {
            metadata: snapshot.machine_metadata(id),
            ..Machine::new(id.clone())
        })
        .collect();
    let observed = Observed {
        units,
        hosts,
        machines,
        ..Observed::default()
    };
    let strict = Strictness {
        every_unit_placed: true,
        peers_present: true,
        failed_machines_last: true,
    };
    invariants::violations(&observed, strict)
}

fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("placement_bench: {error}");
            std::process::exit(2);
        }
    };
    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "placement on one etcd member (data on disk), agent_ttl {:?}; clock from the first job \
         written to every unit placed / reported launched",
        options.agent_ttl
    );
    println!(
        "{:>8} {:>8} {:>13} {:>13} {:>10} {:>12} {:>10} {:>12} {:>9} {:>10} {:>18} {:>12} {:>12} violations",
        "units",
        "machines",
        "etcd keys/s",
        "etcd txns/s",
        "placed s",
        "placements/s",
        "of etcd",
        "launched s",
        "units/s",
        "txns/unit",
        "cpu s etcd/m/eng",
        "list-units",
        "unit-files"
    );
    let mut failed = false;
    for (units, machines) in options.sizes {
        let outcome = runtime.block_on(measure(units, machines, options.agent_ttl));
        let placements = units as f64 / outcome.placed_in.as_secs_f64();
        println!(
            "{:>8} {:>8} {:>13.0} {:>13.0} {:>10.2} {:>12.0} {:>10.2} {:>12.2} {:>9.0} {:>10.2} {:>18} {:>10.0}ms {:>10.0}ms {}",
            outcome.units,
            outcome.machines,
            outcome.ceiling,
            outcome.small_ceiling,
            outcome.placed_in.as_secs_f64(),
            placements,
            placements / outcome.ceiling,
            outcome.launched_in.as_secs_f64(),
            units as f64 / outcome.launched_in.as_secs_f64(),
            outcome.proposals_per_unit,
            format!(
                "{:.1}/{:.1}/{:.1}",
                outcome.cpu.etcd, outcome.cpu.process, outcome.cpu.engine
            ),
            outcome.list_units.as_secs_f64() * 1000.0,
            outcome.list_unit_files.as_secs_f64() * 1000.0,
            outcome.violations.len()
        );
        for violation in outcome.violations.iter().take(10) {
            println!("    {violation}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
