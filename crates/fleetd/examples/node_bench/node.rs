//! One fleetd machine of the benchmark: the release fleetd with the native supervisor, its own
//! data directory and API socket, on the embedded registry or on an etcd; and what a machine's
//! death is (fleetd and every process of its units, SIGKILLed at once).
//!
//! Laid out as a machine is by default: the data directory (registry, logs) on disk, the
//! runtime directory and the unit files (/run/fleet) in memory, here a directory in /dev/shm
//! where there is one.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_testkit::measure::{built_binary, http_unix};
use serde_json::Value;

pub struct Node {
    pub machine: String,
    /// The data directory (registry, logs): read by the machine benchmark only.
    #[allow(dead_code)]
    pub data: PathBuf,
    /// The runtime directory; the native supervisor's run directories are in `native/`.
    pub runtime: PathBuf,
    pub socket: PathBuf,
    child: Child,
    _runtime: tempfile::TempDir,
}

/// How a node is set up beyond its name.
#[derive(Clone, Default)]
pub struct Setup {
    /// An etcd endpoint; the embedded registry without one.
    pub etcd: Option<String>,
    /// Extra `FLEET_*` settings, e.g. `("AGENT_TTL", "2s")`.
    pub settings: Vec<(&'static str, String)>,
    /// Where fleetd's log goes (nowhere without).
    pub log: Option<PathBuf>,
}

impl Node {
    /// Starts fleetd for `machine` under `base` and waits (bounded) for its API.
    pub fn start(base: &Path, machine: &str, setup: &Setup) -> Node {
        let data = base.join(machine);
        let socket = base.join(format!("{machine}.sock"));
        let in_memory = Path::new("/dev/shm");
        let runtime_dir = tempfile::Builder::new()
            .prefix("fleet-bench-")
            .tempdir_in(if in_memory.is_dir() { in_memory } else { base })
            .expect("a runtime directory");
        let runtime = runtime_dir.path().to_owned();
        let mut command = Command::new(built_binary("fleetd"));
        command
            .env_clear()
            .env("FLEET_DATA_DIR", &data)
            .env("FLEET_RUNTIME_DIR", &runtime)
            .env("FLEET_UNITS_DIRECTORY", runtime.join("units"))
            .env("FLEET_MACHINE_ID", fleet_testkit::machine_id(machine))
            .env("FLEET_UNIT_MANAGER", "native")
            .env("FLEET_API_LISTEN", format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(endpoint) = &setup.etcd {
            command
                .env("FLEET_ETCD_SERVERS", endpoint)
                .env("FLEET_ETCD_KEY_PREFIX", "/bench/");
        }
        for (key, value) in &setup.settings {
            command.env(format!("FLEET_{key}"), value);
        }
        if let Some(log) = &setup.log {
            command.stderr(std::fs::File::create(log).expect("fleetd's log file"));
        }
        let child = command.spawn().expect("fleetd starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "no API at {}", socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        Node {
            machine: fleet_testkit::machine_id(machine),
            data,
            runtime,
            socket,
            child,
            _runtime: runtime_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http_unix(&self.socket, method, path, body)
    }

    /// `GET path` as JSON; panics on any other answer than 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.api("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Every unit state in the registry, as (unit, machine, sub-state), over all pages.
    pub fn states(&self) -> Vec<(String, String, String)> {
        let mut states = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.get(&format!("/fleet/v1/state{token}"));
            for state in page["states"].as_array().into_iter().flatten() {
                let field = |key: &str| state[key].as_str().unwrap_or_default().to_owned();
                states.push((field("name"), field("machineID"), field("systemdSubState")));
            }
            match page["nextPageToken"].as_str() {
                Some(next) => token = format!("?nextPageToken={next}"),
                None => return states,
            }
        }
    }

    /// Submits `name` (a `/bin/sleep` service with the `[X-Fleet]` lines given) as launched.
    pub fn launch(&self, name: &str, x_fleet: &[(&str, &str)]) {
        let mut options = vec![serde_json::json!(
            {"section": "Service", "name": "ExecStart", "value": "/bin/sleep 3600"}
        )];
        for (key, value) in x_fleet {
            options.push(serde_json::json!({"section": "X-Fleet", "name": key, "value": value}));
        }
        let body = serde_json::json!({"desiredState": "launched", "options": options});
        let (status, answer) = self.api(
            "PUT",
            &format!("/fleet/v1/units/{name}"),
            Some(&body.to_string()),
        );
        assert_eq!(status, 201, "PUT {name}: {answer}");
    }

    pub fn destroy(&self, name: &str) {
        let (status, answer) = self.api("DELETE", &format!("/fleet/v1/units/{name}"), None);
        assert!(status == 204 || status == 404, "DELETE {name}: {answer}");
    }

    /// Stops fleetd with SIGTERM (it stops its units) and waits for it, bounded.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        signal("-TERM", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("fleetd {} ignored SIGTERM for 60 s; killing", self.machine);
                self.kill_all();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The machine dies: fleetd and every process of its units are SIGKILLed together.
    pub fn die(mut self) {
        self.kill_all();
    }

    fn kill_all(&mut self) {
        let shims: Vec<u32> = std::fs::read_dir(self.runtime.join("native"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("shim.pid")).ok())
            .filter_map(|pid| pid.trim().parse().ok())
            .collect();
        let mut doomed = vec![self.child.id()];
        for shim in shims {
            doomed.extend(tree(shim));
        }
        for pid in &doomed {
            signal("-KILL", *pid);
        }
        self.child.wait().ok();
    }
}

/// A benchmark that fails part way (a panic) leaves no fleetd, shim or unit behind.
impl Drop for Node {
    fn drop(&mut self) {
        self.end();
    }
}

/// `pid` and its descendants (read before anything is killed: an orphan loses its place).
fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let parent = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        at += 1;
    }
    found
}

fn signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits, bounded by `limit`, until `done` holds; the time it took.
pub fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}
