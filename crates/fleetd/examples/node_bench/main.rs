//! fleetd end to end on real processes (release build, native supervisor): issue 9's §2
//! submit-to-active latency on one node, on the embedded registry and on etcd, via the API and
//! via fleetctl, next to the floor of spawning the process directly; §3 failover with
//! agent_ttl 2 s on three machines; §4 what an idle machine with 100 units costs.
//!
//! Run with `scripts/bench node`. Options: `--starts N` (default 200), `--trials N` (default
//! 20), `--leader-trials N` (default 5), `--idle-seconds S` (default 30).

mod failover;
mod idle;
mod latency;
mod node;

use std::time::Duration;

use fleet_testkit::measure::{count_option, percentile, spawn_floor};
use fleet_testkit::{DataDir, EtcdServer};

use node::{Node, Setup};

fn main() {
    let starts = count_option("--starts", 200);
    let trials = count_option("--trials", 20);
    let leader_trials = count_option("--leader-trials", 5);
    let window = Duration::from_secs(count_option("--idle-seconds", 30) as u64);
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path();
    let etcd = EtcdServer::start_in(DataDir::Disk);
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();

    rows.push((
        "floor: spawn /bin/sleep directly".into(),
        spawn_floor(starts),
    ));
    for (registry, etcd) in [("embedded", None), ("etcd", Some(etcd.endpoint()))] {
        let node = Node::start(
            base,
            &format!("latency-{registry}"),
            &Setup {
                etcd,
                settings: Vec::new(),
                log: None,
            },
        );
        let api = latency::via_api(&node, "api", starts);
        latency::clean(&node, "api", starts);
        let fleetctl = latency::via_fleetctl(&node, &base.join("files"), "ctl", starts);
        latency::clean(&node, "ctl", starts);
        node.stop();
        rows.push((format!("{registry}: API PUT launched -> running"), api));
        rows.push((format!("{registry}: fleetctl start -> running"), fleetctl));
    }

    let mut cluster = failover::Cluster::start(base, &etcd, 3);
    let mut plain: Vec<Duration> = (0..trials).map(|t| cluster.trial(t, false)).collect();
    let mut leaders: Vec<Duration> = (0..leader_trials)
        .map(|t| cluster.trial(trials + t, true))
        .collect();
    cluster.stop();
    plain.sort();
    leaders.sort();
    let ttl = failover::AGENT_TTL;
    rows.push((format!("failover, agent_ttl {ttl}: a machine dies"), plain));
    rows.push((
        format!("failover, agent_ttl {ttl}: the engine leader's machine dies"),
        leaders,
    ));

    let idle_embedded = idle::measure(base, None, window);
    // A fresh etcd: leases the earlier phases left to expire would count as its proposals.
    drop(etcd);
    let idle_etcd = idle::measure(base, Some(&EtcdServer::start_in(DataDir::Disk)), window);

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    println!(
        "{:<width$} {:>5} {:>10} {:>10} {:>10}",
        "measure", "n", "p50", "p99", "max"
    );
    for (label, sorted) in &rows {
        if sorted.is_empty() {
            continue;
        }
        println!(
            "{label:<width$} {:>5} {:>10} {:>10} {:>10}",
            sorted.len(),
            millis(percentile(sorted, 0.5)),
            millis(percentile(sorted, 0.99)),
            millis(*sorted.last().expect("not empty")),
        );
    }
    println!();
    println!(
        "{:<width$} {:>9} {:>9} {:>7} {:>13} {:>13} {:>13}",
        "idle machine, 100 units",
        "RSS",
        "peak",
        "CPU",
        "writes/s/m",
        "proposals/s/m",
        "renewals/s/m"
    );
    for (label, idle) in [
        (format!("embedded registry, {window:?}"), idle_embedded),
        (format!("etcd, 2 machines, {window:?}"), idle_etcd),
    ] {
        println!(
            "{label:<width$} {:>6}KiB {:>6}KiB {:>6.2}% {:>13.3} {:>13.3} {:>13.3}",
            idle.rss_kib,
            idle.peak_kib,
            idle.cpu * 100.0,
            idle.writes,
            idle.proposals,
            idle.renewals
        );
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}
