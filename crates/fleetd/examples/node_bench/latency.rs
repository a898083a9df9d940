//! §2: submit-to-active on one node. Each start is a new unit (a `/bin/sleep` service),
//! submitted as launched either with one API request or with `fleetctl start <file>`; the
//! clock runs from the request (or fleetctl's spawn) until the API reports the unit running.
//! Starts go one after another, so each is measured alone.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::measure::built_binary;

use crate::node::{until, Node};

/// The running time of `name` on `node`, polled through the API.
fn running(node: &Node, name: &str) -> bool {
    let page = node.get(&format!("/fleet/v1/state?unitName={name}"));
    page["states"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|state| state["systemdSubState"] == "running")
}

/// `starts` starts through the API; each time, sorted.
pub fn via_api(node: &Node, prefix: &str, starts: usize) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..starts)
        .map(|i| {
            let name = format!("{prefix}{i}.service");
            let started = Instant::now();
            node.launch(&name, &[]);
            until(Duration::from_secs(30), &name, || running(node, &name));
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// `starts` runs of `fleetctl start <file>` (submit, load and start in one command, as users
/// type it); each time until the unit runs, sorted.
pub fn via_fleetctl(node: &Node, files: &Path, prefix: &str, starts: usize) -> Vec<Duration> {
    std::fs::create_dir_all(files).expect("unit files dir");
    let fleetctl = built_binary("fleetctl");
    let mut times: Vec<Duration> = (0..starts)
        .map(|i| {
            let name = format!("{prefix}{i}.service");
            let file = files.join(&name);
            std::fs::write(&file, "[Service]\nExecStart=/bin/sleep 3600\n").expect("unit file");
            let started = Instant::now();
            let status = Command::new(&fleetctl)
                .arg(format!("--endpoint=unix://{}", node.socket.display()))
                .arg("start")
                .arg(&file)
                .stdout(Stdio::null())
                .status()
                .expect("fleetctl runs");
            assert!(status.success(), "fleetctl start {name}: {status}");
            until(Duration::from_secs(30), &name, || running(node, &name));
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Destroys the units `prefix0..prefix{count}` (not timed), so each row starts on a node as
/// empty as the last one's, and waits until their processes are gone.
pub fn clean(node: &Node, prefix: &str, count: usize) {
    for i in 0..count {
        node.destroy(&format!("{prefix}{i}.service"));
    }
    until(Duration::from_secs(120), "units destroyed", || {
        node.states()
            .iter()
            .all(|(name, _, _)| !name.starts_with(prefix))
    });
}
