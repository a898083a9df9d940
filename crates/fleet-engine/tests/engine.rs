//! The engine reconciler on a real (in-memory) registry: it places units, explains the ones it
//! cannot place, goes quiet once done, moves units off a machine that died, and hands over to
//! another engine when its leader dies; a follower writes nothing while the leader lives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use fleet_engine::reconciler::{run, EngineConfig};
use fleet_registry::intercepted::Intercepted;
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{KvStore, MachineLease, Registry, Scope, Snapshot};
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};
use tokio::sync::watch;

fn id(s: &str) -> MachineId {
    MachineId::new(s).unwrap()
}

fn config(machine: &str) -> EngineConfig {
    EngineConfig {
        machine: id(machine),
        lease_ttl: Duration::from_secs(1),
        // Short, so the idle checks below span several resyncs.
        resync: Duration::from_millis(200),
        version: "test".into(),
        machine_grace: Duration::from_secs(1),
        collect_unit_files: Duration::from_secs(3600),
        reschedule_failed_units: true,
    }
}

async fn registry() -> (Registry, Arc<dyn KvStore>) {
    let store: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    (Registry::open(Arc::clone(&store)).await.unwrap(), store)
}

async fn machine(
    registry: &Registry,
    name: &str,
    metadata: &[(&str, &str)],
    ttl: Duration,
) -> MachineLease {
    let record = MachineRecord {
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..MachineRecord::default()
    };
    registry
        .register_machine(&id(name), &record, ttl, None)
        .await
        .unwrap()
}

async fn job(registry: &Registry, name: &str, xfleet: &str) {
    let text = format!("[Service]\nExecStart=/bin/sleep 60\n[X-Fleet]\n{xfleet}");
    let unit = UnitFile::parse(&text).unwrap();
    registry
        .create_job(&UnitName::new(name).unwrap(), &unit, JobState::Launched)
        .await
        .unwrap();
}

/// A registry over `store` that counts its writes (transactions, lease grants and revokes).
async fn counted(store: Arc<dyn KvStore>) -> (Registry, Arc<AtomicUsize>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&writes);
    let counting = Intercepted::new(store, move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    (Registry::open(Arc::new(counting)).await.unwrap(), writes)
}

/// Waits (bounded) until the registry's snapshot satisfies `done`.
async fn until(registry: &Registry, what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    fleet_testkit::wait::eventually_async(what, Duration::from_secs(10), || async {
        let snapshot = registry.snapshot(&Scope::All).await.unwrap();
        match done(&snapshot) {
            true => Ok(snapshot),
            false => Err(format!("{snapshot:#?}")),
        }
    })
    .await
}

fn placed(snapshot: &Snapshot, unit: &str) -> Option<String> {
    let name = UnitName::new(unit).unwrap();
    let machine = snapshot.placements(&name).next().map(|m| m.to_string());
    machine
}

#[tokio::test(start_paused = true)]
async fn places_explains_and_goes_quiet() {
    let (registry, store) = registry().await;
    let ttl = Duration::from_secs(30);
    let _m1 = machine(&registry, "m1", &[("region", "eu")], ttl).await;
    let _m2 = machine(&registry, "m2", &[("region", "us")], ttl).await;
    job(&registry, "a.service", "").await;
    job(&registry, "b.service", "").await;
    job(&registry, "eu.service", "MachineMetadata=region=eu").await;
    job(&registry, "mars.service", "MachineMetadata=region=mars").await;
    let (stop, shutdown) = watch::channel(false);
    let engine = tokio::spawn(run(registry.clone(), config("m1"), shutdown));

    let snapshot = until(&registry, "placed", |s| {
        ["a.service", "b.service", "eu.service"]
            .iter()
            .all(|u| placed(s, u).is_some())
            && !s.reasons.is_empty()
    })
    .await;
    assert_ne!(
        placed(&snapshot, "a.service"),
        placed(&snapshot, "b.service"),
        "spread"
    );
    assert_eq!(placed(&snapshot, "eu.service").as_deref(), Some("m1"));
    let mars = UnitName::new("mars.service").unwrap();
    assert_eq!(snapshot.reasons[&mars].reason, "no machine has region=mars");

    // Done: once it has written its last decision (a pass may still be under way when the
    // outcome is visible), nothing more is written.
    let mut before = store.range(&["version"]).await.unwrap().1;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = store.range(&["version"]).await.unwrap().1;
        if now == before {
            break;
        }
        before = now;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        store.range(&["version"]).await.unwrap().1,
        before,
        "an idle engine writes nothing"
    );

    // A change of desired state reaches the placed copy.
    registry
        .set_desired(&UnitName::new("a.service").unwrap(), JobState::Loaded)
        .await
        .unwrap();
    until(&registry, "desired state followed", |s| {
        s.schedule
            .values()
            .flat_map(|p| p.iter())
            .any(|(n, r)| n.as_str() == "a.service" && r.desired == JobState::Loaded)
    })
    .await;
    // A destroyed job leaves its machine.
    registry
        .destroy_job(&UnitName::new("b.service").unwrap())
        .await
        .unwrap();
    until(&registry, "destroyed job unplaced", |s| {
        placed(s, "b.service").is_none()
    })
    .await;

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), engine)
        .await
        .unwrap()
        .unwrap();
    assert!(
        registry
            .snapshot(&Scope::All)
            .await
            .unwrap()
            .leader
            .is_none(),
        "resigned"
    );
}

#[tokio::test(start_paused = true)]
async fn units_leave_a_dead_machine() {
    let (registry, _) = registry().await;
    let _m1 = machine(&registry, "m1", &[], Duration::from_secs(30)).await;
    let m2 = machine(&registry, "m2", &[], Duration::from_secs(1)).await;
    job(&registry, "a.service", "").await;
    job(&registry, "b.service", "").await;
    let (_stop, shutdown) = watch::channel(false);
    let _engine = tokio::spawn(run(registry.clone(), config("m1"), shutdown));
    let snapshot = until(&registry, "placed", |s| {
        s.schedule.values().map(|p| p.len()).sum::<usize>() == 2
    })
    .await;
    assert!(snapshot.schedule.contains_key(&id("m2")));
    // m2 stops heartbeating: its lease runs out and its units move to m1.
    drop(m2);
    until(&registry, "moved to m1", |s| {
        s.schedule.keys().all(|m| m.as_str() == "m1")
            && s.schedule.get(&id("m1")).is_some_and(|p| p.len() == 2)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn another_engine_takes_over_when_the_leader_dies() {
    let (registry, _) = registry().await;
    let _m1 = machine(&registry, "m1", &[], Duration::from_secs(30)).await;
    let (_stop1, shutdown1) = watch::channel(false);
    let first = tokio::spawn(run(registry.clone(), config("e1"), shutdown1));
    until(&registry, "e1 leads", |s| {
        s.leader
            .as_ref()
            .is_some_and(|l| l.machine.as_str() == "e1")
    })
    .await;
    let (_stop2, shutdown2) = watch::channel(false);
    let _second = tokio::spawn(run(registry.clone(), config("e2"), shutdown2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        registry
            .snapshot(&Scope::All)
            .await
            .unwrap()
            .leader
            .unwrap()
            .machine
            .as_str(),
        "e1"
    );

    // The leader dies without resigning (as with kill -9): e2 takes over after the lease TTL.
    first.abort();
    let died = Instant::now();
    until(&registry, "e2 leads", |s| {
        s.leader
            .as_ref()
            .is_some_and(|l| l.machine.as_str() == "e2")
    })
    .await;
    // On the paused clock: the lease's TTL, and then the follower's next look.
    let takeover = died.elapsed();
    assert!(
        takeover >= Duration::from_millis(900) && takeover < Duration::from_secs(3),
        "took {takeover:?} with a 1 s lease"
    );
    job(&registry, "late.service", "").await;
    until(&registry, "the new leader places", |s| {
        placed(s, "late.service").is_some()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_follower_writes_nothing_while_the_leader_lives() {
    let (registry, store) = registry().await;
    let (_stop1, shutdown1) = watch::channel(false);
    let _first = tokio::spawn(run(registry.clone(), config("e1"), shutdown1));
    until(&registry, "e1 leads", |s| s.leader.is_some()).await;
    // Every write the follower makes (transactions, lease grants and revokes) is counted.
    let (follower, writes) = counted(store).await;
    writes.store(0, Ordering::Relaxed);
    let (_stop2, shutdown2) = watch::channel(false);
    let _second = tokio::spawn(run(follower, config("e2"), shutdown2));
    // Its one campaign (a lease granted, the leader key found taken, the lease revoked), then
    // three lease TTLs of nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let campaign = writes.load(Ordering::Relaxed);
    assert!(campaign <= 3, "{campaign} writes for one campaign");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = writes.load(Ordering::Relaxed) - campaign;
    assert_eq!(idle, 0, "the follower wrote {idle} times while e1 led");
}

/// The leader deletes unit files no job refers to, and an idle leader with nothing to
/// collect writes nothing.
#[tokio::test(start_paused = true)]
async fn the_leader_collects_unit_files_no_job_refers_to() {
    let (registry, store) = registry().await;
    let _m1 = machine(&registry, "m1", &[], Duration::from_secs(30)).await;
    job(&registry, "a.service", "").await;
    job(&registry, "b.service", "MachineOf=a.service").await;
    let (engine_registry, writes) = counted(store).await;
    let config = EngineConfig {
        collect_unit_files: Duration::from_millis(200),
        reschedule_failed_units: true,
        ..config("m1")
    };
    let (_stop, shutdown) = watch::channel(false);
    let _engine = tokio::spawn(run(engine_registry, config, shutdown));
    until(&registry, "placed", |s| placed(s, "b.service").is_some()).await;
    let hash_of = |s: &Snapshot, unit: &str| s.jobs[&UnitName::new(unit).unwrap()].hash;
    let all = registry.snapshot(&Scope::All).await.unwrap();
    let (a, b) = (hash_of(&all, "a.service"), hash_of(&all, "b.service"));
    registry
        .destroy_job(&UnitName::new("a.service").unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.unit_file(&a).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "a's unit file was never collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        registry.unit_file(&b).await.unwrap().is_some(),
        "b's file is still used"
    );
    // Settled: five collection periods of nothing to collect write nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = writes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(writes.load(Ordering::Relaxed) - before, 0, "idle writes");
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_unit_file_is_explained_and_holds_up_nothing_else() {
    let (registry, store) = registry().await;
    let _m1 = machine(&registry, "m1", &[], Duration::from_secs(30)).await;
    job(&registry, "poisoned.service", "Conflicts=nothing.service").await;
    // Its stored file no longer matches its hash (bit rot, or a writer that bypassed the API).
    let poisoned = registry
        .job(&UnitName::new("poisoned.service").unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    let key = fleet_registry::keys::RegistryKey::Unit(poisoned.hash).path();
    let garbage = fleet_registry::kv::Op::put(key.clone(), "[Service\nExecStart=/bin/evil\n");
    store.txn(Vec::new(), vec![garbage]).await.unwrap();
    job(&registry, "good.service", "").await;
    let (stop, shutdown) = watch::channel(false);
    let engine = tokio::spawn(run(registry.clone(), config("m1"), shutdown));

    let snapshot = until(&registry, "the good unit placed, the bad explained", |s| {
        placed(s, "good.service").is_some() && !s.reasons.is_empty()
    })
    .await;
    let reason = &snapshot.reasons[&UnitName::new("poisoned.service").unwrap()].reason;
    assert!(
        reason.contains(&key) && reason.contains("cannot be read"),
        "{reason}"
    );
    assert_eq!(placed(&snapshot, "poisoned.service"), None);
    // Units submitted afterwards are placed too.
    job(&registry, "later.service", "").await;
    until(&registry, "a later unit placed", |s| {
        placed(s, "later.service").is_some()
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), engine)
        .await
        .unwrap()
        .unwrap();
}
