//! Every wait of fleetctl ends, and says why: each case starts a unit file with a real
//! fleetctl against a real fleetd (native supervisor, metadata `role=web`) and checks the exit
//! code, what was printed, and that it ended within its bound.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;

/// A unit file, the fleetctl command run on it, and what must come of it.
struct Case {
    name: &'static str,
    unit: &'static str,
    args: &'static [&'static str],
    code: i32,
    /// Lines (or parts of lines) the output must hold: stdout, then stderr.
    out: &'static [&'static str],
    err: &'static [&'static str],
    /// The longest the command may take.
    within: Duration,
}

const SECONDS_20: Duration = Duration::from_secs(20);

const CASES: &[Case] = &[
    Case {
        name: "runs.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\n",
        args: &["start"],
        code: 0,
        out: &[
            "Unit runs.service inactive",
            "Unit runs.service launched on ",
        ],
        err: &[],
        within: SECONDS_20,
    },
    Case {
        // fleet waited for ever for `active`: a oneshot without RemainAfterExit= never is.
        name: "oneshot.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/true\n",
        args: &["start"],
        code: 0,
        out: &["Unit oneshot.service ran and ended on "],
        err: &[],
        within: SECONDS_20,
    },
    Case {
        // Exits 0 at once: started (seen active) or ran and ended, either way a success.
        name: "exits.service",
        unit: "[Service]\nExecStart=/bin/true\n",
        args: &["start"],
        code: 0,
        out: &["Unit exits.service launched on "],
        err: &[],
        within: SECONDS_20,
    },
    Case {
        name: "fails.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/false\n",
        args: &["start"],
        code: 1,
        out: &[],
        err: &["Unit fails.service failed to start on ", "failed (failed)"],
        within: SECONDS_20,
    },
    Case {
        name: "missing-dependency.service",
        unit: "[Unit]\nRequires=nope.service\n[Service]\nExecStart=/bin/sleep 600\n",
        args: &["start"],
        code: 1,
        out: &[],
        err: &[
            "Unit missing-dependency.service failed to start on ",
            ": Unit nope.service not found.",
        ],
        within: SECONDS_20,
    },
    Case {
        name: "unplaceable.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nMachineMetadata=role=db\n",
        args: &["start"],
        code: 1,
        out: &[],
        err: &[
            "Unit unplaceable.service cannot be placed yet: ",
            "Unit unplaceable.service cannot be placed: ",
            "It stays in the cluster, desired launched",
        ],
        within: SECONDS_20,
    },
    Case {
        // broken-dep.service is loaded before the cases (and fails when started).
        name: "needs-broken.service",
        unit: "[Unit]\nRequires=broken-dep.service\nAfter=broken-dep.service\n[Service]\nExecStart=/bin/sleep 600\n",
        args: &["start"],
        code: 1,
        out: &[],
        err: &["Unit needs-broken.service is inactive on ", ": Dependency failed for needs-broken.service: broken-dep.service is not active."],
        within: SECONDS_20,
    },
    Case {
        // A sidekick whose main unit cannot run: stopped by (never started for) its binding.
        name: "sidekick.service",
        unit: "[Unit]\nBindsTo=broken-dep.service\nAfter=broken-dep.service\n[Service]\nExecStart=/bin/sleep 600\n",
        args: &["start"],
        code: 1,
        out: &[],
        err: &["Unit sidekick.service is inactive on ", ": Dependency failed for sidekick.service: broken-dep.service is not active."],
        within: SECONDS_20,
    },
    Case {
        // A wait that lasts tells a pipe, in plain lines, where the unit is.
        name: "slow.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 5\n",
        args: &["start"],
        code: 0,
        out: &["Unit slow.service launched on "],
        err: &["Waiting for unit slow.service: activating (start) on "],
        within: SECONDS_20,
    },
    Case {
        // --block-attempts keeps its meaning: two 2-second windows.
        name: "unplaceable-attempts.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nMachineMetadata=role=db\n",
        args: &["load", "--block-attempts=2"],
        code: 1,
        out: &[],
        err: &[
            "Unit unplaceable-attempts.service cannot be placed: ",
            "desired loaded",
        ],
        within: Duration::from_secs(8),
    },
];

/// A fleetd in `home` with metadata `role=web`, serving its API; its log in `fleetd.log`.
fn web_node(home: &Path) -> Daemon {
    let mut command = common::fleetd(home, "node1");
    command
        .env("FLEET_METADATA", "role=web")
        .stderr(std::fs::File::create(home.join("fleetd.log")).unwrap());
    common::serving(command, home)
}

/// fleetctl's `--endpoint` for the fleetd of `home`.
fn endpoint_of(home: &Path) -> String {
    format!("--endpoint=unix://{}", home.join("fleet.sock").display())
}

fn check(home: &Path, case: &Case) {
    let file = home.join(case.name);
    std::fs::write(&file, case.unit).unwrap();
    let endpoint = endpoint_of(home);
    let mut args = vec![endpoint.as_str()];
    args.extend_from_slice(case.args);
    let path = file.display().to_string();
    args.push(&path);
    let began = Instant::now();
    let (code, out, err) = common::fleetctl(&args, &[]);
    let took = began.elapsed();
    let shown = format!(
        "{} {:?}: exit {code} after {took:?}\nstdout:\n{out}\nstderr:\n{err}",
        case.name, case.args
    );
    assert_eq!(code, case.code, "{shown}");
    assert!(took <= case.within, "{shown}");
    for part in case.out {
        assert!(out.contains(part), "stdout lacks {part:?}: {shown}");
    }
    for part in case.err {
        assert!(err.contains(part), "stderr lacks {part:?}: {shown}");
    }
}

#[test]
fn every_wait_ends_with_the_outcome_and_its_reason() {
    let home = tempfile::tempdir().unwrap();
    let _fleetd = web_node(home.path());
    let broken = home.path().join("broken-dep.service");
    std::fs::write(&broken, "[Service]\nType=oneshot\nExecStart=/bin/false\n").unwrap();
    let endpoint = endpoint_of(home.path());
    let (code, _, err) = common::fleetctl(&[&endpoint, "load", broken.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    for case in CASES {
        check(home.path(), case);
    }
    // A refused start is tried once, not again and again (it was, thousands of times a
    // second).
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(home.path().join("fleetd.log")).unwrap();
    let tries = log
        .lines()
        .filter(|l| l.contains("start failed") && l.contains("unit=missing-dependency.service"))
        .count();
    assert_eq!(tries, 1, "{log}");
}

/// fleetctl `start` of several units reports each one's outcome (fleet stopped at the first
/// failure), and a failed unit started again is tried again, as `systemctl start` does.
#[test]
fn each_unit_is_reported_and_a_failed_one_is_tried_again() {
    let home = tempfile::tempdir().unwrap();
    let _fleetd = web_node(home.path());
    let mark = home.path().join("mark");
    let second_time = format!(
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'test -e {0} || {{ touch {0}; exit 1; }}'\n",
        mark.display()
    );
    let files = [
        ("second-time.service", second_time.as_str()),
        ("fine.service", "[Service]\nExecStart=/bin/sleep 600\n"),
    ];
    for (name, text) in files {
        std::fs::write(home.path().join(name), text).unwrap();
    }
    let endpoint = endpoint_of(home.path());
    let paths: Vec<String> = files
        .iter()
        .map(|(name, _)| home.path().join(name).display().to_string())
        .collect();
    let run = |paths: &[String]| {
        let mut args = vec![endpoint.as_str(), "start"];
        args.extend(paths.iter().map(String::as_str));
        common::fleetctl(&args, &[])
    };
    let (code, out, err) = run(&paths);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("Unit second-time.service failed to start on "),
        "{err}"
    );
    assert!(
        out.contains("Unit fine.service launched on "),
        "the second is reported too: {out}"
    );
    let (code, out, err) = run(&paths[..1]);
    assert_eq!(code, 0, "started again, it succeeds: {out}{err}");
    assert!(
        out.contains("Unit second-time.service launched on "),
        "{out}"
    );
    // restart too goes on after a unit it cannot restart.
    let (code, out, err) =
        common::fleetctl(&[&endpoint, "restart", "nope.service", "fine.service"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Unit nope.service not found"), "{err}");
    assert!(
        out.contains("Unit fine.service loaded on ")
            && out.contains("Unit fine.service launched on "),
        "{out}"
    );
}

/// The reason a unit does not run is shown wherever a person looks: `status`, the tables'
/// `reason` field; a file that is no unit file is named; `-l` is `--full` for every list.
#[test]
fn reasons_are_shown_where_people_look() {
    let home = tempfile::tempdir().unwrap();
    let _fleetd = web_node(home.path());
    let endpoint = endpoint_of(home.path());
    let file = |name: &str, text: &str| {
        let path = home.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let run = |args: &[&str]| {
        let mut all = vec![endpoint.as_str()];
        all.extend_from_slice(args);
        common::fleetctl(&all, &[])
    };
    let unplaceable = file(
        "unplaceable.service",
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nMachineMetadata=role=db\n",
    );
    let refused = file(
        "refused.service",
        "[Unit]\nRequires=nope.service\n[Service]\nExecStart=/bin/sleep 600\n",
    );
    let first = file(
        "g1.service",
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nGlobal=true\nConflicts=g*\n",
    );
    let second = file(
        "g2.service",
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nGlobal=true\nConflicts=g*\n",
    );
    let readme = file("README", "Start these with fleetctl.\n");
    run(&[
        "start",
        "--no-block",
        &unplaceable,
        &refused,
        &first,
        &second,
    ]);

    common::eventually("the engine's reason", Duration::from_secs(10), || {
        let (_, out, _) = run(&["list-unit-files", "--no-legend", "--fields=unit,reason"]);
        common::holds(has_row(
            &out,
            &["unplaceable.service", "no machine has role=db"],
        ))
    });
    let (code, _, err) = run(&["status", "unplaceable.service"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Unit unplaceable.service does not appear to be loaded.\nUnit unplaceable.service cannot be placed: no machine has role=db\n"
    );
    let (_, out, _) = run(&["list-unit-files", "--no-legend", "--fields=unit,reason"]);
    assert!(has_row(&out, &["refused.service", "-"]), "{out}");

    let refusal = "Unit nope.service not found.";
    common::eventually("the refusal is published", Duration::from_secs(10), || {
        let (_, out, _) = run(&["list-units", "--no-legend", "--fields=unit,reason"]);
        common::holds(has_row(&out, &["refused.service", refusal]))
    });
    let (_, out, _) = run(&["status", "refused.service"]);
    assert!(out.contains(&format!("   Reason: {refusal}\n")), "{out}");

    // Of two conflicting global units, the first by name runs; the second says so.
    common::eventually("g1 runs", Duration::from_secs(10), || {
        let (_, out, _) = run(&["list-units", "--no-legend", "--fields=unit,active"]);
        common::holds(has_row(&out, &["g1.service", "active"]))
    });
    // (g2 may run for a moment, until the agent has seen g1 too.)
    common::eventually(
        "g2 says why it runs nowhere",
        Duration::from_secs(10),
        || {
            let (code, out, err) = run(&["status", "g2.service"]);
            let why = "Global unit g2.service runs on no machine: ";
            match (code, out.as_str(), err.starts_with(why)) {
                (3, "", true) => Ok(()),
                _ => Err(format!("exit {code}\n{out}{err}")),
            }
        },
    );

    let (code, _, err) = run(&["submit", &readme]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("from file {readme}: it holds no unit options")),
        "{err}"
    );

    for list in ["list-unit-files", "list-units", "list-machines"] {
        let (code, out, err) = run(&[list, "-l", "--no-legend"]);
        assert_eq!(code, 0, "{list} -l: {err}");
        // Full: the whole machine ID, not its first eight characters.
        assert!(
            out.contains(&fleet_testkit::machine_id("node1")),
            "{list} -l: {out}"
        );
    }
}

/// Whether a table (tab-separated, padded with tabs) has the row `cells`.
fn has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|line| {
        let row: Vec<&str> = line.split('\t').filter(|c| !c.is_empty()).collect();
        row == cells
    })
}

/// On a terminal, the wait is one line drawn in place and erased at the end.
#[test]
fn a_terminal_sees_the_wait_drawn_in_place() {
    let home = tempfile::tempdir().unwrap();
    let _fleetd = web_node(home.path());
    // fleetd is fleetctl when called so.
    let fleetctl = home.path().join("fleetctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fleetd"), &fleetctl).unwrap();
    let unit = home.path().join("slow.service");
    std::fs::write(
        &unit,
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 2\n",
    )
    .unwrap();
    let command = format!(
        "{} --endpoint=unix://{} start {}",
        fleetctl.display(),
        home.path().join("fleet.sock").display(),
        unit.display()
    );
    // script(1) runs it on a pseudo-terminal and copies what it wrote.
    let output = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("\r\x1b[KWaiting for unit slow.service: activating (start) on "),
        "{shown:?}"
    );
    // Each drawn line is erased before what follows: the outcome's line, and the end.
    assert!(
        shown.contains("\r\x1b[KUnit slow.service launched on 6e6f6465..."),
        "{shown:?}"
    );
    assert!(shown.ends_with("\r\x1b[K"), "{shown:?}");
}

/// A blocking start of a global unit tells on how many machines it runs (after fleet's
/// `Triggered` line), or why it runs nowhere.
#[test]
fn a_global_start_tells_where_it_runs() {
    let home = tempfile::tempdir().unwrap();
    let _fleetd = web_node(home.path());
    let endpoint = endpoint_of(home.path());
    let start = |name: &str, metadata: &str| {
        let path = home.path().join(name);
        let text = format!(
            "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nGlobal=true\nMachineMetadata={metadata}\n"
        );
        std::fs::write(&path, text).unwrap();
        let began = Instant::now();
        let outcome = common::fleetctl(&[&endpoint, "start", path.to_str().unwrap()], &[]);
        (outcome, began.elapsed())
    };
    let ((code, out, err), _) = start("web-everywhere.service", "role=web");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with(
            "Triggered global unit web-everywhere.service start\nUnit web-everywhere.service launched on 1 machine\n"
        ),
        "{out}"
    );
    let ((code, out, err), took) = start("db-everywhere.service", "role=db");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("Global unit db-everywhere.service runs on no machine: "),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}
