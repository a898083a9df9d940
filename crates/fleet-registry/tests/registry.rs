//! The typed registry's promises, on every backend: scoped watches, one lease per machine,
//! nothing written while idle, fenced leadership, batched decisions, clear errors for records
//! it cannot read.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{put, Backend};
use fleet_registry::keys::RegistryKey;
use fleet_registry::kv::{KvStore, Op};
use fleet_registry::records::{JobRecord, MachineRecord, StateRecord};
use fleet_registry::registry::JobWrite;
use fleet_registry::EngineWrite;
use fleet_registry::{Changed, Registry, RegistryError, Scope, View};
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};

fn machine(id: &str) -> MachineId {
    MachineId::new(id).unwrap()
}

fn name(n: &str) -> UnitName {
    UnitName::new(n).unwrap()
}

fn unit(text: &str) -> UnitFile {
    UnitFile::parse(text).unwrap()
}

fn running() -> StateRecord {
    StateRecord {
        hash: None,
        load: "loaded".into(),
        active: "active".into(),
        sub: "running".into(),
        launched: true,
        ..StateRecord::default()
    }
}

async fn registry(b: &Backend) -> Registry {
    Registry::open(Arc::clone(&b.store)).await.unwrap()
}

/// The next change of a view, failing after a bound.
async fn changed(view: &mut View) -> Changed {
    tokio::time::timeout(Duration::from_secs(10), view.changed())
        .await
        .expect("a change within 10 s")
        .expect("no registry error")
}

/// Asserts that a view sees no change for a while.
async fn quiet(view: &mut View, what: &str) {
    let waited = tokio::time::timeout(Duration::from_millis(500), view.changed()).await;
    assert!(waited.is_err(), "{what}: woke with {waited:?}");
}

async fn revision(store: &dyn KvStore) -> i64 {
    store.range(&["version"]).await.unwrap().1
}

async fn jobs_are_created_once_and_routed_by_global(b: Backend) {
    let r = registry(&b).await;
    let web = unit("[Service]\nExecStart=/bin/web\n");
    let mon = unit("[Service]\nExecStart=/bin/mon\n[X-Fleet]\nGlobal=true\n");
    let (web_name, mon_name) = (name("web.service"), name("mon.service"));
    let created = r.create_job(&web_name, &web, JobState::Inactive).await;
    assert_eq!(created.unwrap(), JobWrite::Done);
    let again = r.create_job(&web_name, &mon, JobState::Launched).await;
    assert_eq!(again.unwrap(), JobWrite::Exists);
    let global = r.create_job(&mon_name, &mon, JobState::Launched).await;
    assert_eq!(global.unwrap(), JobWrite::Done);

    let all = r.snapshot(&Scope::All).await.unwrap();
    let record = |hash, desired| JobRecord { hash, desired };
    assert_eq!(
        all.jobs.get(&name("web.service")),
        Some(&record(web.hash(), JobState::Inactive))
    );
    assert_eq!(
        all.global.get(&name("mon.service")),
        Some(&record(mon.hash(), JobState::Launched))
    );
    assert_eq!(r.unit_file(&web.hash()).await.unwrap(), Some(web.clone()));

    let set = r
        .set_desired(&name("web.service"), JobState::Launched)
        .await;
    assert_eq!(set.unwrap(), JobWrite::Done);
    let (job, global) = r.job(&name("web.service")).await.unwrap().unwrap();
    assert_eq!((job.desired, global), (JobState::Launched, false));
    let missing = r
        .set_desired(&name("none.service"), JobState::Launched)
        .await;
    assert_eq!(missing.unwrap(), JobWrite::NotFound);

    assert_eq!(
        r.destroy_job(&name("mon.service")).await.unwrap(),
        JobWrite::Done
    );
    assert_eq!(r.job(&name("mon.service")).await.unwrap(), None);
    let gone = r.destroy_job(&name("mon.service")).await.unwrap();
    assert_eq!(gone, JobWrite::NotFound);
}

async fn an_agent_watch_wakes_only_for_its_machine(b: Backend) {
    let r = registry(&b).await;
    let mut m1 = r.view(Scope::Agent(machine("m1"))).await.unwrap();
    let mut m2 = r.view(Scope::Agent(machine("m2"))).await.unwrap();
    let leader = r
        .campaign(&machine("m1"), Duration::from_secs(30), "t")
        .await;
    let leader = leader.unwrap().expect("no other leader");
    let record = JobRecord {
        hash: unit("[Service]\nExecStart=/bin/a\n").hash(),
        desired: JobState::Launched,
    };
    let place = EngineWrite::place(&machine("m1"), &name("a.service"), &record);
    r.commit_decisions(&leader, vec![vec![place]])
        .await
        .unwrap();
    let key = RegistryKey::Schedule(machine("m1"), name("a.service"));
    assert_eq!(changed(&mut m1).await, Changed::Keys(vec![key]));
    let placed: Vec<_> = m1.snapshot().scheduled_on(&machine("m1")).collect();
    assert_eq!(placed, vec![(&name("a.service"), &record)]);
    quiet(&mut m2, "m2 after a unit was placed on m1").await;
    r.set_metadata(&machine("m1"), "disk", Some("ssd"))
        .await
        .unwrap();
    changed(&mut m1).await;
    quiet(&mut m2, "m2 after m1's metadata changed").await;
    assert_eq!(
        m1.snapshot().metadata[&machine("m1")]["disk"],
        "ssd".to_string()
    );
    // A global unit concerns every machine.
    let mon = unit("[Service]\nExecStart=/bin/mon\n[X-Fleet]\nGlobal=true\n");
    r.create_job(&name("mon.service"), &mon, JobState::Launched)
        .await
        .unwrap();
    let key = RegistryKey::Global(name("mon.service"));
    assert_eq!(changed(&mut m1).await, Changed::Keys(vec![key.clone()]));
    assert_eq!(changed(&mut m2).await, Changed::Keys(vec![key]));
}

async fn a_machine_lease_carries_presence_and_states(b: Backend) {
    let r = registry(&b).await;
    let record = MachineRecord {
        public_ip: "10.0.0.1".into(),
        ..MachineRecord::default()
    };
    let ttl = Duration::from_secs(1);
    let id = machine("m1");
    let m1 = r.register_machine(&id, &record, ttl, None).await.unwrap();
    r.set_state(&m1, &name("a.service"), Some(&running()))
        .await
        .unwrap();
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert_eq!(all.machines[&machine("m1")], record);
    assert_eq!(all.states[&machine("m1")][&name("a.service")], running());

    // A second fleetd with the same ID is refused while the first lives. The embedded store
    // has one writer, this process: a live lease in it is its own (an earlier run whose lease
    // file was lost), adopted.
    let twin = r.register_machine(&machine("m1"), &record, ttl, None).await;
    match b.store.exclusive() {
        true => assert_eq!(twin.unwrap().lease, m1.lease),
        false => assert!(
            matches!(&twin, Err(RegistryError::Conflict(why)) if why.contains("m1")),
            "{twin:?}"
        ),
    }
    // A restarted fleetd adopts its live lease: nothing vanishes.
    let restarted = r.register_machine(&id, &record, ttl, Some(m1.lease)).await;
    assert_eq!(restarted.unwrap().lease, m1.lease);
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert!(all.states.contains_key(&machine("m1")));

    // Without keep-alives both vanish, in one revision.
    let mut view = r.view(Scope::All).await.unwrap();
    let mut keys = BTreeSet::new();
    // One revision, but one batch per watched prefix: at most two wake-ups.
    for _ in 0..2 {
        match changed(&mut view).await {
            Changed::Keys(changed) => keys.extend(changed),
            Changed::Everything => panic!("no re-list expected"),
        }
        if keys.len() == 2 {
            break;
        }
    }
    let expected = BTreeSet::from([
        RegistryKey::Machine(machine("m1")),
        RegistryKey::State(machine("m1"), name("a.service")),
    ]);
    assert_eq!(keys, expected);
    assert!(view.snapshot().machines.is_empty() && view.snapshot().states.is_empty());
    assert!(!r.keep_alive(&m1).await.unwrap());
    // An expired lease cannot be adopted: a new one is granted.
    let again = r.register_machine(&id, &record, ttl, Some(m1.lease)).await;
    assert_ne!(again.unwrap().lease, m1.lease);
}

async fn a_lease_of_another_ttl_is_handed_over_not_adopted(b: Backend) {
    let r = registry(&b).await;
    let record = MachineRecord::default();
    let id = machine("m1");
    let old = r
        .register_machine(&id, &record, Duration::from_secs(30), None)
        .await
        .unwrap();
    r.set_state(&old, &name("a.service"), Some(&running()))
        .await
        .unwrap();
    // fleetd restarted with agent_ttl=5s: a new lease of 5 s, the machine never absent.
    let new = r
        .register_machine(&id, &record, Duration::from_secs(5), Some(old.lease))
        .await
        .unwrap();
    assert_ne!(new.lease, old.lease);
    assert_eq!(new.ttl, Duration::from_secs(5));
    let left = b.store.lease_ttl(new.lease).await.unwrap().unwrap();
    assert!(left <= Duration::from_secs(5), "{left:?}");
    assert_eq!(
        b.store.get("machines/m1").await.unwrap().unwrap().lease,
        new.lease
    );
    // The old lease is over, with the states it carried (the agent publishes them anew).
    assert_eq!(b.store.lease_ttl(old.lease).await.unwrap(), None);
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert!(all.machines.contains_key(&id));
    assert!(!all.states.contains_key(&id));
    // The same TTL again: adopted.
    let same = r
        .register_machine(&id, &record, Duration::from_secs(5), Some(new.lease))
        .await
        .unwrap();
    assert_eq!(same.lease, new.lease);
}

async fn an_idle_machine_writes_nothing(b: Backend) {
    let r = registry(&b).await;
    let record = MachineRecord::default();
    let ttl = Duration::from_secs(2);
    let id = machine("m1");
    let m1 = r.register_machine(&id, &record, ttl, None).await.unwrap();
    for i in 0..100 {
        let state = running();
        let unit = name(&format!("u{i}.service"));
        r.set_state(&m1, &unit, Some(&state)).await.unwrap();
    }
    let before = revision(&*b.store).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(r.keep_alive(&m1).await.unwrap());
    }
    assert_eq!(revision(&*b.store).await, before, "idle for 3 s: no writes");
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert_eq!(all.states[&machine("m1")].len(), 100);
}

async fn leadership_is_exclusive_and_fences_writes(b: Backend) {
    let r = registry(&b).await;
    let ttl = Duration::from_secs(30);
    let first = r.campaign(&machine("m1"), ttl, "t").await.unwrap().unwrap();
    assert_eq!(r.campaign(&machine("m2"), ttl, "t").await.unwrap(), None);
    let leader = r.snapshot(&Scope::Engine).await.unwrap().leader.unwrap();
    assert_eq!(leader.machine, machine("m1"));
    r.resign(&first).await.unwrap();
    let second = r.campaign(&machine("m2"), ttl, "t").await.unwrap().unwrap();
    assert!(!r.keep_leading(&first).await.unwrap());
    assert!(r.keep_leading(&second).await.unwrap());
    let record = JobRecord {
        hash: unit("[Service]\nExecStart=/bin/a\n").hash(),
        desired: JobState::Launched,
    };
    let place = || {
        vec![EngineWrite::place(
            &machine("m1"),
            &name("a.service"),
            &record,
        )]
    };
    let stale = r.commit_decisions(&first, vec![place()]).await.unwrap();
    assert_eq!(stale, None, "a deposed leader cannot write");
    assert!(r.snapshot(&Scope::All).await.unwrap().schedule.is_empty());
    let fresh = r.commit_decisions(&second, vec![place()]).await.unwrap();
    assert!(fresh.is_some());
}

async fn decisions_are_batched(b: Backend) {
    let r = registry(&b).await;
    let ttl = Duration::from_secs(30);
    let leader = r.campaign(&machine("m1"), ttl, "t").await.unwrap().unwrap();
    let record = JobRecord {
        hash: unit("[Service]\nExecStart=/bin/a\n").hash(),
        desired: JobState::Launched,
    };
    // 300 placements, each clearing an old reason: 600 operations in groups of two.
    let groups: Vec<Vec<EngineWrite>> = (0..300)
        .map(|i| {
            let n = name(&format!("u{i}.service"));
            vec![
                EngineWrite::place(&machine("m1"), &n, &record),
                EngineWrite::placeable(&n),
            ]
        })
        .collect();
    let before = revision(&*b.store).await;
    let after = r.commit_decisions(&leader, groups).await.unwrap().unwrap();
    assert_eq!(after - before, 5, "600 operations in 5 transactions of 128");
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert_eq!(all.schedule[&machine("m1")].len(), 300);
}

async fn unit_files_no_job_refers_to_are_garbage_unless_submitted_again(b: Backend) {
    let r = registry(&b).await;
    let leader = r
        .campaign(&machine("m1"), Duration::from_secs(30), "t")
        .await
        .unwrap()
        .unwrap();
    let (kept, gone, again) = (
        unit("[Service]\nExecStart=/bin/kept\n"),
        unit("[Service]\nExecStart=/bin/gone\n"),
        unit("[Service]\nExecStart=/bin/again\n"),
    );
    let global = unit("[Service]\nExecStart=/bin/g\n[X-Fleet]\nGlobal=true\n");
    for (n, u) in [
        ("kept", &kept),
        ("gone", &gone),
        ("again", &again),
        ("g", &global),
    ] {
        let job = name(&format!("{n}.service"));
        let made = r.create_job(&job, u, JobState::Launched).await;
        assert_eq!(made.unwrap(), JobWrite::Done);
    }
    assert!(
        r.unit_file_garbage().await.unwrap().is_empty(),
        "all referred to"
    );
    r.destroy_job(&name("gone.service")).await.unwrap();
    r.destroy_job(&name("again.service")).await.unwrap();
    let garbage = r.unit_file_garbage().await.unwrap();
    let hashes: BTreeSet<_> = garbage.iter().map(|g| g.hash).collect();
    assert_eq!(hashes, BTreeSet::from([gone.hash(), again.hash()]));

    // Submitted again between the look and the collection: its file stays, though it
    // shares the transaction with one that could go (found again next time).
    r.create_job(&name("again.service"), &again, JobState::Launched)
        .await
        .unwrap();
    assert_eq!(r.collect_garbage(&leader, &garbage).await.unwrap(), 0);
    assert!(r.unit_file(&again.hash()).await.unwrap().is_some());
    let garbage = r.unit_file_garbage().await.unwrap();
    assert_eq!(
        garbage.iter().map(|g| g.hash).collect::<Vec<_>>(),
        [gone.hash()]
    );
    assert_eq!(r.collect_garbage(&leader, &garbage).await.unwrap(), 1);
    for (u, present) in [
        (&kept, true),
        (&gone, false),
        (&again, true),
        (&global, true),
    ] {
        let found = r.unit_file(&u.hash()).await.unwrap();
        assert_eq!(found.is_some(), present, "{}", u.hash());
    }

    // A deposed leader collects nothing; nor does anyone while a job cannot be read.
    r.destroy_job(&name("kept.service")).await.unwrap();
    let garbage = r.unit_file_garbage().await.unwrap();
    r.resign(&leader).await.unwrap();
    assert_eq!(r.collect_garbage(&leader, &garbage).await.unwrap(), 0);
    put(&*b.store, "jobs/bad.service", "{not json").await;
    assert!(r.unit_file_garbage().await.unwrap().is_empty());
}

async fn unreadable_records_are_named_not_fatal(b: Backend) {
    let r = registry(&b).await;
    put(&*b.store, "jobs/bad.service", "{not json").await;
    put(&*b.store, "jobs/no-dot", "{}").await;
    let hash = unit("[Service]\nExecStart=/bin/a\n").hash();
    put(
        &*b.store,
        &format!("units/{hash}"),
        "[Service]\nExecStart=/bin/b\n",
    )
    .await;
    let web = unit("[Service]\nExecStart=/bin/web\n");
    r.create_job(&name("web.service"), &web, JobState::Launched)
        .await
        .unwrap();
    let all = r.snapshot(&Scope::All).await.unwrap();
    assert_eq!(all.jobs.len(), 1, "the good job is there");
    let problems: Vec<&str> = all.problems.keys().map(String::as_str).collect();
    assert_eq!(problems, vec!["jobs/bad.service", "jobs/no-dot"]);
    assert!(all.problems["jobs/no-dot"].contains("must contain"));
    let err = r.unit_file(&hash).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::Corrupt { key, reason }
            if key == &format!("units/{hash}") && reason.starts_with("content hashes to")),
        "{err}"
    );
}

/// The engine decides only on a view whose revision shows its own last write; that holds only
/// if a revision seen means every change before it was seen, which is why its view is one
/// stream of the root, with other keys (agents' states) passed over without a wake-up.
async fn the_engine_view_is_in_revision_order(b: Backend) {
    let r = registry(&b).await;
    let mut engine = r.view(Scope::Engine).await.unwrap();
    let id = machine("m1");
    let record = MachineRecord::default();
    let ttl = Duration::from_secs(30);
    let m1 = r.register_machine(&id, &record, ttl, None).await.unwrap();
    changed(&mut engine).await;
    r.set_state(&m1, &name("a.service"), Some(&running()))
        .await
        .unwrap();
    quiet(&mut engine, "the engine after an agent's report").await;
    assert!(
        engine.snapshot().states.is_empty(),
        "states are not the engine's"
    );
    let leader = r.campaign(&id, ttl, "t").await.unwrap().expect("leader");
    changed(&mut engine).await;
    let job = JobRecord {
        hash: unit("[Service]\nExecStart=/bin/a\n").hash(),
        desired: JobState::Launched,
    };
    let mut last = 0;
    for i in 0..20 {
        let place = EngineWrite::place(&id, &name(&format!("u{i}.service")), &job);
        r.create_job(
            &name(&format!("j{i}.service")),
            &unit("[Service]\nExecStart=/bin/j\n"),
            JobState::Launched,
        )
        .await
        .unwrap();
        last = r
            .commit_decisions(&leader, vec![vec![place]])
            .await
            .unwrap()
            .unwrap();
    }
    while engine.snapshot().revision < last {
        changed(&mut engine).await;
    }
    let placed = engine.snapshot().scheduled_on(&id).count();
    assert_eq!(
        placed, 20,
        "a revision seen, every placement before it seen"
    );
}

/// A reflector catches up with every write (its own process's and the registry's revision),
/// hands out snapshots that do not change under their holder, and only follows scopes whose
/// revision means something.
async fn a_reflector_follows_every_write_and_keeps_held_snapshots(b: Backend) {
    let r = registry(&b).await;
    let within = Duration::from_secs(10);
    let reflector = r.reflect(Scope::All).await.unwrap();
    let a = name("a.service");
    r.create_job(
        &a,
        &unit("[Service]\nExecStart=/bin/true\n"),
        JobState::Inactive,
    )
    .await
    .unwrap();
    assert!(reflector.caught_up(r.written(), within).await);
    let held = reflector.snapshot();
    assert_eq!(held.jobs[&a].desired, JobState::Inactive);

    r.set_desired(&a, JobState::Launched).await.unwrap();
    assert!(reflector.caught_up(r.written(), within).await);
    assert_eq!(reflector.read(|s| s.jobs[&a].desired), JobState::Launched);
    assert_eq!(
        held.jobs[&a].desired,
        JobState::Inactive,
        "a held snapshot stays"
    );
    assert!(reflector.revision() > held.revision);

    // A unit file alone moves the registry's revision; the reflector gets there too.
    b.store
        .txn(
            vec![],
            vec![Op::put(RegistryKey::Unit(unit("").hash()).path(), "")],
        )
        .await
        .unwrap();
    let now = revision(&*b.store).await;
    assert!(reflector.caught_up(now, within).await, "revision {now}");
    assert!(reflector.caught_up(now, Duration::ZERO).await);
    // Nothing is written at a revision to come: the wait ends at its bound.
    let later = tokio::time::Instant::now();
    assert!(
        !reflector
            .caught_up(now + 1, Duration::from_millis(200))
            .await
    );
    assert!(later.elapsed() >= Duration::from_millis(200));

    r.destroy_job(&a).await.unwrap();
    assert!(reflector.caught_up(r.written(), within).await);
    assert!(reflector.read(|s| s.jobs.is_empty()));

    // An agent's scope (three prefixes, in no common order) is followed too: a change of it
    // wakes the reader, one outside it does not, and a refresh lists it afresh.
    let agent = r.reflect(Scope::Agent(machine("m1"))).await.unwrap();
    let mut changes = agent.changes();
    r.set_metadata(&machine("m2"), "disk", Some("ssd"))
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_millis(200), changes.next()).await;
    assert!(woken.is_err(), "woken by another machine's metadata");
    r.set_metadata(&machine("m1"), "disk", Some("ssd"))
        .await
        .unwrap();
    let woken = tokio::time::timeout(within, changes.next()).await;
    assert_eq!(woken, Ok(true));
    let disk =
        |s: &fleet_registry::Snapshot| s.machine_metadata(&machine("m1")).get("disk").cloned();
    assert_eq!(agent.read(disk), Some("ssd".to_owned()));
    let listed = agent.revision();
    r.set_metadata(&machine("m2"), "disk", None).await.unwrap();
    assert!(agent.refresh(within).await);
    assert!(
        agent.revision() > listed,
        "a refresh lists at the registry's revision"
    );
}

async fn another_format_is_refused(b: Backend) {
    put(&*b.store, "version", "2").await;
    let err = Registry::open(Arc::clone(&b.store)).await.err().unwrap();
    assert!(
        matches!(&err, RegistryError::Corrupt { key, .. } if key == "version"),
        "{err}"
    );
}

on_every_backend!(
    jobs_are_created_once_and_routed_by_global,
    an_agent_watch_wakes_only_for_its_machine,
    a_machine_lease_carries_presence_and_states,
    a_lease_of_another_ttl_is_handed_over_not_adopted,
    an_idle_machine_writes_nothing,
    leadership_is_exclusive_and_fences_writes,
    decisions_are_batched,
    unit_files_no_job_refers_to_are_garbage_unless_submitted_again,
    unreadable_records_are_named_not_fatal,
    another_format_is_refused,
    the_engine_view_is_in_revision_order,
    a_reflector_follows_every_write_and_keeps_held_snapshots,
);
