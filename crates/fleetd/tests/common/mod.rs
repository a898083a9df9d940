//! What several fleetd test binaries share (each uses some of it).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use fleet_registry::{Registry, Scope, Snapshot};

/// Waits until the registry's snapshot satisfies `done`, failing the test after `within`. A
/// snapshot that cannot be read (etcd restarting, say) is retried, within the same bound.
pub async fn until(
    registry: &Registry,
    what: &str,
    within: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    fleet_testkit::wait::eventually_async(what, within, || async {
        match registry.snapshot(&Scope::All).await {
            Ok(snapshot) if done(&snapshot) => Ok(snapshot),
            Ok(snapshot) => Err(format!("{snapshot:#?}")),
            Err(e) => Err(format!("registry unreadable: {e}")),
        }
    })
    .await
}

/// The fleetd binary as machine `machine` (a label: the ID is [`fleet_testkit::machine_id`]
/// of it), with nothing from the test's environment: the native
/// unit manager, its registry data in `home/data`, unit files in `home/units` and the API on
/// `home/fleet.sock`; no standard streams. Callers add the rest (etcd, timings, config).
pub fn fleetd(home: &Path, machine: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetd"));
    command
        .env_clear()
        .env("FLEET_DATA_DIR", home.join("data"))
        .env("FLEET_RUNTIME_DIR", home.join("run"))
        .env("FLEET_UNITS_DIRECTORY", home.join("units"))
        .env("FLEET_MACHINE_ID", fleet_testkit::machine_id(machine))
        .env("FLEET_UNIT_MANAGER", "native")
        .env(
            "FLEET_API_LISTEN",
            format!("unix://{}", home.join("fleet.sock").display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Spawns `command` (a fleetd of `home`, from [`fleetd`]) and waits (at most 10 s) until its
/// API socket answers; fails the test if fleetd exits first.
pub fn serving(mut command: Command, home: &Path) -> Daemon {
    let socket = home.join("fleet.sock");
    let mut child = command.spawn().unwrap();
    eventually("no API socket", Duration::from_secs(10), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("fleetd exited early: {status:?}");
        }
        std::os::unix::net::UnixStream::connect(&socket)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    Daemon(child)
}

#[allow(unused_imports)]
pub use fleet_testkit::wait::{eventually, poll};

/// How long one fleetctl command may take in a test (fleetctl itself waits without limit for
/// a unit, as fleet's did).
const FLEETCTL_LIMIT: Duration = Duration::from_secs(120);

/// The fleetctl library run with `args` and environment `env`: (exit code, stdout, stderr).
/// Fails the test if it has not finished within `FLEETCTL_LIMIT`.
pub fn fleetctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (done, result) = std::sync::mpsc::channel();
    let shown = format!("{args:?}");
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = done.send(fleetctl::run_captured(&args, &env));
    });
    result
        .recv_timeout(FLEETCTL_LIMIT)
        .unwrap_or_else(|_| panic!("fleetctl {shown} did not finish within {FLEETCTL_LIMIT:?}"))
}

/// Sends `signal` (`-TERM`, `-QUIT`, ...) to `child` and waits at most 15 s for it to exit.
pub fn signal_and_wait(child: &mut Child, signal: &str) -> ExitStatus {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {}", child.id());
    eventually(
        &format!("exit after kill {signal}"),
        Duration::from_secs(15),
        || child.try_wait().unwrap().ok_or_else(String::new),
    )
}

/// [`signal_and_wait`], asserting a clean exit.
pub fn stop(child: &mut Child, signal: &str) {
    let status = signal_and_wait(child, signal);
    assert!(status.success(), "{status:?} after {signal}");
}

/// A probe for [`eventually`] with nothing to report but whether `condition` holds yet.
pub fn holds(condition: bool) -> Result<(), String> {
    condition.then_some(()).ok_or_else(|| "not yet".to_owned())
}

/// A daemon the test started: if the test ends without stopping it (an assertion failed), it
/// gets SIGTERM (fleetd stops its units as it leaves) and, after 5 s, SIGKILL, so a failing
/// test leaves nothing running.
pub struct Daemon(pub Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if !fleet_testkit::exits_within(&mut self.0, Duration::from_secs(5)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The failures the API records of `unit` (over the socket `socket`), as (what, action), oldest
/// first, once the last action says `until`; bounded by `within`.
pub fn failures_until(
    socket: &Path,
    unit: &str,
    until: &str,
    within: Duration,
) -> Vec<(String, String)> {
    eventually(
        &format!("{unit}'s failures end with {until:?}"),
        within,
        || {
            let path = format!("/fleet/v1/units/{unit}");
            let (_, body) = fleet_testkit::measure::http_unix(socket, "GET", &path, None);
            let unit: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let failures: Vec<(String, String)> = unit["failures"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let text = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
                    (text("what"), text("action"))
                })
                .collect();
            match failures
                .last()
                .is_some_and(|(_, action)| action.contains(until))
            {
                true => Ok(failures),
                false => Err(format!("{failures:?}")),
            }
        },
    )
}

/// The actions of [`failures_until`]'s history, oldest first.
pub fn actions_until(socket: &Path, unit: &str, until: &str, within: Duration) -> Vec<String> {
    failures_until(socket, unit, until, within)
        .into_iter()
        .map(|(_, action)| action)
        .collect()
}
