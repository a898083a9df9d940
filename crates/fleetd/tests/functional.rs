//! fleet's functional tests (its `functional/*_test.go`, listed in the reference), on the real
//! cluster of the acceptance suite: fleetds on hosts in network namespaces, a real etcd,
//! fleetctl, and what runs read from the hosts' process tables (`cluster/mod.rs`). The
//! invariant checker runs after every step that changes placement. Needs root.

mod cluster;
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cluster::{unit, Cluster, AGENT_TTL};
use fleet_wire::schema::MetadataOp;

const WITHIN: Duration = Duration::from_secs(30);

/// Writes unit files into the cluster's home (`files/`), returning their paths as strings.
fn files(cluster: &Cluster, units: &[(String, String)]) -> Vec<String> {
    let dir = cluster.home(0).join("files");
    std::fs::create_dir_all(&dir).unwrap();
    units
        .iter()
        .map(|(name, text)| {
            let path: PathBuf = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        })
        .collect()
}

fn named(prefix: &str, count: usize, x_fleet: &str) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("{prefix}{i}.service"), unit(x_fleet)))
        .collect()
}

/// `fleetctl <command> <paths...>` through host `via`, which must succeed.
fn fleetctl_on(cluster: &Cluster, via: usize, command: &[&str], paths: &[String]) -> String {
    let mut args: Vec<&str> = command.to_vec();
    args.extend(paths.iter().map(String::as_str));
    cluster.fleetctl_ok(via, &args)
}

fn lines(text: &str) -> usize {
    text.lines().count()
}

/// How many of `units` run (each on any machine).
fn running_count(cluster: &Cluster, units: &[(String, String)]) -> usize {
    let running = cluster.running();
    units
        .iter()
        .filter(|(n, _)| running.contains_key(n))
        .count()
}

fn until_running(cluster: &Cluster, what: &str, units: &[(String, String)], count: usize) {
    cluster.until_valid(what, WITHIN, |running| {
        let n = units
            .iter()
            .filter(|(u, _)| running.contains_key(u))
            .count();
        match n == count {
            true => Ok(()),
            false => Err(format!("{n} of {count} run")),
        }
    });
}

/// The machine each of `units` runs on (each must run once).
fn hosts_of(running: &BTreeMap<String, Vec<String>>, units: &[&str]) -> Vec<String> {
    units
        .iter()
        .map(|u| {
            let machines = &running[*u];
            assert_eq!(machines.len(), 1, "{u} on {machines:?}");
            machines[0].clone()
        })
        .collect()
}

/// TestUnitSubmit, TestUnitLoad, TestUnitStart, TestUnit{Submit,Load,Start}Replace,
/// TestUnitRestart, TestUnitCat, TestListUnitFilesOrder, TestFleetctlWithEnv, on three hosts
/// with the commands sent to different fleetds.
#[test]
fn unit_actions_across_the_cluster() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    // submit 9 → 9 unit files; destroy → none; twice.
    let nine = named("submitted", 9, "");
    let paths = files(&cluster, &nine);
    for _ in 0..2 {
        fleetctl_on(&cluster, 0, &["submit"], &paths);
        let listed = cluster.fleetctl_ok(1, &["list-unit-files", "--no-legend"]);
        assert_eq!(lines(&listed), 9, "{listed}");
        let names: Vec<String> = nine.iter().map(|(n, _)| n.clone()).collect();
        fleetctl_on(&cluster, 2, &["destroy"], &names);
        let listed = cluster.fleetctl_ok(1, &["list-unit-files", "--no-legend"]);
        assert_eq!(listed, "");
    }

    // load 6 → 6 units loaded somewhere, none running; unload → none loaded; twice.
    let six = named("loaded", 6, "");
    let paths = files(&cluster, &six);
    let names: Vec<String> = six.iter().map(|(n, _)| n.clone()).collect();
    for _ in 0..2 {
        fleetctl_on(&cluster, 1, &["load"], &paths);
        let listed = cluster.fleetctl_ok(0, &["list-units", "--no-legend", "--fields=unit,load"]);
        assert_eq!(listed.matches("\tloaded").count(), 6, "{listed}");
        assert_eq!(running_count(&cluster, &six), 0);
        fleetctl_on(&cluster, 2, &["unload"], &names);
        cluster.eventually("nothing loaded", WITHIN, || {
            let listed = cluster.fleetctl_ok(0, &["list-units", "--no-legend"]);
            match listed.is_empty() {
                true => Ok(()),
                false => Err(listed),
            }
        });
    }
    fleetctl_on(&cluster, 0, &["destroy"], &names);

    // start 3 → 3 run; stop → none run, still loaded; twice.
    let three = named("started", 3, "");
    let paths = files(&cluster, &three);
    let names: Vec<String> = three.iter().map(|(n, _)| n.clone()).collect();
    for _ in 0..2 {
        fleetctl_on(&cluster, 2, &["start"], &paths);
        until_running(&cluster, "three running", &three, 3);
        fleetctl_on(&cluster, 0, &["stop"], &names);
        until_running(&cluster, "three stopped", &three, 0);
        let listed = cluster.fleetctl_ok(1, &["list-units", "--no-legend", "--fields=unit,load"]);
        assert_eq!(listed.matches("\tloaded").count(), 3, "{listed}");
    }

    // restart: every unit runs again, as a new process.
    fleetctl_on(&cluster, 2, &["start"], &paths);
    until_running(&cluster, "three running", &three, 3);
    let before = cluster.unit_processes();
    fleetctl_on(&cluster, 1, &["restart"], &names);
    let after = cluster.eventually("restarted", WITHIN, || {
        let after = cluster.unit_processes();
        let renewed = before
            .iter()
            .all(|((unit, _), pid)| after.iter().any(|((u, _), p)| u == unit && p != pid));
        match renewed {
            true => Ok(after),
            false => Err(format!("{after:?}")),
        }
    });
    assert_eq!(after.len(), 3, "{after:?}");

    // submit/load/start --replace of changed files: cat shows the new text, and a running
    // unit runs its new version.
    for (command, prefix) in [("submit", "rs"), ("load", "rl"), ("start", "rt")] {
        let old = named(prefix, 2, "");
        let paths = files(&cluster, &old);
        fleetctl_on(&cluster, 0, &[command], &paths);
        let new: Vec<(String, String)> = old
            .iter()
            .map(|(n, text)| (n.clone(), format!("[Unit]\nDescription=v2\n\n{text}")))
            .collect();
        let paths = files(&cluster, &new);
        fleetctl_on(&cluster, 1, &[command, "--replace"], &paths);
        for (name, text) in &new {
            let shown = cluster.fleetctl_ok(2, &["cat", name]);
            assert_eq!(
                shown.trim_end(),
                text.trim_end(),
                "{command} --replace of {name}"
            );
        }
        if command == "start" {
            until_running(&cluster, "replaced units running", &new, 2);
        }
    }

    // list-unit-files lists units in name order whatever the submission order.
    let mut twenty: Vec<(String, String)> = (0..20)
        .map(|i| (format!("order{:02}.service", (i * 7) % 20), unit("")))
        .collect();
    let paths = files(&cluster, &twenty);
    fleetctl_on(&cluster, 0, &["submit"], &paths);
    twenty.sort();
    let listed = cluster.fleetctl_ok(2, &["list-unit-files", "--no-legend", "--fields=unit"]);
    let order: Vec<&str> = listed.lines().filter(|l| l.starts_with("order")).collect();
    let expected: Vec<&str> = twenty.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, expected);

    // FLEETCTL_ENDPOINT instead of --endpoint.
    let endpoint = format!("unix://{}", cluster.home(1).join("fleet.sock").display());
    let (code, out, err) = common::fleetctl(
        &["list-machines", "--no-legend"],
        &[("FLEETCTL_ENDPOINT", endpoint.as_str())],
    );
    assert_eq!((code, lines(&out)), (0, 3), "{out}{err}");
    assert_eq!(cluster.violations().unwrap(), Vec::<String>::new());
}

/// TestScheduleConflicts, TestScheduleMultipleConflicts, TestScheduleOneWayConflict,
/// TestScheduleGlobalUnits, TestScheduleGlobalConflicts.
#[test]
fn conflicts_and_global_units() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    // Five mutually conflicting units on three machines: three run, on distinct machines,
    // and the other two say why not.
    let five = named("conflict.", 5, "Conflicts=conflict.*");
    let paths = files(&cluster, &five);
    fleetctl_on(&cluster, 0, &["start", "--no-block"], &paths);
    until_running(&cluster, "three of five", &five, 3);
    // The engine has settled: the other two carry their reason.
    cluster.eventually("two explained", WITHIN, || {
        let listed = cluster.fleetctl_ok(
            0,
            &["list-unit-files", "--fields=unit,reason", "--no-legend"],
        );
        match listed.matches("conflicts with").count() {
            2 => Ok(()),
            _ => Err(listed),
        }
    });
    assert_eq!(running_count(&cluster, &five), 3);
    let running = cluster.running();
    let waiting: Vec<&String> = five
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !running.contains_key(*n))
        .collect();
    for name in waiting {
        let (code, _, err) = cluster.fleetctl(1, &["start", "--block-attempts=1", name]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("Unit {name} cannot be placed yet: conflicts with")),
            "{err}"
        );
    }
    let names: Vec<String> = five.iter().map(|(n, _)| n.clone()).collect();
    fleetctl_on(&cluster, 0, &["destroy"], &names);
    until_running(&cluster, "conflicts gone", &five, 0);

    // Several Conflicts= values, each written another way: all three on distinct machines.
    let multiple = vec![
        (
            "mc0.service".to_owned(),
            unit("Conflicts=mc1.service\nConflicts=mc2.service"),
        ),
        (
            "mc1.service".to_owned(),
            unit("Conflicts=mc0.service mc2.service"),
        ),
        (
            "mc2.service".to_owned(),
            unit("Conflicts=\"mc0.service\" \"mc1.service\""),
        ),
    ];
    let paths = files(&cluster, &multiple);
    fleetctl_on(&cluster, 1, &["start", "--no-block"], &paths);
    until_running(&cluster, "three distinct", &multiple, 3);
    let running = cluster.running();
    let hosts = hosts_of(&running, &["mc0.service", "mc1.service", "mc2.service"]);
    assert_eq!(
        hosts
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    fleetctl_on(
        &cluster,
        1,
        &["destroy"],
        &multiple.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    );

    // A one-way conflict on one machine: the unit that names the other runs first and keeps
    // it out until it is destroyed.
    let pin = "MachineMetadata=host=h1";
    let first = vec![(
        "conflicts-with-hello.service".to_owned(),
        unit(&format!("{pin}\nConflicts=hello.service")),
    )];
    let hello = vec![("hello.service".to_owned(), unit(pin))];
    fleetctl_on(&cluster, 2, &["start"], &files(&cluster, &first));
    let (code, _, err) = cluster.fleetctl(
        0,
        &["start", "--block-attempts=2", &files(&cluster, &hello)[0]],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("hello.service cannot be placed yet"), "{err}");
    assert_eq!(running_count(&cluster, &hello), 0);
    fleetctl_on(
        &cluster,
        1,
        &["destroy"],
        &["conflicts-with-hello.service".to_owned()],
    );
    until_running(&cluster, "hello placed", &hello, 1);

    // A global unit runs on every machine beside ordinary ones; of two conflicting global
    // units, the first (by name) runs everywhere and the second nowhere.
    let mut global = vec![("global.service".to_owned(), unit("Global=true"))];
    global.extend(named("normal", 2, ""));
    global.push((
        "conflict-global.0.service".to_owned(),
        unit("Global=true\nConflicts=conflict-global.*"),
    ));
    global.push((
        "conflict-global.1.service".to_owned(),
        unit("Global=true\nConflicts=conflict-global.*"),
    ));
    fleetctl_on(
        &cluster,
        0,
        &["start", "--no-block"],
        &files(&cluster, &global),
    );
    let machines = cluster.machines();
    let running = cluster.until_valid("globals everywhere", WITHIN, |running| {
        let everywhere = |unit: &str| running.get(unit).is_some_and(|m| m.len() == 3);
        match everywhere("global.service") && everywhere("conflict-global.0.service") {
            true => Ok(()),
            false => Err("not everywhere yet".into()),
        }
    });
    assert!(!running.contains_key("conflict-global.1.service"));
    // status (each machine's own fleetd answers for it; from another machine fleetctl goes
    // there over ssh, tested in over_ssh.rs) and restart address every machine of a global
    // unit.
    // (A machine reports a unit's state a moment after its process runs.)
    for (i, machine) in machines.iter().enumerate() {
        common::eventually("global.service shown active", WITHIN, || {
            let (code, status, err) =
                cluster.fleetctl(i, &["status", "--machine", machine, "global.service"]);
            match code == 0 && status.contains("global.service") && status.contains("active") {
                true => Ok(()),
                false => Err(format!("exit {code} on {machine}:\n{status}{err}")),
            }
        });
    }
    let before = cluster.unit_processes();
    cluster.fleetctl_ok(2, &["restart", "global.service"]);
    cluster.until_valid("global restarted everywhere", WITHIN, |_| {
        let after = cluster.unit_processes();
        let renewed = machines.iter().all(|m| {
            let key = ("global.service".to_owned(), m.clone());
            after
                .get(&key)
                .is_some_and(|pid| before.get(&key) != Some(pid))
        });
        match renewed {
            true => Ok(()),
            false => Err("not every copy restarted".into()),
        }
    });
}

/// TestScheduleMachineOf (pairs together, and moving together when their machine dies),
/// TestScheduleReplace, TestScheduleCircularReplace.
#[test]
fn machine_of_pairs_and_replaces() {
    let mut cluster = Cluster::start(3, 1, |_| String::new());
    let mut pairs = named("ping.", 3, "");
    for i in 0..3 {
        pairs.push((
            format!("pong.{i}.service"),
            unit(&format!("MachineOf=ping.{i}.service")),
        ));
    }
    fleetctl_on(
        &cluster,
        0,
        &["start", "--no-block"],
        &files(&cluster, &pairs),
    );
    let running = cluster.until_valid("pairs together", WITHIN, |running| {
        match pairs.iter().all(|(n, _)| running.contains_key(n)) {
            true => Ok(()),
            false => Err("not all running".into()),
        }
    });
    let machines = cluster.machines();
    let victim = machines
        .iter()
        .position(|m| running["ping.0.service"][0] == *m)
        .unwrap();
    cluster.kill_host(victim);
    let moved = cluster.until_valid("the pair elsewhere", WITHIN, |running| {
        let live = |u: &str| {
            running
                .get(u)
                .is_some_and(|m| m.len() == 1 && m[0] != machines[victim])
        };
        match live("ping.0.service") && live("pong.0.service") {
            true => Ok(()),
            false => Err("ping.0/pong.0 not moved yet".into()),
        }
    });
    assert_eq!(moved["ping.0.service"], moved["pong.0.service"]);
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let (a, b) = (live[0], live[1]);
    let names: Vec<String> = pairs.iter().map(|(n, _)| n.clone()).collect();
    fleetctl_on(&cluster, a, &["destroy"], &names);
    until_running(&cluster, "pairs gone", &pairs, 0);

    // Replaces: replace.0 alone on one machine, replace.1 and its MachineOf peer on the other;
    // a unit that replaces replace.0 takes its machine and replace.0 moves.
    let pinned = |i: usize| format!("MachineMetadata=host=h{i}");
    let first = vec![("replace.0.service".to_owned(), unit(&pinned(a)))];
    fleetctl_on(&cluster, a, &["start"], &files(&cluster, &first));
    let others = vec![
        ("replace.1.service".to_owned(), unit(&pinned(b))),
        (
            "replace.2.service".to_owned(),
            unit("MachineOf=replace.1.service"),
        ),
    ];
    fleetctl_on(&cluster, b, &["start"], &files(&cluster, &others));
    // Unpinned now (a pinned unit cannot be kicked anywhere): it stays where it runs.
    fleetctl_on(&cluster, a, &["destroy"], &["replace.0.service".to_owned()]);
    let free = vec![("replace.0.service".to_owned(), unit(""))];
    fleetctl_on(&cluster, a, &["start"], &files(&cluster, &free));
    let running = cluster.until_valid("replace.0 placed", WITHIN, |running| {
        match running.contains_key("replace.0.service") {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    });
    let old = running["replace.0.service"][0].clone();
    let kick = vec![(
        "replace-kick0.service".to_owned(),
        unit("Replaces=replace.0.service"),
    )];
    fleetctl_on(&cluster, b, &["start"], &files(&cluster, &kick));
    let after = cluster.until_valid("replace.0 kicked", WITHIN, |running| {
        let on = |u: &str| running.get(u).map(|m| m[0].clone());
        match (on("replace-kick0.service"), on("replace.0.service")) {
            (Some(kick), Some(moved)) if kick == old && moved != old => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(after.len(), 4, "{after:?}");

    // Two units that replace each other, both bound to one machine: one runs there, and
    // they do not kick each other back and forth.
    let circular = vec![
        (
            "circle.0.service".to_owned(),
            unit(&format!("Replaces=circle.1.service\n{}", pinned(a))),
        ),
        (
            "circle.1.service".to_owned(),
            unit(&format!("Replaces=circle.0.service\n{}", pinned(a))),
        ),
    ];
    fleetctl_on(
        &cluster,
        a,
        &["start", "--no-block"],
        &files(&cluster, &circular),
    );
    until_running(&cluster, "one of the circle", &circular, 1);
    let first = cluster.unit_processes();
    std::thread::sleep(AGENT_TTL);
    assert_eq!(cluster.unit_processes(), first, "the circle kept moving");
}

/// TestScheduleConditionMachineID (MachineID=%i), TestTemplatesWithSpecifiersInMetadata
/// (MachineMetadata with %i, and an instance no machine matches).
#[test]
fn templates_pin_by_machine_id_and_metadata() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    let machines = cluster.machines();
    let template = files(
        &cluster,
        &[
            ("pin@.service".to_owned(), unit("MachineID=%i")),
            (
                "metadata@.service".to_owned(),
                unit("MachineMetadata=host=%i"),
            ),
        ],
    );
    fleetctl_on(&cluster, 0, &["submit"], &template);
    let pins = [
        format!("pin@{}.service", machines[0]),
        format!("pin@{}.service", machines[2]),
    ];
    fleetctl_on(
        &cluster,
        1,
        &["start", "--no-block"],
        &[
            pins[0].clone(),
            pins[1].clone(),
            "metadata@h1.service".to_owned(),
        ],
    );
    let running = cluster.until_valid("instances placed", WITHIN, |running| {
        match running.len() == 3 {
            true => Ok(()),
            false => Err("not all three".into()),
        }
    });
    assert_eq!(running[&pins[0]], vec![machines[0].clone()]);
    assert_eq!(running[&pins[1]], vec![machines[2].clone()]);
    assert_eq!(running["metadata@h1.service"], vec![machines[1].clone()]);
    let (code, _, err) = cluster.fleetctl(
        2,
        &["start", "--block-attempts=2", "metadata@invalid.service"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("metadata@invalid.service cannot be placed yet: no machine has host=invalid"),
        "{err}"
    );
    assert!(!cluster.running().contains_key("metadata@invalid.service"));
}

/// TestMachinesPatchAddModify / Delete / Bad: metadata set through the API takes part in
/// placement at once.
#[test]
fn machine_metadata_patched_through_the_api_moves_units() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    let machines = cluster.machines();
    let db = vec![("db.service".to_owned(), unit("MachineMetadata=role=db"))];
    fleetctl_on(&cluster, 0, &["start", "--no-block"], &files(&cluster, &db));
    // The engine has looked at it and says why it does not run.
    cluster.eventually("db explained", WITHIN, || {
        let listed = cluster.fleetctl_ok(
            0,
            &["list-unit-files", "--fields=unit,reason", "--no-legend"],
        );
        match listed.contains("role=db") {
            true => Ok(()),
            false => Err(listed),
        }
    });
    assert_eq!(running_count(&cluster, &db), 0);
    let client = cluster.client_of(2);
    let op = |op: &str, machine: &str, value: Option<&str>| match value {
        Some(value) => vec![MetadataOp::set(op, machine, "role", value)],
        None => vec![MetadataOp::remove(machine, "role")],
    };
    client
        .patch_machines(&op("add", &machines[1], Some("db")))
        .unwrap();
    let running = cluster.until_valid("db placed", WITHIN, |running| {
        match running.contains_key("db.service") {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    });
    assert_eq!(running["db.service"], vec![machines[1].clone()]);
    let listed = cluster.fleetctl_ok(0, &["list-machines", "--no-legend", "--full"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&machines[1]))
        .unwrap();
    assert!(row.contains("role=db"), "{listed}");

    // Moved: replace on one machine, remove on the other.
    client
        .patch_machines(&op("add", &machines[0], Some("db")))
        .unwrap();
    client
        .patch_machines(&op("remove", &machines[1], None))
        .unwrap();
    cluster.until_valid("db moved", WITHIN, |running| {
        match running.get("db.service") {
            Some(on) if on == &vec![machines[0].clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let flat = |op: &str, path: String, value: &str| MetadataOp {
        op: op.to_owned(),
        path,
        value: Some(serde_json::json!(value)),
    };
    for bad in [
        flat("noop", format!("/{}/metadata/role", machines[0]), "x"),
        flat("add", format!("/{}/foo", machines[0]), "x"),
        flat("add", format!("/{}/metadata/role", machines[0]), ""),
    ] {
        let error = client
            .patch_machines(std::slice::from_ref(&bad))
            .unwrap_err()
            .to_string();
        assert!(error.contains("400"), "{bad:?}: {error}");
    }
    // A machine that is not in the cluster: 404, and nothing written.
    let stranger = "0123456789abcdef0123456789abcdef";
    let error = client
        .patch_machines(&op("add", stranger, Some("db")))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("404") && error.contains(&format!("machine {stranger} does not exist")),
        "{error}"
    );
    assert_eq!(cluster.running()["db.service"], vec![machines[0].clone()]);
}

/// TestNodeShutdown, TestShutdown, TestDynamicClusterNewMemberUnitMigration: a new member
/// joins (global units start there, nothing else moves); a member's fleetd is stopped
/// (SIGTERM): it stops its units and exits 0, and only its unit moves, to the free machine.
#[test]
fn members_join_and_leave() {
    let mut cluster = Cluster::create(4, 1, |_| String::new());
    for i in 0..3 {
        cluster.start_fleetd(i);
    }
    cluster.wait_for_machines(3);
    let mut units = named("member.", 3, "Conflicts=member.*");
    units.push(("everywhere.service".to_owned(), unit("Global=true")));
    fleetctl_on(
        &cluster,
        0,
        &["start", "--no-block"],
        &files(&cluster, &units),
    );
    let machines = cluster.machines();
    let before = cluster.until_valid("three members and the global unit", WITHIN, |running| {
        let members = (0..3).all(|i| running.contains_key(&format!("member.{i}.service")));
        match members
            && running
                .get("everywhere.service")
                .is_some_and(|m| m.len() == 3)
        {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    });

    cluster.start_fleetd(3);
    cluster.wait_for_machines(4);
    let joined =
        cluster.until_valid(
            "the global unit on the new member",
            WITHIN,
            |running| match running["everywhere.service"].contains(&machines[3]) {
                true => Ok(()),
                false => Err("not yet".into()),
            },
        );
    for i in 0..3 {
        let name = format!("member.{i}.service");
        assert_eq!(joined[&name], before[&name], "{name} moved");
    }

    let leaving = machines
        .iter()
        .position(|m| before["member.0.service"][0] == *m)
        .unwrap();
    let stopping = std::time::Instant::now();
    let code = cluster.signal_fleetd(leaving, "-TERM");
    // TestShutdown: a clean exit, promptly, its units stopped first.
    assert_eq!(code, Some(0), "fleetd's exit after SIGTERM");
    assert!(stopping.elapsed() < Duration::from_secs(10));
    let after = cluster.until_valid(
        "member.0 on the new machine",
        WITHIN,
        |running| match running.get("member.0.service") {
            Some(on) if on == &vec![machines[3].clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        !after.values().flatten().any(|m| *m == machines[leaving]),
        "the stopped member still runs units: {after:?}"
    );
    for i in 1..3 {
        let name = format!("member.{i}.service");
        assert_eq!(after[&name], before[&name], "{name} moved");
    }
    let listed = cluster.fleetctl_ok(
        (leaving + 1) % 3,
        &[
            "list-units",
            "--no-legend",
            "--full",
            "--fields=unit,machine",
        ],
    );
    assert!(!listed.contains(&machines[leaving]), "{listed}");
}

/// TestDetectMachineId and bad input at the cluster level: a second fleetd with a machine ID
/// in use, a malformed fleet.conf, invalid metadata, an unreachable etcd, fleetctl against a
/// dead endpoint. Each is refused or reported with the reason; nothing in the cluster changes.
#[test]
fn bad_input_at_the_cluster_level() {
    let mut cluster = Cluster::create(3, 1, |_| String::new());
    cluster.start_fleetd(0);
    cluster.wait_for_machines(1);
    let running = vec![("steady.service".to_owned(), unit(""))];
    fleetctl_on(&cluster, 0, &["start"], &files(&cluster, &running));
    // Active once its shell runs; its title once that shell has exec'd.
    let before = cluster.eventually("the unit's process titled", WITHIN, || {
        let processes = cluster.unit_processes();
        match processes.keys().any(|(unit, _)| unit == "steady.service") {
            true => Ok(processes),
            false => Err(format!("{processes:?}")),
        }
    });
    let log = |cluster: &Cluster, i: usize| {
        std::fs::read_to_string(cluster.home(i).join("fleetd.log")).unwrap_or_default()
    };

    // Host 1 claims host 0's machine ID.
    let taken = cluster.machines()[0].clone();
    let mut command = cluster.fleetd_command(1);
    command.env("FLEET_MACHINE_ID", &taken);
    cluster.spawn_fleetd(1, command);
    assert_eq!(cluster.fleetd_exit(1), Some(1), "{}", log(&cluster, 1));
    assert!(
        log(&cluster, 1).contains("already in use by another live fleetd"),
        "{}",
        log(&cluster, 1)
    );

    // A malformed fleet.conf and invalid metadata: refused, naming the option.
    let conf = cluster.home(2).join("fleet.conf");
    std::fs::write(&conf, "agent_ttl = \"soon\"\n").unwrap();
    let mut command = cluster.fleetd_command(2);
    command
        .arg("--config")
        .arg(&conf)
        .env_remove("FLEET_AGENT_TTL");
    cluster.spawn_fleetd(2, command);
    assert_eq!(cluster.fleetd_exit(2), Some(1));
    assert!(
        log(&cluster, 2).contains("agent_ttl"),
        "{}",
        log(&cluster, 2)
    );
    let mut command = cluster.fleetd_command(2);
    command.env("FLEET_METADATA", "region");
    cluster.spawn_fleetd(2, command);
    assert_eq!(cluster.fleetd_exit(2), Some(1));
    assert!(
        log(&cluster, 2).contains("invalid value \"region\" for FLEET_METADATA"),
        "{}",
        log(&cluster, 2)
    );

    // etcd unreachable at start: fleetd says so and keeps trying; its API answers with the
    // reason rather than hanging.
    let mut command = cluster.fleetd_command(2);
    command.env("FLEET_ETCD_SERVERS", "http://10.77.0.250:2379");
    cluster.spawn_fleetd(2, command);
    cluster.eventually("the unreachable etcd named", WITHIN, || {
        match log(&cluster, 2).contains("10.77.0.250:2379") {
            true => Ok(()),
            false => Err("not logged yet".into()),
        }
    });
    assert!(cluster.fleetd_running(2));
    cluster.signal_fleetd(2, "-TERM");

    // fleetctl against a dead endpoint: an error naming it, exit 1, quickly.
    let dead = format!(
        "--endpoint=unix://{}",
        cluster.home(1).join("none.sock").display()
    );
    let started = std::time::Instant::now();
    let (code, _, err) = common::fleetctl(&[&dead, "list-units"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("none.sock"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));

    assert_eq!(cluster.unit_processes(), before);
    assert_eq!(cluster.client().machines().unwrap().len(), 1);
}

/// TestReconfigureServer in a cluster: metadata changed in fleet.conf and SIGHUP reach the
/// engine, which places a unit waiting for it; the API keeps serving.
#[test]
fn sighup_brings_new_metadata_to_the_engine() {
    let mut cluster = Cluster::create(2, 1, |_| String::new());
    cluster.start_fleetd(0);
    let conf = cluster.home(1).join("fleet.conf");
    std::fs::write(&conf, "metadata = \"host=h1,role=cache\"\n").unwrap();
    let configured = |cluster: &Cluster| {
        let mut command = cluster.fleetd_command(1);
        command
            .env_remove("FLEET_METADATA")
            .arg("--config")
            .arg(&conf);
        command
    };
    let command = configured(&cluster);
    cluster.spawn_fleetd(1, command);
    cluster.wait_for_machines(2);
    let db = vec![("db.service".to_owned(), unit("MachineMetadata=role=db"))];
    fleetctl_on(&cluster, 0, &["start", "--no-block"], &files(&cluster, &db));
    std::fs::write(&conf, "metadata = \"host=h1,role=db\"\n").unwrap();
    cluster.signal_fleetd_keep(1, "-HUP");
    let machines = cluster.machines();
    let running =
        cluster.until_valid(
            "db placed on the reconfigured machine",
            WITHIN,
            |running| match running.contains_key("db.service") {
                true => Ok(()),
                false => Err("not yet".into()),
            },
        );
    assert_eq!(running["db.service"], vec![machines[1].clone()]);
    assert!(cluster.fleetd_running(1));
    let listed = cluster.fleetctl_ok(1, &["list-units", "--no-legend"]);
    assert!(listed.starts_with("db.service"), "{listed}");
}

/// TestSingleNodeConnectivityLoss: a one-machine cluster loses etcd for longer than its
/// agent TTL. Units that are inactive, loaded, launched and global keep their state, nothing
/// is stopped or restarted, during the outage and after it.
#[test]
fn a_single_node_losing_etcd_keeps_its_units() {
    let cluster = Cluster::start(1, 1, |_| String::new());
    let units = vec![
        ("idle.service".to_owned(), unit("")),
        ("ready.service".to_owned(), unit("")),
        ("busy.service".to_owned(), unit("")),
        ("all.service".to_owned(), unit("Global=true")),
    ];
    let paths = files(&cluster, &units);
    fleetctl_on(&cluster, 0, &["submit"], &paths[0..1]);
    fleetctl_on(&cluster, 0, &["load"], &paths[1..2]);
    fleetctl_on(&cluster, 0, &["start"], &paths[2..4]);
    let listing = || {
        cluster.fleetctl_ok(
            0,
            &["list-units", "--no-legend", "--fields=unit,load,active,sub"],
        )
    };
    // Running is reported once the unit's process is forked; its title (bash's exec of
    // sleep) follows a moment later.
    let (states, before) = cluster.eventually("states published", WITHIN, || {
        let listed = listing();
        let processes = cluster.unit_processes();
        match lines(&listed) == 3 && listed.matches("running").count() == 2 {
            true if processes.len() == 2 => Ok((listed, processes)),
            _ => Err(format!("{listed}{processes:?}")),
        }
    });
    let files_before = cluster.fleetctl_ok(0, &["list-unit-files", "--no-legend"]);

    let etcd_host = 1;
    cluster.network.set_link(etcd_host, false).unwrap();
    let outage = AGENT_TTL * 2 + Duration::from_secs(1);
    let until = std::time::Instant::now() + outage;
    while std::time::Instant::now() < until {
        assert_eq!(
            cluster.unit_processes(),
            before,
            "a unit stopped during the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.network.set_link(etcd_host, true).unwrap();
    std::thread::sleep(AGENT_TTL * 2);
    assert_eq!(
        cluster.unit_processes(),
        before,
        "a unit restarted after the outage"
    );
    cluster.eventually("the same states after the outage", WITHIN, || {
        let listed = listing();
        match listed == states {
            true => Ok(()),
            false => Err(format!("now:\n{listed}before:\n{states}")),
        }
    });
    assert_eq!(
        cluster.fleetctl_ok(0, &["list-unit-files", "--no-legend"]),
        files_before
    );
}

/// The API over the network, as fleet's functional tests used it: fleetctl on one host drives
/// the cluster through another host's fleetd (https on port 54728 with a bearer token); a
/// missing or wrong token is refused with 401 and changes nothing.
#[test]
fn fleetctl_over_the_network_from_another_host() {
    let cluster = Cluster::start(3, 1, |_| String::new());
    let token = Some(cluster::API_TOKEN);
    let (code, out, err) = cluster.remote_fleetctl(0, 1, token, &["list-machines", "--no-legend"]);
    assert_eq!((code, lines(&out)), (0, 3), "{out}{err}");
    let hello = files(&cluster, &[("hello.service".to_owned(), unit(""))]);
    let (code, out, err) = cluster.remote_fleetctl(2, 1, token, &["start", &hello[0]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Unit hello.service launched on "), "{out}");
    let running = cluster.until_valid("hello runs", WITHIN, |running| {
        match running.contains_key("hello.service") {
            true => Ok(()),
            false => Err("not yet".into()),
        }
    });
    let (code, out, _) = cluster.remote_fleetctl(
        0,
        2,
        token,
        &[
            "list-units",
            "--no-legend",
            "--full",
            "--fields=unit,machine,active",
        ],
    );
    assert_eq!(code, 0);
    let machine = &running["hello.service"][0];
    assert!(
        out.starts_with(&format!("hello.service\t{machine}/")) && out.contains("\tactive"),
        "{out}"
    );
    for wrong in [None, Some("cluster-test-token-wrong")] {
        let (code, _, err) = cluster.remote_fleetctl(0, 1, wrong, &["destroy", "hello.service"]);
        assert_eq!(code, 1);
        assert!(err.contains("Error 401"), "{err}");
    }
    assert!(cluster.running().contains_key("hello.service"));
}
