//! fleet's functional scheduling scenarios (functional/scheduling_test.go and friends), on an
//! in-process cluster: one in-memory registry, and per machine an agent (with a unit manager
//! that runs nothing but records) and an engine, all campaigning as real fleetds do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::fake::FakeManager;
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{Registry, Scope, Snapshot};
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Node {
    manager: Arc<FakeManager>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct Cluster {
    registry: Registry,
    nodes: BTreeMap<String, Node>,
}

impl Cluster {
    async fn new(machines: &[(&str, &[(&str, &str)])]) -> Cluster {
        let registry = Registry::open(Arc::new(LocalStore::in_memory()))
            .await
            .unwrap();
        let mut cluster = Cluster {
            registry,
            nodes: BTreeMap::new(),
        };
        for (id, metadata) in machines {
            cluster.add(id, metadata);
        }
        cluster
    }

    fn add(&mut self, id: &str, metadata: &[(&str, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        let manager = Arc::new(FakeManager::default());
        let (stop, shutdown) = watch::channel(false);
        let machine = MachineId::new(id).unwrap();
        let engine = EngineConfig {
            machine: machine.clone(),
            lease_ttl: Duration::from_millis(600),
            resync: Duration::from_secs(2),
            version: "test".into(),
            machine_grace: Duration::from_secs(1),
            collect_unit_files: Duration::from_secs(3600),
            reschedule_failed_units: true,
        };
        let agent = AgentConfig {
            machine,
            record: MachineRecord {
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..MachineRecord::default()
            },
            ttl: Duration::from_secs(1),
            lease_file: dir.path().join("lease"),
            started_file: None,
            state_poll: Duration::from_millis(20),
            health: Default::default(),
            reschedule_failed_units: true,
            resync: Duration::from_secs(2),
            updates: None,
        };
        let (registry, manager_for_agent) = (self.registry.clone(), manager.clone());
        let tasks = vec![
            tokio::spawn(reconciler::run(
                self.registry.clone(),
                engine,
                shutdown.clone(),
            )),
            tokio::spawn(async move {
                let _ = agent::run(registry, manager_for_agent, agent, shutdown).await;
            }),
        ];
        self.nodes.insert(
            id.to_owned(),
            Node {
                manager,
                stop,
                tasks,
                _dir: dir,
            },
        );
    }

    /// The machine dies: its tasks stop without a word; its lease runs out.
    fn kill(&mut self, id: &str) {
        let node = self.nodes.remove(id).unwrap();
        for task in node.tasks {
            task.abort();
        }
        drop(node.stop);
    }

    async fn start(&self, name: &str, unit: &str) {
        let unit = UnitFile::parse(unit).unwrap();
        self.registry
            .create_job(&UnitName::new(name).unwrap(), &unit, JobState::Launched)
            .await
            .unwrap();
    }

    async fn destroy(&self, name: &str) {
        self.registry
            .destroy_job(&UnitName::new(name).unwrap())
            .await
            .unwrap();
    }

    /// Active units per machine, from the machines' own (fake) init systems.
    fn active(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .iter()
            .map(|(id, node)| (id.clone(), node.manager.active()))
            .collect()
    }

    /// Waits (bounded) until `done` holds for the active units, and a moment more to see it
    /// is stable.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<String, Vec<String>>) -> bool,
    ) -> BTreeMap<String, Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let active = self.active();
            if done(&active) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let again = self.active();
                assert!(done(&again), "{what}: did not hold: {again:?}");
                return again;
            }
            assert!(Instant::now() < deadline, "{what}: {active:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn snapshot(&self) -> Snapshot {
        self.registry.snapshot(&Scope::All).await.unwrap()
    }
}

fn unit(xfleet: &str) -> String {
    format!("[Service]\nExecStart=/bin/sleep 60\n[X-Fleet]\n{xfleet}")
}

fn total(active: &BTreeMap<String, Vec<String>>) -> usize {
    active.values().map(Vec::len).sum()
}

fn host_of<'a>(active: &'a BTreeMap<String, Vec<String>>, unit: &str) -> Option<&'a str> {
    active
        .iter()
        .find(|(_, units)| units.iter().any(|u| u == unit))
        .map(|(m, _)| m.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_put_one_unit_per_machine_and_explain_the_rest() {
    let cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[])]).await;
    for i in 0..5 {
        cluster
            .start(
                &format!("conflict.{i}.service"),
                &unit("Conflicts=conflict*"),
            )
            .await;
    }
    let active = cluster
        .until("3 active", |a| {
            total(a) == 3 && a.values().all(|u| u.len() == 1)
        })
        .await;
    assert_eq!(total(&active), 3);
    let snapshot = cluster.snapshot().await;
    assert_eq!(
        snapshot.reasons.len(),
        2,
        "{:#?} {:#?}",
        snapshot.reasons,
        snapshot.schedule
    );
    for reason in snapshot.reasons.values() {
        assert!(
            reason.reason.starts_with("conflicts with conflict."),
            "{reason:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_conflicts_values() {
    let cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[])]).await;
    cluster
        .start("a.service", &unit("Conflicts=b.service c.service"))
        .await;
    cluster
        .start("b.service", &unit("Conflicts=a.service c.service"))
        .await;
    cluster
        .start("c.service", &unit("Conflicts=a.service b.service"))
        .await;
    cluster
        .until("3 on 3 machines", |a| {
            total(a) == 3 && a.values().all(|u| u.len() == 1)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_conflict_blocks_until_the_other_is_destroyed() {
    let cluster = Cluster::new(&[("m0", &[])]).await;
    cluster
        .start(
            "conflicts-with-hello.service",
            &unit("Conflicts=hello.service"),
        )
        .await;
    cluster.until("first runs", |a| total(a) == 1).await;
    cluster.start("hello.service", &unit("")).await;
    let active = cluster.until("hello blocked", |a| total(a) == 1).await;
    assert!(host_of(&active, "hello.service").is_none());
    cluster.destroy("conflicts-with-hello.service").await;
    cluster
        .until("hello runs", |a| {
            host_of(a, "hello.service").is_some() && total(a) == 1
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_of_pairs_stay_together_and_move_together() {
    let mut cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[])]).await;
    for i in 0..3 {
        cluster
            .start(&format!("ping.{i}.service"), &unit("Conflicts=ping.*"))
            .await;
        cluster
            .start(
                &format!("pong.{i}.service"),
                &unit(&format!("MachineOf=ping.{i}.service")),
            )
            .await;
    }
    let together = |a: &BTreeMap<String, Vec<String>>| {
        (0..3).all(|i| {
            let ping = host_of(a, &format!("ping.{i}.service"));
            ping.is_some() && ping == host_of(a, &format!("pong.{i}.service"))
        })
    };
    let before = cluster
        .until("pairs together", |a| total(a) == 6 && together(a))
        .await;
    let victim = host_of(&before, "ping.0.service").unwrap().to_owned();
    cluster.kill(&victim);
    // Two machines left, three mutually conflicting pings: one pair cannot run.
    let after = cluster
        .until("pairs still together", |a| {
            total(a) == 4 && a.values().all(|u| u.len() == 2)
        })
        .await;
    for units in after.values() {
        let ping = units.iter().find(|u| u.starts_with("ping")).unwrap();
        let pong = ping.replace("ping", "pong");
        assert!(units.contains(&pong), "{after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_kicks_the_replaced_unit_to_another_machine() {
    let cluster = Cluster::new(&[("m0", &[]), ("m1", &[])]).await;
    cluster
        .start("replace.0.service", &unit("MachineID=m0"))
        .await;
    cluster
        .start("replace.1.service", &unit("MachineID=m1"))
        .await;
    cluster
        .start("replace.2.service", &unit("MachineOf=replace.1.service"))
        .await;
    cluster.until("three run", |a| total(a) == 3).await;
    // replace.0 is pinned to m0, so to be moved it must not be: restart it unpinned first.
    cluster.destroy("replace.0.service").await;
    cluster.start("replace.0.service", &unit("")).await;
    let placed = cluster
        .until("replace.0 back", |a| {
            host_of(a, "replace.0.service").is_some() && total(a) == 3
        })
        .await;
    let old_host = host_of(&placed, "replace.0.service").unwrap().to_owned();
    cluster
        .start("replace-kick0.service", &unit("Replaces=replace.0.service"))
        .await;
    let after = cluster
        .until("kicked", |a| {
            total(a) == 4 && host_of(a, "replace-kick0.service").is_some()
        })
        .await;
    assert_eq!(
        host_of(&after, "replace-kick0.service"),
        Some(old_host.as_str())
    );
    assert_ne!(
        host_of(&after, "replace.0.service"),
        Some(old_host.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_id_from_the_instance_name_pins_units() {
    let cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[])]).await;
    for machine in ["m0", "m2"] {
        cluster
            .start(&format!("pin@{machine}.service"), &unit("MachineID=%i"))
            .await;
    }
    let active = cluster.until("pinned", |a| total(a) == 2).await;
    assert_eq!(host_of(&active, "pin@m0.service"), Some("m0"));
    assert_eq!(host_of(&active, "pin@m2.service"), Some("m2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_from_the_instance_name_and_one_that_matches_nothing() {
    let cluster = Cluster::new(&[
        ("m0", &[("hostname", "smoke0")]),
        ("m1", &[("hostname", "smoke1")]),
    ])
    .await;
    cluster
        .start(
            "metadata@smoke1.service",
            &unit("MachineMetadata=hostname=%i"),
        )
        .await;
    cluster
        .start(
            "metadata@invalid.service",
            &unit("MachineMetadata=hostname=%i"),
        )
        .await;
    let active = cluster.until("one placed", |a| total(a) == 1).await;
    assert_eq!(host_of(&active, "metadata@smoke1.service"), Some("m1"));
    let snapshot = cluster.snapshot().await;
    let invalid = UnitName::new("metadata@invalid.service").unwrap();
    assert_eq!(
        snapshot.reasons[&invalid].reason,
        "no machine has hostname=invalid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_units_run_everywhere_and_the_second_of_two_conflicting_ones_nowhere() {
    let cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[])]).await;
    cluster.start("a.service", &unit("")).await;
    cluster.start("b.service", &unit("")).await;
    cluster.start("global.service", &unit("Global=true")).await;
    cluster
        .until("global everywhere", |a| {
            a.values().all(|u| u.iter().any(|n| n == "global.service")) && total(a) == 5
        })
        .await;
    cluster
        .start(
            "conflict-global.0.service",
            &unit("Global=true\nConflicts=conflict-global.*"),
        )
        .await;
    cluster
        .start(
            "conflict-global.1.service",
            &unit("Global=true\nConflicts=conflict-global.*"),
        )
        .await;
    let active = cluster
        .until("first conflicting global everywhere", |a| {
            a.values()
                .all(|u| u.iter().any(|n| n == "conflict-global.0.service"))
        })
        .await;
    assert!(
        active
            .values()
            .all(|u| !u.iter().any(|n| n == "conflict-global.1.service")),
        "{active:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_moves_only_its_own_unit() {
    let mut cluster = Cluster::new(&[("m0", &[]), ("m1", &[]), ("m2", &[]), ("m3", &[])]).await;
    for i in 0..3 {
        cluster
            .start(
                &format!("conflict.{i}.service"),
                &unit("Conflicts=conflict*"),
            )
            .await;
    }
    let before = cluster.until("3 placed", |a| total(a) == 3).await;
    let (victim, victim_units) = before
        .iter()
        .find(|(_, u)| !u.is_empty())
        .map(|(m, u)| (m.clone(), u.clone()))
        .unwrap();
    cluster.kill(&victim);
    let after = cluster.until("moved", |a| total(a) == 3).await;
    for (machine, units) in &before {
        if *machine != victim && !units.is_empty() {
            assert_eq!(after.get(machine), Some(units), "{machine} kept its unit");
        }
    }
    let moved = &victim_units[0];
    assert!(host_of(&after, moved).is_some_and(|m| m != victim));
}
