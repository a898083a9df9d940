//! §3: failover. Three machines on one etcd (agent_ttl 2 s). Each trial launches four units,
//! kills a machine that runs some of them (fleetd and its units' processes, SIGKILL), and
//! times until every one of its units runs on another machine. A fresh machine then takes the
//! dead one's place for the next trial. The machine killed is never the engine leader's, or
//! (in the leader trials) always it: then a new engine must be elected first.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_testkit::EtcdServer;

use crate::node::{until, Node, Setup};

pub const AGENT_TTL: &str = "2s";
const UNITS_PER_TRIAL: usize = 4;

pub struct Cluster<'a> {
    base: &'a Path,
    etcd: &'a EtcdServer,
    setup: Setup,
    nodes: Vec<Node>,
    started: usize,
}

impl<'a> Cluster<'a> {
    pub fn start(base: &'a Path, etcd: &'a EtcdServer, machines: usize) -> Cluster<'a> {
        let setup = Setup {
            etcd: Some(etcd.endpoint()),
            settings: vec![("AGENT_TTL", AGENT_TTL.to_owned())],
            log: None,
        };
        let mut cluster = Cluster {
            base,
            etcd,
            setup,
            nodes: Vec::new(),
            started: 0,
        };
        for _ in 0..machines {
            cluster.add();
        }
        cluster.settled();
        cluster
    }

    fn add(&mut self) {
        let machine = format!("fo{}", self.started);
        self.started += 1;
        self.nodes
            .push(Node::start(self.base, &machine, &self.setup));
    }

    /// Waits until every live machine is in the registry and one of them leads.
    fn settled(&self) {
        let count = self.nodes.len();
        until(Duration::from_secs(30), "machines registered", || {
            let machines = self.nodes[0].get("/fleet/v1/machines");
            machines["machines"].as_array().map_or(0, Vec::len) == count
                && leader(self.etcd).is_some()
        });
    }

    /// One trial; the time from the machine's death until its units run elsewhere.
    pub fn trial(&mut self, round: usize, kill_leader: bool) -> Duration {
        let names: Vec<String> = (0..UNITS_PER_TRIAL)
            .map(|i| format!("failover{round}-{i}.service"))
            .collect();
        for name in &names {
            self.nodes[0].launch(name, &[]);
        }
        let mut hosts = BTreeMap::new();
        until(Duration::from_secs(30), "trial units running", || {
            hosts = running_on(&self.nodes[0], &names);
            hosts.len() == names.len()
        });
        let leader = leader(self.etcd).expect("a leader");
        let mut load: BTreeMap<&String, usize> = BTreeMap::new();
        for machine in hosts.values() {
            *load.entry(machine).or_default() += 1;
        }
        let victim = match kill_leader {
            true => leader.clone(),
            false => load
                .iter()
                .filter(|(machine, _)| ***machine != leader)
                .max_by_key(|(_, count)| **count)
                .map(|(machine, _)| (*machine).clone())
                .unwrap_or_else(|| panic!("every trial unit is on the leader {leader}")),
        };
        let moving: Vec<&String> = names.iter().filter(|n| hosts[*n] == victim).collect();
        let at = self
            .nodes
            .iter()
            .position(|n| n.machine == victim)
            .expect("the victim is ours");
        let dead = self.nodes.remove(at);
        let killed = Instant::now();
        dead.die();
        let survivor = &self.nodes[0];
        until(Duration::from_secs(60), "units moved", || {
            let now = running_on(survivor, &names);
            moving
                .iter()
                .all(|name| now.get(*name).is_some_and(|m| *m != victim))
        });
        let failover = killed.elapsed();

        for name in &names {
            survivor.destroy(name);
        }
        self.add();
        self.settled();
        until(Duration::from_secs(60), "trial units gone", || {
            running_on(&self.nodes[0], &names).is_empty()
        });
        failover
    }

    pub fn stop(self) {
        for node in self.nodes {
            node.stop();
        }
    }
}

/// Which of `names` run, and where.
fn running_on(node: &Node, names: &[String]) -> BTreeMap<String, String> {
    node.states()
        .into_iter()
        .filter(|(name, _, sub)| sub == "running" && names.contains(name))
        .map(|(name, machine, _)| (name, machine))
        .collect()
}

/// The machine ID of the engine leader, read from etcd (the API does not name the leader).
pub fn leader(etcd: &EtcdServer) -> Option<String> {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            "--print-value-only",
            "/bench/leader",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    value["machine"].as_str().map(str::to_owned)
}
