//! §4: what an idle machine costs. A machine holds 100 running units (pinned to it with
//! `MachineID=`), another holds none; once everything runs and has settled, the holder's
//! fleetd is watched for a while: its resident memory and CPU time, and what etcd wrote and
//! renewed meanwhile, counted by etcd's own metrics.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_testkit::measure::{cpu_seconds, memory_kib};
use fleet_testkit::EtcdServer;

use crate::node::{until, Node, Setup};

pub const UNITS: usize = 100;

pub struct Idle {
    pub rss_kib: u64,
    pub peak_kib: u64,
    /// CPU time of the holder's fleetd over the window, as a share of one core.
    pub cpu: f64,
    /// Keys put or deleted in etcd per second, per machine.
    pub writes: f64,
    /// Raft proposals committed per second, per machine.
    pub proposals: f64,
    /// Lease renewals per second, per machine.
    pub renewals: f64,
}

/// Starts `UNITS` units on a fresh machine, lets them settle, and watches for `window`.
/// Without `etcd`, one machine on the embedded registry (etcd's columns are then zero).
pub fn measure(base: &Path, etcd: Option<&EtcdServer>, window: Duration) -> Idle {
    let setup = Setup {
        etcd: etcd.map(EtcdServer::endpoint),
        settings: Vec::new(),
        log: None,
    };
    let tag = match etcd {
        Some(_) => "idle-etcd",
        None => "idle-embedded",
    };
    let holder = Node::start(base, &format!("{tag}0"), &setup);
    let mut nodes = vec![];
    if etcd.is_some() {
        nodes.push(Node::start(base, &format!("{tag}1"), &setup));
    }
    let machine = holder.machine.clone();
    for i in 0..UNITS {
        holder.launch(&format!("{tag}{i}.service"), &[("MachineID", &machine)]);
    }
    until(Duration::from_secs(120), "idle units running", || {
        let states = holder.states();
        states.iter().filter(|(_, _, sub)| sub == "running").count() == UNITS
    });
    // Let the last reports, leases and compactions of the start pass.
    std::thread::sleep(Duration::from_secs(5));

    let metric = |name: &str| etcd.and_then(|e| e.metric(name)).unwrap_or(0.0);
    let counters = || {
        [
            metric("etcd_mvcc_put_total") + metric("etcd_mvcc_delete_total"),
            metric("etcd_server_proposals_committed_total"),
            metric("etcd_debugging_lease_renewed_total"),
        ]
    };
    let before = counters();
    let stat = std::path::PathBuf::from(format!("/proc/{}/stat", holder.pid()));
    let cpu_before = cpu_seconds(&stat).expect("fleetd lives");
    let started = Instant::now();
    std::thread::sleep(window);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(&stat).expect("fleetd lives");
    let after = counters();
    let memory = memory_kib(holder.pid()).expect("fleetd lives");

    let machines = (1 + nodes.len()) as f64;
    let rate = |i: usize| (after[i] - before[i]) / seconds / machines;
    let idle = Idle {
        rss_kib: memory.resident,
        peak_kib: memory.peak,
        cpu: (cpu_after - cpu_before) / seconds,
        writes: rate(0),
        proposals: rate(1),
        renewals: rate(2),
    };
    for i in 0..UNITS {
        holder.destroy(&format!("{tag}{i}.service"));
    }
    holder.stop();
    for node in nodes {
        node.stop();
    }
    idle
}
