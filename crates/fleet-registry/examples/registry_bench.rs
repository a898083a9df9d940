//! Registry benchmark: how fast the engine's batched decisions reach the store, against the
//! store's own ceiling measured in the same run, and what an idle machine writes.
//!
//! Run with `scripts/bench registry` (a release build; etcd on disk in the system temp dir).
//! Options: `--decisions N` (default 10000), `--idle-seconds S` (default 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::kv::{batched_put_rate, KvStore, Op};
use fleet_registry::local::LocalStore;
use fleet_registry::records::{JobRecord, StateRecord};

use fleet_registry::{EngineWrite, Registry, Scope};
use fleet_testkit::{DataDir, EtcdServer};
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};

struct Options {
    decisions: usize,
    idle: Duration,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        decisions: 10_000,
        idle: Duration::from_secs(10),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--decisions" => options.decisions = number as usize,
            "--idle-seconds" => options.idle = Duration::from_secs(number),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(options)
}

/// One row of the results table.
struct Row {
    backend: &'static str,
    what: String,
    value: f64,
    unit: &'static str,
    note: String,
}

fn print(rows: &[Row]) {
    println!(
        "{:<9} {:<52} {:>12} {:<10} note",
        "backend", "measure", "value", "unit"
    );
    for row in rows {
        println!(
            "{:<9} {:<52} {:>12.1} {:<10} {}",
            row.backend, row.what, row.value, row.unit, row.note
        );
    }
}

/// Single puts back to back: what a scheduler writing one decision per round trip gets.
async fn single_puts(store: &dyn KvStore, count: usize) -> f64 {
    let started = Instant::now();
    for i in 0..count {
        let op = Op::put(format!("single/{i}"), "x");
        store.txn(vec![], vec![op]).await.expect("single write");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The engine's path: placements committed as fenced, packed transactions. Returns
/// decisions per second.
async fn decisions_rate(registry: &Registry, count: usize) -> f64 {
    let me = MachineId::new("bench-engine").unwrap();
    let leadership = registry
        .campaign(&me, Duration::from_secs(60), "bench")
        .await
        .expect("campaign")
        .expect("no other leader");
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/true\n").unwrap();
    let record = JobRecord {
        hash: unit.hash(),
        desired: JobState::Launched,
    };
    let groups: Vec<Vec<EngineWrite>> = (0..count)
        .map(|i| {
            let name = UnitName::new(format!("u{i}.service")).unwrap();
            let machine = MachineId::new(format!("m{}", i % 1000)).unwrap();
            vec![
                EngineWrite::place(&machine, &name, &record),
                EngineWrite::placeable(&name),
            ]
        })
        .collect();
    let started = Instant::now();
    registry
        .commit_decisions(&leadership, groups)
        .await
        .expect("commit")
        .expect("still leading");
    let rate = count as f64 / started.elapsed().as_secs_f64();
    registry.resign(&leadership).await.expect("resign");
    rate
}

/// What an idle machine cost.
struct Idle {
    writes_per_second: f64,
    keep_alives_per_second: f64,
    /// etcd's own count of raft proposals in the idle period (independent of our revisions).
    proposals: Option<f64>,
}

/// A machine with 100 unit states, kept alive once a second for `idle`: how many revisions
/// (writes) the store made meanwhile, and how many keep-alives were sent.
async fn idle_machine(
    registry: &Registry,
    store: &dyn KvStore,
    idle: Duration,
    etcd: Option<&EtcdServer>,
) -> Idle {
    let proposals = || etcd.and_then(|e| e.metric("etcd_server_proposals_committed_total"));
    let me = MachineId::new("bench-idle").unwrap();
    let lease = registry
        .register_machine(&me, &Default::default(), Duration::from_secs(5), None)
        .await
        .expect("register");
    let state = StateRecord {
        hash: None,
        load: "loaded".into(),
        active: "active".into(),
        sub: "running".into(),
        launched: true,
        ..StateRecord::default()
    };
    for i in 0..100 {
        let name = UnitName::new(format!("idle{i}.service")).unwrap();
        registry
            .set_state(&lease, &name, Some(&state))
            .await
            .expect("state");
    }
    let before = store.range(&["version"]).await.expect("revision").1;
    let proposals_before = proposals();
    let started = Instant::now();
    let mut keep_alives = 0;
    while started.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(registry.keep_alive(&lease).await.expect("keep-alive"));
        keep_alives += 1;
    }
    let after = store.range(&["version"]).await.expect("revision").1;
    let proposals_after = proposals();
    let seconds = started.elapsed().as_secs_f64();
    let states = registry
        .snapshot(&Scope::All)
        .await
        .expect("snapshot")
        .states;
    assert_eq!(states.get(&me).map(|s| s.len()), Some(100));
    registry.deregister(&lease).await.expect("deregister");
    Idle {
        writes_per_second: (after - before) as f64 / seconds,
        keep_alives_per_second: keep_alives as f64 / seconds,
        proposals: proposals_before
            .zip(proposals_after)
            .map(|(before, after)| after - before),
    }
}

async fn run(
    backend: &'static str,
    store: Arc<dyn KvStore>,
    etcd: Option<&EtcdServer>,
    options: &Options,
    rows: &mut Vec<Row>,
) {
    let registry = Registry::open(Arc::clone(&store)).await.expect("open");
    let ceiling = batched_put_rate(&*store, options.decisions * 2)
        .await
        .expect("ceiling write");
    rows.push(Row {
        backend,
        what: "ceiling: plain puts in 128-op transactions".into(),
        value: ceiling,
        unit: "keys/s",
        note: "the store's batched write rate".into(),
    });
    let singles = single_puts(&*store, 500).await;
    rows.push(Row {
        backend,
        what: "single puts, one per round trip".into(),
        value: singles,
        unit: "keys/s",
        note: format!("{:.1}% of ceiling", 100.0 * singles / ceiling),
    });
    let decided = decisions_rate(&registry, options.decisions).await;
    rows.push(Row {
        backend,
        what: format!("engine placements ({} units, fenced)", options.decisions),
        value: decided,
        unit: "units/s",
        note: format!(
            "{:.1}% of ceiling (a key written + a reason cleared each)",
            100.0 * decided / ceiling
        ),
    });
    let idle = idle_machine(&registry, &*store, options.idle, etcd).await;
    let proposals = match idle.proposals {
        Some(p) => format!("; etcd raft proposals meanwhile: {p}"),
        None => String::new(),
    };
    rows.push(Row {
        backend,
        what: format!("idle 100-unit machine, {:?}: writes", options.idle),
        value: idle.writes_per_second,
        unit: "writes/s",
        note: format!(
            "keep-alives: {:.2}/s{proposals}",
            idle.keep_alives_per_second
        ),
    });
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = match options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("registry_bench: {e}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();

    let etcd = EtcdServer::start_in(DataDir::Disk);
    let config = EtcdConfig::new(vec![etcd.endpoint()], "/bench/");
    let store = EtcdStore::connect(&config).await.expect("connect to etcd");
    run("etcd", Arc::new(store), Some(&etcd), &options, &mut rows).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(&dir.path().join("registry.redb")).expect("embedded store");
    run("embedded", Arc::new(store), None, &options, &mut rows).await;

    print(&rows);
}
