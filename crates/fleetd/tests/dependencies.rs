//! Relations between fleet units on a real fleetd (embedded registry, native supervisor), as
//! fleet's documentation used them: `apache@.service` requires its discovery sidekick, an
//! instance of another template, which binds to it. One `fleetctl start` of the main instance
//! creates and starts the sidekick; a stop of it stops the sidekick, in the registry too.

mod common;
use common::{eventually, Daemon};
use fleet_testkit::measure::http_unix;

use std::path::Path;
use std::time::Duration;

fn started(dir: &Path) -> Daemon {
    common::serving(common::fleetd(dir, "node1"), dir)
}

/// Waits until each of `units` is wanted launched and active.
fn until_running(dir: &Path, units: &[&str], within: Duration) {
    for unit in units {
        eventually(&format!("{unit} running"), within, || {
            let (desired, _, active) = states(dir, unit);
            common::holds(desired == "launched" && active == "active")
                .map_err(|_| format!("{desired} {active}"))
        });
    }
}

/// Writes unit file `name` in `dir`; its path.
fn write_unit(dir: &Path, name: &str, text: impl AsRef<str>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text.as_ref()).unwrap();
    path.display().to_string()
}

fn fleetctl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let endpoint = format!("--endpoint=unix://{}", dir.join("fleet.sock").display());
    let mut all = vec![endpoint.as_str()];
    all.extend(args);
    common::fleetctl(&all, &[])
}

/// `unit`'s desired and current state and active state, as the API has them.
fn states(dir: &Path, unit: &str) -> (String, String, String) {
    let socket = dir.join("fleet.sock");
    let (_, body) = http_unix(&socket, "GET", &format!("/fleet/v1/units/{unit}"), None);
    let u: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let (_, body) = http_unix(&socket, "GET", &format!("/fleet/v1/state/{unit}"), None);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (
        text(&u["desiredState"]),
        text(&u["currentState"]),
        text(&s["systemdActiveState"]),
    )
}

const APACHE: &str = "[Unit]\nDescription=Apache on %i\nRequires=apache-discovery@%i.service\nAfter=docker.service\n\n[Service]\nExecStart=/bin/sleep 600\n";
const DISCOVERY: &str = "[Unit]\nDescription=Announce apache@%i\nBindsTo=apache@%i.service\nAfter=apache@%i.service\n\n[Service]\nExecStart=/bin/sleep 600\n\n[X-Fleet]\nMachineOf=apache@%i.service\n";

#[test]
fn starting_the_main_instance_pulls_in_its_sidekick_and_stopping_it_stops_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let apache = write_unit(dir.path(), "apache@.service", APACHE);
    let discovery = write_unit(dir.path(), "apache-discovery@.service", DISCOVERY);
    let (code, _, err) = fleetctl(dir.path(), &["submit", &apache, &discovery]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = fleetctl(dir.path(), &["start", "apache@8888.service"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Unit apache-discovery@8888.service created from apache-discovery@.service and pulled in by apache@8888.service, desired state launched\n"),
        "{out}"
    );
    let within = Duration::from_secs(15);
    until_running(
        dir.path(),
        &["apache@8888.service", "apache-discovery@8888.service"],
        within,
    );

    // The tree of what it is related to, where each runs.
    let (_, listed, _) = fleetctl(
        dir.path(),
        &["list-units", "--no-legend", "--fields=unit,machine"],
    );
    let machine = listed
        .lines()
        .find_map(|l| l.strip_prefix("apache@8888.service\t"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (code, tree, err) = fleetctl(dir.path(), &["list-dependencies", "apache@8888.service"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tree,
        format!(
            "apache@8888.service (desired launched, active on {machine})\n\
             └─Requires=apache-discovery@8888.service (desired launched, active on {machine})\n  \
             └─BindsTo=apache@8888.service (shown above)\n"
        )
    );
    let (code, _, err) = fleetctl(dir.path(), &["list-dependencies", "nope.service"]);
    assert_eq!((code, err.as_str()), (1, "Unit nope.service not found\n"));

    // Stopping the main unit stops what binds to it, and the registry says so: nothing starts
    // it again.
    let (code, out, err) = fleetctl(dir.path(), &["stop", "apache@8888.service"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Unit apache-discovery@8888.service stops with apache@8888.service, desired state loaded\n"),
        "{out}"
    );
    for unit in ["apache@8888.service", "apache-discovery@8888.service"] {
        eventually(&format!("{unit} stopped"), within, || {
            let (desired, _, active) = states(dir.path(), unit);
            common::holds(desired == "loaded" && active == "inactive")
                .map_err(|_| format!("{desired} {active}"))
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        states(dir.path(), "apache-discovery@8888.service").2,
        "inactive",
        "started again"
    );

    // Started again, the sidekick comes with it (it exists now: raised, not created).
    let (code, out, err) = fleetctl(dir.path(), &["start", "apache@8888.service"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Unit apache-discovery@8888.service pulled in by apache@8888.service, desired state launched\n"),
        "{out}"
    );
    eventually("the sidekick back", within, || {
        let (desired, _, active) = states(dir.path(), "apache-discovery@8888.service");
        common::holds(desired == "launched" && active == "active")
    });
    // Destroyed, what binds to it stops (and stays, wanted loaded; with its MachineOf= peer
    // gone, no machine holds it).
    let (code, out, err) = fleetctl(dir.path(), &["destroy", "apache@8888.service"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Destroyed apache@8888.service\nUnit apache-discovery@8888.service stops with apache@8888.service, desired state loaded\n"
    );
    eventually("the sidekick stopped", within, || {
        let (desired, _, active) = states(dir.path(), "apache-discovery@8888.service");
        common::holds(desired == "loaded" && active != "active")
            .map_err(|_| format!("{desired} {active}"))
    });
    common::stop(&mut fleetd, "-TERM");
}

/// `StartAfter=`: a unit placed before what it starts after is up waits, loaded, with the
/// reason in the API and `list-unit-files`; it starts once that unit is active and healthy.
/// A cycle of `StartAfter=` is refused at submit, naming the cycle.
#[test]
fn a_unit_starts_after_the_units_it_names_are_up_and_a_cycle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let flag = dir.path().join("db-healthy");
    let db = write_unit(dir.path(), "db.service", format!(
            "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nHealthCheck=exec:/bin/test -f {}\nHealthCheckInterval=200ms\nHealthCheckStartPeriod=0\nHealthCheckFailures=1\n",
            flag.display()
        ));
    let web = write_unit(
        dir.path(),
        "web.service",
        "[Service]\nExecStart=/bin/sleep 601\n[X-Fleet]\nStartAfter=db.service\n",
    );
    let socket = dir.path().join("fleet.sock");
    let unit_json = |name: &str| -> serde_json::Value {
        let (_, body) = http_unix(&socket, "GET", &format!("/fleet/v1/units/{name}"), None);
        serde_json::from_str(&body).unwrap_or_default()
    };
    let (code, _, err) = fleetctl(dir.path(), &["submit", &db]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fleetctl(dir.path(), &["start", "--no-block", &web]);
    assert_eq!(code, 0, "{err}");
    let within = Duration::from_secs(15);
    eventually("web waits, loaded", within, || {
        let unit = unit_json("web.service");
        common::holds(
            unit["waitingFor"] == serde_json::json!(["db.service"])
                && unit["currentState"] == "loaded",
        )
        .map_err(|_| unit.to_string())
    });
    let (_, files, _) = fleetctl(
        dir.path(),
        &["list-unit-files", "--no-legend", "--fields=unit,reason"],
    );
    assert!(
        files.contains("web.service\twaiting for db.service to be up (StartAfter=)\n"),
        "{files}"
    );
    let (code, tree, err) = fleetctl(dir.path(), &["list-dependencies", "web.service"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tree,
        "web.service (desired launched, inactive on 6e6f6465.../192.0.2.2)\n└─StartAfter=db.service (desired inactive, not placed)\n"
    );
    let (_, status, _) = fleetctl(dir.path(), &["status", "web.service"]);
    assert!(
        status.contains(
            "Unit web.service: not started yet, waiting for db.service to be up (StartAfter=)\n"
        ),
        "{status}"
    );
    // db active but unhealthy: web still waits.
    let (code, _, err) = fleetctl(dir.path(), &["start", "--no-block", "db.service"]);
    assert_eq!(code, 0, "{err}");
    eventually("db active, unhealthy", within, || {
        let (_, _, active) = states(dir.path(), "db.service");
        common::holds(active == "active")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        states(dir.path(), "web.service").2,
        "inactive",
        "started before db was healthy"
    );
    // Healthy: web starts, and waits no more.
    std::fs::write(&flag, "").unwrap();
    eventually("web running", within, || {
        let unit = unit_json("web.service");
        let (_, _, active) = states(dir.path(), "web.service");
        common::holds(active == "active" && unit["waitingFor"].is_null())
            .map_err(|_| format!("{active} {unit}"))
    });

    // A cycle: refused, naming it; nothing of it is kept.
    let a = write_unit(
        dir.path(),
        "a.service",
        "[Service]\nExecStart=/bin/sleep 1\n[X-Fleet]\nStartAfter=b.service\n",
    );
    let b = write_unit(
        dir.path(),
        "b.service",
        "[Service]\nExecStart=/bin/sleep 1\n[X-Fleet]\nStartAfter=a.service\n",
    );
    let (code, _, err) = fleetctl(dir.path(), &["submit", &a]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = fleetctl(dir.path(), &["submit", &b]);
    assert_eq!(code, 1);
    assert!(
        err.contains("StartAfter= cycle: b.service -> a.service -> b.service"),
        "{err}"
    );
    assert!(unit_json("b.service")["name"].is_null());
    common::stop(&mut fleetd, "-TERM");
}

/// A unit that requires a global unit pulls it in, and is satisfied by its copy on its own
/// machine (global units are in no group: they run everywhere).
#[test]
fn a_unit_requiring_a_global_unit_pulls_it_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let mon = write_unit(
        dir.path(),
        "mon.service",
        "[Service]\nExecStart=/bin/sleep 600\n[X-Fleet]\nGlobal=true\n",
    );
    let app = write_unit(
        dir.path(),
        "app.service",
        "[Unit]\nRequires=mon.service\nAfter=mon.service\n[Service]\nExecStart=/bin/sleep 601\n",
    );
    let (code, _, err) = fleetctl(dir.path(), &["submit", &mon]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = fleetctl(dir.path(), &["start", &app]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Unit mon.service pulled in by app.service, desired state launched\n"),
        "{out}"
    );
    until_running(
        dir.path(),
        &["mon.service", "app.service"],
        Duration::from_secs(15),
    );
    common::stop(&mut fleetd, "-TERM");
}

/// One `fleetctl start` of a unit and the unit it requires, in that order: the second unit's
/// creation takes nothing down (only a unit that was launched stops what requires it).
#[test]
fn a_unit_and_what_it_requires_start_together_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = started(dir.path());
    let main = write_unit(
        dir.path(),
        "main.service",
        "[Unit]\nRequires=side.service\n[Service]\nExecStart=/bin/sleep 600\n",
    );
    let side = write_unit(
        dir.path(),
        "side.service",
        "[Service]\nExecStart=/bin/sleep 601\n",
    );
    let (code, out, err) = fleetctl(dir.path(), &["start", &main, &side]);
    assert_eq!(code, 0, "{out}{err}");
    until_running(
        dir.path(),
        &["main.service", "side.service"],
        Duration::from_secs(15),
    );
    common::stop(&mut fleetd, "-TERM");
}
