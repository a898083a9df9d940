//! The cluster acceptance suite: real fleetds on hosts in network namespaces, a real etcd on
//! hosts of its own, fleetctl driving them, and the invariant checker after every step (see
//! `cluster/mod.rs`). Each scenario prints what it measured. Needs root.

mod cluster;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::{unit, Cluster, AGENT_TTL};

fn units(names: &[&str], x_fleet: &str) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.to_string(), unit(x_fleet)))
        .collect()
}

/// For `until_valid`: every unit of `names` runs, each on one machine.
fn each_once<'a>(
    names: &'a [&'a str],
) -> impl Fn(&BTreeMap<String, Vec<String>>) -> Result<(), String> + 'a {
    move |running| match names
        .iter()
        .all(|n| running.get(*n).is_some_and(|m| m.len() == 1))
    {
        true => Ok(()),
        false => Err(format!("not each of {names:?} once")),
    }
}

/// What runs on each machine, as `running` says: machine → units.
fn by_machine(running: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = running
        .iter()
        .flat_map(|(unit, machines)| machines.iter().map(move |m| (m.clone(), unit.clone())))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn constraints_hold_on_three_hosts() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    let mut all = units(
        &["web@1.service", "web@2.service", "web@3.service"],
        "Conflicts=web@*.service",
    );
    all.extend(units(&["side@1.service"], "MachineOf=web@1.service"));
    all.extend(units(&["mon.service"], "Global=true"));
    all.extend(units(&["pinned.service"], "MachineMetadata=host=h2"));
    all.extend(units(&["plain.service"], ""));
    cluster.start_units(0, &all);
    let within = Duration::from_secs(30);
    let machines = cluster.machines();
    let running = cluster.until_valid("every unit placed", within, |running| {
        let placed = |unit: &str, count: usize| match running.get(unit) {
            Some(on) if on.len() == count => Ok(()),
            other => Err(format!("{unit} on {other:?}")),
        };
        for web in ["web@1.service", "web@2.service", "web@3.service"] {
            placed(web, 1)?;
        }
        placed("side@1.service", 1)?;
        placed("mon.service", 3)?;
        placed("pinned.service", 1)?;
        placed("plain.service", 1)
    });
    let webs: std::collections::BTreeSet<&String> =
        ["web@1.service", "web@2.service", "web@3.service"]
            .iter()
            .map(|w| &running[*w][0])
            .collect();
    assert_eq!(
        webs.len(),
        3,
        "conflicting units share a machine: {running:?}"
    );
    assert_eq!(running["side@1.service"], running["web@1.service"]);
    assert_eq!(running["pinned.service"], vec![machines[2].clone()]);

    // What fleet reports agrees with what runs (states are published a moment after start).
    cluster.eventually("list-units as it runs", within, || {
        let listed = cluster.fleetctl_ok(
            1,
            &[
                "list-units",
                "--no-legend",
                "--full",
                "--fields=unit,machine,active",
            ],
        );
        for (machine, unit) in by_machine(&running) {
            let shown = listed.lines().any(|l| {
                l.starts_with(&format!("{unit}\t")) && l.contains(&machine) && l.contains("active")
            });
            if !shown {
                return Err(format!("{unit} on {machine} not listed:\n{listed}"));
            }
        }
        Ok(())
    });

    cluster.fleetctl_ok(0, &["destroy", "pinned.service"]);
    cluster.until_valid("pinned.service gone", within, |running| {
        match running.contains_key("pinned.service") {
            true => Err("still runs".into()),
            false => Ok(()),
        }
    });
}

/// How long each unit has run on two machines at once, from polls of the hosts' processes.
#[derive(Default)]
struct Duplicates {
    since: BTreeMap<String, Instant>,
    longest: BTreeMap<String, Duration>,
}

impl Duplicates {
    fn observe(&mut self, running: &BTreeMap<String, Vec<String>>) {
        let now = Instant::now();
        for (unit, machines) in running {
            if machines.len() > 1 {
                let since = *self.since.entry(unit.clone()).or_insert(now);
                let longest = self.longest.entry(unit.clone()).or_default();
                *longest = (*longest).max(now - since);
            } else {
                self.since.remove(unit);
            }
        }
    }

    /// The longest time any of `units` ran twice; `None` if none ever did.
    fn longest_of(&self, units: &[String]) -> Option<Duration> {
        units
            .iter()
            .filter_map(|u| self.longest.get(u))
            .max()
            .copied()
    }
}

/// A host cut off from the others and from etcd. Its units are placed elsewhere once its lease
/// expires. Those that keep running through a partition (fleet's behaviour) run twice until
/// the link comes back; those with `StopWhenDisconnected=true` are stopped on the cut-off host
/// when its lease has surely run out, so they never run twice; one that cannot move (pinned to
/// the host) is stopped too, and starts there again after the partition.
#[test]
fn a_host_cut_off_loses_its_units_and_stops_them_when_back() {
    let mut cluster = Cluster::start(3, 1, |_| String::new());
    let victim = 2;
    let kept: Vec<String> = (0..6).map(|i| format!("job{i}.service")).collect();
    let guarded: Vec<String> = (0..6).map(|i| format!("guard{i}.service")).collect();
    let pinned = "pinned-guard.service".to_owned();
    let mut all: Vec<(String, String)> = kept.iter().map(|n| (n.clone(), unit(""))).collect();
    all.extend(
        guarded
            .iter()
            .map(|n| (n.clone(), unit("StopWhenDisconnected=true"))),
    );
    all.push((
        pinned.clone(),
        unit(&format!(
            "StopWhenDisconnected=true\nMachineMetadata=host=h{victim}"
        )),
    ));
    cluster.start_units(0, &all);
    let every: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let within = Duration::from_secs(30);
    let before = cluster.until_valid("every unit once", within, each_once(&every));
    let machines = cluster.machines();
    let on_victim = |units: &[String]| -> Vec<String> {
        units
            .iter()
            .filter(|u| before[*u][0] == machines[victim])
            .cloned()
            .collect()
    };
    let (kept_moved, guarded_moved) = (on_victim(&kept), on_victim(&guarded));
    assert!(
        !kept_moved.is_empty() && !guarded_moved.is_empty(),
        "the cut-off host must hold units of both kinds: {before:?}"
    );
    let mut moved = kept_moved.clone();
    moved.extend(guarded_moved.iter().cloned());

    let cut = Instant::now();
    cluster.network.set_link(victim, false).unwrap();
    let mut duplicates = Duplicates::default();
    let mut guards_stopped_after = None;
    let failover = cluster.eventually("the cut-off host's units elsewhere", within, || {
        let running = cluster.running();
        duplicates.observe(&running);
        let on_victim = |u: &String| {
            running
                .get(u)
                .is_some_and(|m| m.contains(&machines[victim]))
        };
        if guards_stopped_after.is_none()
            && !guarded_moved.iter().any(on_victim)
            && !on_victim(&pinned)
        {
            guards_stopped_after = Some(cut.elapsed());
        }
        let elsewhere = moved.iter().all(|u| {
            running
                .get(u)
                .is_some_and(|m| m.iter().any(|machine| machine != &machines[victim]))
        });
        match elsewhere && guards_stopped_after.is_some() {
            true => Ok(cut.elapsed()),
            false => Err(format!("running: {running:?}")),
        }
    });
    // Connectivity loss keeps the other units running: the cut-off host still runs its
    // copies, and the invariant checker sees each of them twice.
    let running = cluster.running();
    duplicates.observe(&running);
    assert!(
        kept_moved
            .iter()
            .all(|u| running[u].contains(&machines[victim])),
        "the cut-off host stopped units that keep running: {running:?}"
    );
    assert!(!running.contains_key(&pinned), "{running:?}");
    let seen = cluster
        .violations_seen_by(&cluster.client_of((victim + 1) % 3))
        .unwrap();
    for unit in &kept_moved {
        assert!(
            seen.iter()
                .any(|v| v.starts_with(&format!("{unit} is on ["))),
            "the checker missed the second copy of {unit}: {seen:?}"
        );
    }
    let heal = Instant::now();
    cluster.network.set_link(victim, true).unwrap();
    let stale_stopped = cluster.eventually("stale copies stopped", within, || {
        let running = cluster.running();
        duplicates.observe(&running);
        match running.values().all(|m| m.len() == 1) {
            true => Ok(heal.elapsed()),
            false => Err(format!("running: {running:?}")),
        }
    });
    let after = cluster.until_valid("every unit once", within, each_once(&every));
    assert_eq!(after[&pinned], vec![machines[victim].clone()]);
    let kept_window = duplicates.longest_of(&kept_moved);
    let guarded_window = duplicates.longest_of(&guarded_moved);
    println!(
        "partition of a host with {} units (agent_ttl {AGENT_TTL:?}): units running elsewhere \
         {failover:?} after the cut; StopWhenDisconnected units stopped there \
         {guards_stopped_after:?} after the cut, and ran twice for {guarded_window:?}; other \
         units ran twice for {kept_window:?} (the partition lasted {:?}); stale copies stopped \
         {stale_stopped:?} after the link came back",
        moved.len(),
        heal.duration_since(cut)
    );
    assert!(
        failover < AGENT_TTL + Duration::from_secs(5),
        "failover took {failover:?}"
    );
    assert_eq!(guarded_window, None, "StopWhenDisconnected units ran twice");
    assert!(
        stale_stopped < Duration::from_secs(10),
        "stale copies stopped after {stale_stopped:?}"
    );
    cluster.signal_fleetd(victim, "-TERM");
}

#[test]
fn kill_9_of_the_engine_leader() {
    let mut cluster = Cluster::start(3, 1, |_| String::new());
    let (names, _) = six_running(&cluster, "task");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let within = Duration::from_secs(30);
    let leader = cluster.leader().expect("a leader");
    let killed = Instant::now();
    cluster.signal_fleetd(leader, "-KILL");
    let takeover = cluster.eventually("another leader", within, || match cluster.leader() {
        Some(now) if now != leader => Ok(killed.elapsed()),
        other => Err(format!("leader {other:?}")),
    });
    // The dead machine's units are placed again, once each: the schedule never names two
    // machines for a unit, and a new unit is placed by the new leader.
    let machines = cluster.machines();
    cluster.start_units((leader + 1) % 3, &units(&["after.service"], ""));
    cluster.eventually("units placed on live machines", within, || {
        let units = cluster.client().units().map_err(|e| e.to_string())?;
        let misplaced: Vec<String> = units
            .iter()
            .filter(|u| u.machine_id.is_empty() || u.machine_id == machines[leader])
            .map(|u| format!("{} on {:?}", u.name, u.machine_id))
            .collect();
        match misplaced.is_empty() && units.len() == 7 {
            true => Ok(()),
            false => Err(format!("{misplaced:?}")),
        }
    });
    // Its fleetd back: the copies it left running are stopped, everything runs once.
    cluster.start_fleetd(leader);
    let mut every = names.clone();
    every.push("after.service");
    cluster.until_valid("every unit once", within, each_once(&every));
    println!("kill -9 of the engine leader: another leader after {takeover:?}");
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
}

/// Six plain units (`<prefix>0.service`...) started through host 0 and running once each:
/// their names, and unit → the machine it runs on.
fn six_running(cluster: &Cluster, prefix: &str) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let names: Vec<String> = (0..6).map(|i| format!("{prefix}{i}.service")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    cluster.start_units(0, &units(&refs, ""));
    let running = cluster.until_valid(
        "six units running",
        Duration::from_secs(30),
        each_once(&refs),
    );
    (names, running)
}

/// Waits `quiet` for anything to happen, then asserts that the unit processes are those of
/// `before`: none stopped, restarted or started elsewhere.
fn nothing_restarted(cluster: &Cluster, before: &BTreeMap<(String, String), u32>, quiet: Duration) {
    std::thread::sleep(quiet);
    let after = cluster.unit_processes();
    assert_eq!(
        &after,
        before,
        "units were restarted or moved\n{}",
        cluster.logs()
    );
    assert_eq!(cluster.violations().unwrap(), Vec::<String>::new());
}

/// Leases are renewed every eighth of their TTL, each renewal bounded by as much, over a fresh
/// connection after one goes unanswered: an outage of up to 3/4 of the TTL is ridden out.
#[test]
fn an_etcd_outage_shorter_than_agent_ttl_restarts_nothing() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    six_running(&cluster, "calm");
    let before = cluster.unit_processes();
    // etcd's host (the last) cut off for half the agent TTL.
    let etcd_host = 3;
    cluster.network.set_link(etcd_host, false).unwrap();
    std::thread::sleep(AGENT_TTL / 2);
    cluster.network.set_link(etcd_host, true).unwrap();
    nothing_restarted(&cluster, &before, AGENT_TTL * 3);
}

#[test]
fn fleetd_killed_and_restarted_within_agent_ttl_restarts_nothing() {
    let mut cluster = Cluster::start(3, 1, |_| String::new());
    six_running(&cluster, "steady");
    let before = cluster.unit_processes();
    for host in 0..3 {
        cluster.signal_fleetd(host, "-KILL");
        cluster.start_fleetd(host);
    }
    nothing_restarted(&cluster, &before, AGENT_TTL * 3);
}

#[test]
fn one_of_three_etcd_members_killed_and_restarted() {
    let mut cluster = Cluster::start(3, 3, |_| String::new());
    let (mut every, _) = six_running(&cluster, "kept");
    let before = cluster.unit_processes();
    let leader = cluster.etcd.leader().expect("an etcd leader");
    cluster.etcd.kill(leader);
    // fleetctl works on (its requests go to fleetd, whose etcd client moves to a live
    // member): no error beyond one retry.
    let started = Instant::now();
    let list = || cluster.fleetctl(0, &["list-units", "--no-legend"]);
    let (mut code, mut listed, mut err) = list();
    let retried = code != 0;
    if retried {
        (code, listed, err) = list();
    }
    assert_eq!(code, 0, "fleetctl failed twice with a member down: {err}");
    let answered = started.elapsed();
    assert_eq!(listed.lines().count(), 6, "{listed}");
    cluster.start_units(1, &units(&["during.service"], ""));
    cluster.etcd.restart(leader);
    every.push("during.service".into());
    let every: Vec<&str> = every.iter().map(String::as_str).collect();
    cluster.until_valid(
        "every unit once",
        Duration::from_secs(30),
        each_once(&every),
    );
    let after = cluster.unit_processes();
    for (key, pid) in &before {
        assert_eq!(after.get(key), Some(pid), "{key:?} restarted");
    }
    println!(
        "etcd leader member killed: fleetctl list-units answered after {answered:?} \
         (retried: {retried})"
    );
}

/// 200 units of every kind on five hosts; then a host dies. Every unit it ran that may run
/// elsewhere is placed again, and every constraint holds throughout (the checker runs after
/// each step).
#[test]
fn two_hundred_units_on_five_hosts_and_a_host_removed() {
    // Hosts 0-2 are in zone a, 3-4 in zone b.
    let mut cluster = Cluster::start(5, 1, |i| format!("zone={}", if i < 3 { "a" } else { "b" }));
    let mut all: Vec<(String, String)> = Vec::new();
    let mut add = |names: Vec<String>, x_fleet: &dyn Fn(&str) -> String| {
        for name in names {
            let text = unit(&x_fleet(&name));
            all.push((name, text));
        }
    };
    let names = |prefix: &str, count: usize| -> Vec<String> {
        (0..count).map(|i| format!("{prefix}{i}.service")).collect()
    };
    add(names("plain", 118), &|_| String::new());
    add(names("web@", 4), &|_| "Conflicts=web@*".into());
    add(names("app", 30), &|_| String::new());
    add(names("side", 30), &|name| {
        format!("MachineOf={}", name.replace("side", "app"))
    });
    add(names("za", 10), &|_| "MachineMetadata=zone=a".into());
    add(names("zb", 5), &|_| "MachineMetadata=zone=b".into());
    add(names("everywhere", 2), &|_| "Global=true".into());
    add(names("zone-a-global", 1), &|_| {
        "Global=true\nMachineMetadata=zone=a".into()
    });
    assert_eq!(all.len(), 200);
    let singles: Vec<String> = all
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| !n.starts_with("everywhere") && !n.starts_with("zone-a-global"))
        .collect();
    let started = Instant::now();
    cluster.start_units(0, &all);
    let within = Duration::from_secs(120);
    let machines = cluster.machines();
    let all_placed = |alive: usize| {
        let singles = &singles;
        move |running: &BTreeMap<String, Vec<String>>| -> Result<(), String> {
            let missing = singles
                .iter()
                .filter(|n| running.get(*n).is_none_or(|m| m.len() != 1))
                .count();
            let globals = running.get("everywhere0.service").map_or(0, Vec::len);
            match (missing, globals == alive) {
                (0, true) => Ok(()),
                _ => Err(format!(
                    "{missing} units not running once; global on {globals}"
                )),
            }
        }
    };
    let before = cluster.until_valid("200 units placed", within, all_placed(5));
    let placed_in = started.elapsed();
    assert_eq!(before["zone-a-global0.service"].len(), 3);
    let victim = 3;
    let lost: Vec<&String> = singles
        .iter()
        .filter(|n| before[*n][0] == machines[victim])
        .collect();
    assert!(!lost.is_empty());

    let killed = Instant::now();
    cluster.kill_host(victim);
    let after = cluster.until_valid("every unit placed again", within, all_placed(4));
    let replaced_in = killed.elapsed();
    for unit in &lost {
        assert_ne!(after[*unit][0], machines[victim], "{unit}");
    }
    for zb in (0..5).map(|i| format!("zb{i}.service")) {
        assert_eq!(after[&zb], vec![machines[4].clone()], "{zb} left zone b");
    }
    // Units on the live machines stayed where they were.
    let moved = singles
        .iter()
        .filter(|n| before[*n][0] != machines[victim] && before[*n] != after[*n])
        .count();
    println!(
        "200 units on 5 hosts: all running {placed_in:?} after one fleetctl start; a host with \
         {} of them killed: all placed again and running {replaced_in:?} later; {moved} units \
         on live hosts moved",
        lost.len()
    );
    assert_eq!(moved, 0);
}

/// Two hosts whose fleetd runs as `fleet.service` of a real (sandboxed) systemd and hands
/// units to it, beside a native host: units placed across both kinds; fleetd killed with
/// SIGKILL and restarted by systemd (Restart=always) restarts no unit; a systemd host cut off
/// loses its movable units to the others, and systemd stops its stale copies once it is back.
#[test]
fn hosts_on_systemd_beside_a_native_host() {
    let mut cluster = Cluster::create(3, 1, |_| String::new());
    cluster.start_on_systemd(0);
    cluster.start_on_systemd(1);
    cluster.start_fleetd(2);
    cluster.wait_for_machines(3);
    let mut all = units(
        &["web@1.service", "web@2.service", "web@3.service"],
        "Conflicts=web@*",
    );
    all.extend(units(
        &["plain0.service", "plain1.service", "plain2.service"],
        "",
    ));
    all.extend(units(&["everywhere.service"], "Global=true"));
    cluster.start_units(2, &all);
    let singles = [
        "web@1.service",
        "web@2.service",
        "web@3.service",
        "plain0.service",
        "plain1.service",
        "plain2.service",
    ];
    let within = Duration::from_secs(60);
    let before = cluster.until_valid("units on every host", within, |running| {
        each_once(&singles)(running)?;
        match running.get("everywhere.service").map_or(0, Vec::len) {
            3 => Ok(()),
            n => Err(format!("the global unit on {n} hosts")),
        }
    });
    let machines = cluster.machines();
    // On a systemd host, the unit is systemd's.
    for host in [0, 1] {
        let sandbox = cluster.systemd(host).unwrap();
        for (unit, on) in &before {
            if on.contains(&machines[host]) {
                let state = sandbox.systemctl(&["is-active", unit]).unwrap();
                assert_eq!(state.trim(), "active", "{unit} on host {host}");
            }
        }
    }

    // fleetd killed; systemd starts it again; no unit restarted anywhere.
    let processes = cluster.unit_processes();
    let sandbox = cluster.systemd(0).unwrap();
    let pid = |s: &fleet_testkit::SystemdSandbox| {
        s.systemctl(&["show", "--value", "-p", "MainPID", "fleet.service"])
            .unwrap()
            .trim()
            .to_owned()
    };
    let old = pid(sandbox);
    cluster.signal_fleetd(0, "-KILL");
    cluster.eventually("fleet.service restarted by systemd", within, || {
        let now = pid(cluster.systemd(0).unwrap());
        match now != old && now != "0" {
            true => Ok(()),
            false => Err(format!("MainPID {now}")),
        }
    });
    nothing_restarted(&cluster, &processes, AGENT_TTL * 2);

    // A systemd host cut off (host 1, or host 0 where placement left host 1 without a plain
    // unit, as a busy machine's placement can): its plain units run elsewhere; back, systemd
    // stops its stale copies.
    let plain_on = |host: usize| -> Vec<&String> {
        before
            .iter()
            .filter(|(u, on)| u.starts_with("plain") && on[0] == machines[host])
            .map(|(u, _)| u)
            .collect()
    };
    let victim = [1, 0]
        .into_iter()
        .find(|host| !plain_on(*host).is_empty())
        .unwrap_or_else(|| panic!("no systemd host runs a plain unit: {before:?}"));
    let movable = plain_on(victim);
    cluster.network.set_link(victim, false).unwrap();
    cluster.eventually("the cut-off host's plain units elsewhere", within, || {
        let running = cluster.running();
        match movable
            .iter()
            .all(|u| running[*u].iter().any(|m| *m != machines[victim]))
        {
            true => Ok(()),
            false => Err(format!("{running:?}")),
        }
    });
    cluster.network.set_link(victim, true).unwrap();
    cluster.until_valid("every unit once again", within, |running| {
        each_once(&singles)(running)?;
        match running["everywhere.service"].len() {
            3 => Ok(()),
            n => Err(format!("the global unit on {n} hosts")),
        }
    });
    let sandbox = cluster.systemd(victim).unwrap();
    for unit in movable {
        let state = sandbox
            .systemctl(&["is-active", unit])
            .unwrap_or_else(|e| e);
        assert_ne!(
            state.trim(),
            "active",
            "{unit} still active on the cut-off host"
        );
    }
}

/// Self-healing across hosts, judged by the invariant checker after every poll: a unit that
/// fails where it is first placed moves to another host, where it runs, never back where it
/// failed while another host takes it; its failure is in its history. Then its process killed
/// by hand is started again by its agent, and that is recorded too.
#[test]
fn a_failing_unit_moves_until_it_runs_and_a_killed_one_is_started_again() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    let flags = tempfile::tempdir().unwrap();
    // It runs only where a flag says so; at first nowhere.
    let unit_file = format!(
        "[Service]\nExecStart=/bin/bash -c 'test -e {}/ok-%m || exit 3; exec -a unit:%n:%m sleep infinity'\n\n[X-Fleet]\nRescheduleDelay=1s\n",
        flags.path().display()
    );
    let name = "flaky.service";
    cluster.start_units(0, &[(name.to_owned(), unit_file)]);
    let within = Duration::from_secs(60);
    let began = Instant::now();
    let failures = |client: &fleet_wire::client::Client| -> Vec<(String, String, String)> {
        client
            .units()
            .unwrap_or_default()
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| {
                u.failures
                    .into_iter()
                    .map(|f| (f.machine_id, f.what, f.action))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Where it failed first; then every other host lets it run.
    let first = cluster.eventually("failed where it was placed", within, || {
        let states = cluster
            .client()
            .states_of(name)
            .map_err(|e| e.to_string())?;
        states
            .iter()
            .find(|s| s.systemd_active_state == "failed")
            .map(|s| s.machine_id.clone())
            .ok_or_else(|| format!("{states:?}"))
    });
    for machine in machines_but(&cluster.machines(), &first) {
        std::fs::write(flags.path().join(format!("ok-{machine}")), "").unwrap();
    }
    let running = cluster.until_valid("running elsewhere", within, |running| {
        match running.get(name) {
            Some(on) if on.len() == 1 && on[0] != first => Ok(()),
            other => Err(format!("{name} on {other:?}")),
        }
    });
    let settled = began.elapsed();
    let host = running[name][0].clone();
    let moved = failures(&cluster.client());
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].0, first, "{moved:?}");
    assert!(moved[0].1.contains("status 3"), "{moved:?}");
    assert_eq!(moved[0].2, format!("moved to {host}"), "{moved:?}");
    let machines = cluster.machines();
    let at = machines.iter().position(|m| *m == host).unwrap();

    let pid = cluster.unit_processes()[&(name.to_owned(), host.clone())];
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let restarted = cluster.eventually("started again in place", within, || {
        let now = cluster.unit_processes();
        match now.get(&(name.to_owned(), host.clone())) {
            Some(new) if *new != pid => Ok(killed.elapsed()),
            other => Err(format!("{other:?}")),
        }
    });
    cluster.until_valid("still valid", within, each_once(&[name]));
    cluster.eventually("recorded", within, || {
        let history = failures(&cluster.client());
        match history.last() {
            Some((m, what, action))
                if m == &host
                    && what == "its main process was killed by SIGTERM outside fleet"
                    && action == "started again" =>
            {
                Ok(())
            }
            other => Err(format!("{other:?} of {history:?}")),
        }
    });
    let status = cluster.fleetctl_ok(at, &["status", name]);
    assert!(status.contains("started again"), "{status}");
    println!(
        "self-healing on three hosts: moved and running after {settled:?}; killed by hand, running again after {restarted:?}"
    );
}

fn machines_but(machines: &[String], but: &str) -> Vec<String> {
    machines.iter().filter(|m| *m != but).cloned().collect()
}

/// fleet's documented sidekick pattern, with the relations meaning what they say: one
/// `fleetctl start` of the main instance creates and starts its discovery sidekick (an
/// instance of another template) on the same host; the host dies and the pair moves together;
/// the sidekick fails, systemd's `BindsTo=` stops the main unit with it, and the pair moves
/// together again, never back where it failed. The invariant checker (co-placement included)
/// holds at every poll.
#[test]
fn a_service_and_its_sidekick_start_with_one_command_and_move_together() {
    let mut cluster = Cluster::start(3, 1, |_| String::new());
    let files = tempfile::tempdir().unwrap();
    let process = "ExecStart=/bin/bash -c 'exec -a unit:%n:%m sleep infinity'";
    let apache = files.path().join("apache@.service");
    std::fs::write(
        &apache,
        format!("[Unit]\nRequires=apache-discovery@%i.service\nBindsTo=apache-discovery@%i.service\n\n[Service]\n{process}\n\n[X-Fleet]\nRescheduleDelay=1s\n"),
    )
    .unwrap();
    let discovery = files.path().join("apache-discovery@.service");
    std::fs::write(
        &discovery,
        format!("[Unit]\nBindsTo=apache@%i.service\nAfter=apache@%i.service\n\n[Service]\n{process}\n\n[X-Fleet]\nRescheduleDelay=1s\n"),
    )
    .unwrap();
    cluster.fleetctl_ok(
        0,
        &[
            "submit",
            &apache.display().to_string(),
            &discovery.display().to_string(),
        ],
    );
    let started = cluster.fleetctl_ok(0, &["start", "apache@1.service"]);
    assert!(
        started.contains("Unit apache-discovery@1.service created from apache-discovery@.service and pulled in by apache@1.service, desired state launched"),
        "{started}"
    );
    let pair = ["apache@1.service", "apache-discovery@1.service"];
    let together = |not_on: Vec<String>| {
        move |running: &BTreeMap<String, Vec<String>>| -> Result<(), String> {
            let hosts: Vec<Option<&Vec<String>>> = pair.iter().map(|u| running.get(*u)).collect();
            match hosts.as_slice() {
                [Some(a), Some(b)] if a.len() == 1 && a == b && !not_on.contains(&a[0]) => Ok(()),
                other => Err(format!("the pair on {other:?}")),
            }
        }
    };
    let within = Duration::from_secs(60);
    let running = cluster.until_valid("the pair runs together", within, together(Vec::new()));
    let first = running[pair[0]][0].clone();

    // Its host dies: the pair moves, together.
    let machines = cluster.machines();
    let dead = machines.iter().position(|m| *m == first).unwrap();
    let died = Instant::now();
    cluster.kill_host(dead);
    let running = cluster.until_valid("moved together", within, together(vec![first.clone()]));
    let moved_in = died.elapsed();
    let second = running[pair[0]][0].clone();

    // The sidekick fails: BindsTo= stops the main unit; the pair moves together again.
    let pid = cluster.unit_processes()[&(pair[1].to_owned(), second.clone())];
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let failed = Instant::now();
    let running = cluster.until_valid(
        "moved together after the sidekick failed",
        within,
        together(vec![first.clone(), second.clone()]),
    );
    let third = &running[pair[0]][0];
    let units = cluster.client().units().unwrap();
    let sidekick = units.iter().find(|u| u.name == pair[1]).unwrap();
    assert_eq!(
        sidekick
            .failures
            .last()
            .map(|f| (f.machine_id.as_str(), f.action.clone())),
        Some((second.as_str(), format!("moved to {third}"))),
        "{:?}",
        sidekick.failures
    );
    for unit in pair {
        let desired = units
            .iter()
            .find(|u| u.name == unit)
            .map(|u| u.desired_state.clone());
        assert_eq!(desired.as_deref(), Some("launched"), "{unit}");
    }
    println!(
        "sidekick pattern on three hosts: moved together {moved_in:?} after its host died, {:?} after the sidekick failed",
        failed.elapsed()
    );
}
