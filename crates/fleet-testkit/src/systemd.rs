//! A real systemd (the host's, 252 on Debian 12) booted per test in a sandbox: new pid, mount,
//! uts, ipc and cgroup namespaces on an overlay of the host root whose changes go to a tmpfs,
//! with its own /run, /dev, /tmp, a read-only /proc/sys and /sys, its own cgroup2 subtree and
//! masked timers (`scripts/sandbox-systemd.sh`). NEVER boot systemd on the host's root: its
//! tmpfiles setup once emptied the host's /tmp. Needs root.
//!
//! From the test process: the system bus at `bus_address()`, the journal under `journal_dir()`,
//! the sandbox's files under `root()`, and `shared_dir()`, a directory at the same path inside
//! and outside (for unit files).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run_output;

const SCRIPT: &str = include_str!("../scripts/sandbox-systemd.sh");
/// Boot takes about 1 s here, 2.3 s under load.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct SystemdSandbox {
    /// The `unshare` process; its only child is the sandbox's PID 1.
    outer: Child,
    pid1: u32,
    dir: tempfile::TempDir,
}

impl SystemdSandbox {
    /// Boots a sandboxed systemd in a fresh directory under `base` (which must not be the
    /// host's /tmp: a build directory such as `CARGO_TARGET_TMPDIR` is right) and waits until
    /// it is `running`.
    pub fn boot(base: &Path) -> Result<SystemdSandbox, String> {
        SystemdSandbox::boot_in(base, None)
    }

    /// [`SystemdSandbox::boot`], in the network namespace `netns` (a host of a
    /// [`crate::Network`]) instead of a new empty one.
    pub fn boot_in(base: &Path, netns: Option<&str>) -> Result<SystemdSandbox, String> {
        if run_output(Command::new("id").arg("-u"))? != "0" {
            return Err("a sandboxed systemd needs root".into());
        }
        if !Path::new("/lib/systemd/systemd").exists() {
            return Err("no /lib/systemd/systemd: install systemd and dbus".into());
        }
        std::fs::create_dir_all(base).map_err(|e| format!("{}: {e}", base.display()))?;
        // Short names: the directory's name also names the cgroup and the hostname.
        let dir = tempfile::Builder::new()
            .prefix("sd")
            .tempdir_in(base)
            .map_err(|e| e.to_string())?;
        let script = dir.path().join("sandbox-systemd.sh");
        std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
        // If the test process dies without dropping the sandbox (a timeout's kill), the
        // kernel kills `unshare` (the script execs into it, keeping the PID), and with it the
        // sandbox (`--kill-child`).
        let outer = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "bash"])
            .arg(&script)
            .arg(dir.path())
            .args(netns)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the sandbox: {e}"))?;
        let mut sandbox = SystemdSandbox {
            outer,
            pid1: 0,
            dir,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut state = String::new();
        loop {
            if let Ok(Some(status)) = sandbox.outer.try_wait() {
                return Err(format!(
                    "the sandbox ended ({status}): {}",
                    sandbox.console()
                ));
            }
            // Before systemd execs, the child is a shell; only systemd itself is PID 1.
            sandbox.pid1 = only_child(sandbox.outer.id())
                .filter(|pid| comm(*pid).as_deref() == Some("systemd"))
                .unwrap_or(0);
            if sandbox.pid1 != 0 && sandbox.bus_socket().exists() {
                state = sandbox.manager_property("SystemState").unwrap_or_default();
                if state == "running" || state == "degraded" {
                    return Ok(sandbox);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "systemd not running after {BOOT_TIMEOUT:?} (state {state:?}): {}",
                    sandbox.console()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sandbox's filesystem as the host sees it (through its PID 1): its /run is a tmpfs
    /// of its own, as on a machine, and the host reaches it only this way.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid1))
    }

    fn bus_socket(&self) -> PathBuf {
        self.root().join("run/dbus/system_bus_socket")
    }

    /// The system bus of the sandbox, as a D-Bus address.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.bus_socket().display())
    }

    /// Seen at the same path inside the sandbox and outside.
    pub fn shared_dir(&self) -> PathBuf {
        self.dir.path().join("shared")
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.root().join("run/log/journal")
    }

    /// The cgroup of the sandbox's unit `unit` (`system.slice/<unit>`), as the host sees it:
    /// its `cpu.stat` and `cgroup.procs` (host PIDs) are readable from outside.
    pub fn unit_cgroup(&self, unit: &str) -> PathBuf {
        let name = self.dir.path().file_name().unwrap_or_default();
        cgroup2_root()
            .join(format!("test-systemd-{}", name.to_string_lossy()))
            .join("system.slice")
            .join(unit)
    }

    /// The sandbox's PID 1, as the host sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// A property of systemd's Manager object, as `busctl` prints its value (strings unquoted).
    pub fn manager_property(&self, name: &str) -> Result<String, String> {
        let value = run_output(Command::new("busctl").args([
            &format!("--address={}", self.bus_address()),
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            name,
        ]))?;
        // `s "running"` → `running`
        let value = value.split_once(' ').map_or(value.as_str(), |(_, v)| v);
        Ok(value.trim_matches('"').to_owned())
    }

    /// The command prefix that runs a program inside the sandbox (`nsenter` into all of its
    /// namespaces): as if on the sandbox's machine.
    pub fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.pid1.to_string(), "-a"]
            .map(str::to_owned)
            .to_vec()
    }

    /// `PROGRAM ARGS` inside the sandbox: its stdout, or why it failed.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let enter = self.enter();
        run_output(
            Command::new(&enter[0])
                .args(&enter[1..])
                .arg(program)
                .args(args),
        )
    }

    /// `systemctl ARGS` inside the sandbox (the host has no systemd to ask).
    pub fn systemctl(&self, args: &[&str]) -> Result<String, String> {
        self.run("systemctl", args)
    }

    /// Installs fleetd as production does, from the project's `contrib/systemd/fleet.service`
    /// and `fleet.socket`, with drop-ins for what a test changes: `fleetd` as the binary,
    /// `service_settings` (lines for `[Service]`, e.g. `Environment=`), and the socket in
    /// [`SystemdSandbox::shared_dir`]; then starts both units. The socket's path.
    pub fn install_fleetd(&self, fleetd: &Path, service_settings: &str) -> Result<PathBuf, String> {
        const SERVICE: &str = include_str!("../../../contrib/systemd/fleet.service");
        const SOCKET: &str = include_str!("../../../contrib/systemd/fleet.socket");
        let units = self.root().join("run/systemd/system");
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        // In the shared directory (a hard link where it can be, else a copy): the binary's
        // own path may be under the host's /tmp, which the sandbox does not see.
        let copy = self.shared_dir().join("fleetd");
        std::fs::hard_link(fleetd, &copy)
            .or_else(|_| std::fs::copy(fleetd, &copy).map(drop))
            .map_err(|e| format!("{}: {e}", fleetd.display()))?;
        let fleetd = copy.as_path();
        write(units.join("fleet.service"), SERVICE)?;
        write(units.join("fleet.socket"), SOCKET)?;
        let socket = self.shared_dir().join("fleet.sock");
        for (unit, text) in [
            (
                "fleet.service",
                format!(
                    "[Service]\nExecStart=\nExecStart={}\n{service_settings}",
                    fleetd.display()
                ),
            ),
            (
                "fleet.socket",
                format!(
                    "[Socket]\nListenStream=\nListenStream={}\n",
                    socket.display()
                ),
            ),
        ] {
            let dir = units.join(format!("{unit}.d"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            write(dir.join("test.conf"), &text)?;
        }
        self.systemctl(&["daemon-reload"])?;
        self.systemctl(&["start", "fleet.socket", "fleet.service"])?;
        Ok(socket)
    }

    /// What the sandbox's boot printed (for failure messages).
    pub fn console(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("console.log"), read("pid1-console.log"))
    }
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

fn only_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Where cgroup2 is mounted on this host (`.../unified` on hybrid hosts).
fn cgroup2_root() -> &'static Path {
    match Path::new("/sys/fs/cgroup/unified").is_dir() {
        true => Path::new("/sys/fs/cgroup/unified"),
        false => Path::new("/sys/fs/cgroup"),
    }
}

/// The sandbox's cgroup (`test-systemd-<dir name>`) and everything systemd made under it:
/// any process still in it is killed (`cgroup.kill`), then the directories go, deepest first.
fn remove_cgroup(name: &str) {
    let top = cgroup2_root().join(format!("test-systemd-{name}"));
    if !top.is_dir() {
        return;
    }
    let mut dirs = Vec::new();
    collect_dirs(&top, &mut dirs);
    let populated = || {
        dirs.iter().any(|d| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        })
    };
    if populated() {
        let _ = std::fs::write(top.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while populated() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

impl Drop for SystemdSandbox {
    /// systemd exits on SIGRTMIN+4 (about 0.1 s); if it does not within 10 s, its PID
    /// namespace ends with a SIGKILL of PID 1. Then the cgroup goes.
    fn drop(&mut self) {
        if self.pid1 != 0 {
            let _ = Command::new("bash")
                .args(["-c", &format!("kill -s SIGRTMIN+4 {}", self.pid1)])
                .status();
        }
        if !crate::exits_within(&mut self.outer, Duration::from_secs(10)) {
            if self.pid1 != 0 {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid1.to_string()])
                    .status();
            }
            let _ = self.outer.kill();
            let _ = self.outer.wait();
        }
        if let Some(name) = self.dir.path().file_name().and_then(|n| n.to_str()) {
            remove_cgroup(name);
        }
    }
}
