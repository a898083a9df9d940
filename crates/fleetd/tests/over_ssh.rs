//! fleetctl's ssh paths against real parts: two fleetd binaries on a real etcd, a real sshd
//! on loopback standing for the second machine, the real fleetctl on both ends (the fleetd
//! binary called as `fleetctl`, through a link).
//! Covers `ssh` (by machine and by unit), `status` and `journal` (also `--follow`) of a unit
//! on another machine, known-hosts checking, and `--tunnel` (fleet's
//! TestTunnelScheduleBatchUnits).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, holds};
use fleet_testkit::{EtcdServer, SshServer};

mod common;

const MACHINE_A: &str = "aaaa1111000000000000000000000000";
const MACHINE_B: &str = "bbbb2222000000000000000000000000";
const WITHIN: Duration = Duration::from_secs(20);

/// A fleetd binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct Fleetd {
    child: Child,
    home: PathBuf,
}

impl Fleetd {
    fn start(home: &Path, machine: &str, etcd: &EtcdServer) -> Fleetd {
        std::fs::create_dir_all(home).unwrap();
        std::fs::write(home.join("fleet.conf"), "").unwrap();
        let child = common::fleetd(home, machine)
            .arg("--config")
            .arg(home.join("fleet.conf"))
            .env("PATH", "/usr/bin:/bin")
            .env("FLEET_PUBLIC_IP", "127.0.0.1")
            .env("FLEET_ETCD_SERVERS", etcd.endpoint())
            .env("FLEET_AGENT_TTL", "3s")
            .spawn()
            .unwrap();
        let fleetd = Fleetd {
            child,
            home: home.to_owned(),
        };
        let socket = fleetd.socket();
        eventually("fleetd never served its socket", WITHIN, || {
            holds(socket.exists())
        });
        fleetd
    }

    fn socket(&self) -> PathBuf {
        self.home.join("fleet.sock")
    }
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !fleet_testkit::exits_within(&mut self.child, Duration::from_secs(10)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two machines on one etcd, and an sshd whose sessions are machine B (their fleetctl talks
/// to B's fleetd).
struct Cluster {
    // Dropped in this order: the fleetds leave (stopping their units) while etcd and their
    // directories still exist.
    a: Fleetd,
    _b: Fleetd,
    sshd: SshServer,
    _etcd: EtcdServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let etcd = EtcdServer::start();
        let dir = tempfile::tempdir().unwrap();
        let fleetd = Path::new(env!("CARGO_BIN_EXE_fleetd"));
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(fleetd, bin.join("fleetctl")).unwrap();
        let a = Fleetd::start(&dir.path().join("a"), MACHINE_A, &etcd);
        let b = Fleetd::start(&dir.path().join("b"), MACHINE_B, &etcd);
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let endpoint = format!("unix://{}", b.socket().display());
        let sshd = SshServer::start(&[("PATH", &path), ("FLEETCTL_ENDPOINT", &endpoint)]).unwrap();
        std::fs::write(
            dir.path().join("known_hosts"),
            format!("{}\n", sshd.known_hosts_line()),
        )
        .unwrap();
        let cluster = Cluster {
            a,
            _b: b,
            sshd,
            _etcd: etcd,
            dir,
        };
        eventually("both machines never joined", WITHIN, || {
            let (code, out, err) = cluster.fleetctl(&["list-machines", "--no-legend"]);
            match (code, out.lines().count()) {
                (0, 2) => Ok(()),
                _ => Err(format!("{out}{err}")),
            }
        });
        cluster
    }

    /// The fleetctl binary, on machine A's socket, with the agent and known hosts of the test.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.dir.path().join("bin/fleetctl"));
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("SSH_AUTH_SOCK", self.sshd.agent_socket())
            .env("FLEETCTL_SSH_USERNAME", self.sshd.user())
            .env(
                "FLEETCTL_ENDPOINT",
                format!("unix://{}", self.a.socket().display()),
            )
            .env(
                "FLEETCTL_KNOWN_HOSTS_FILE",
                self.dir.path().join("known_hosts"),
            )
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs fleetctl (bounded by the ssh and request timeouts it is given); (code, out, err).
    fn fleetctl(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn port(&self) -> String {
        format!("--ssh-port={}", self.sshd.port())
    }

    /// A unit file in the test's directory; its path.
    fn unit_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

const TICKER: &str = "[Unit]\nDescription=Ticks\n\n[Service]\nExecStart=/bin/sh -c 'echo one; echo two; while echo tick; do sleep 0.2; done'\n\n[X-Fleet]\nMachineID=bbbb2222\n";

#[test]
fn ssh_status_and_journal_reach_the_machine_of_the_unit() {
    let cluster = Cluster::start();
    let port = cluster.port();
    let file = cluster.unit_file("ticker.service", TICKER);
    let (code, out, err) = cluster.fleetctl(&["start", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with("Unit ticker.service launched on bbbb2222.../127.0.0.1\n"),
        "{out}"
    );

    // The unit runs on B; fleetctl talks to A, so the log comes over ssh from B's fleetd.
    let (code, out, err) = cluster.fleetctl(&["journal", &port, "--lines", "3", "ticker.service"]);
    assert_eq!(code, 0, "{err}\n{}", cluster.sshd.log());
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains(" bbbb2222 ticker.service: ")),
        "{out}"
    );
    let (code, out, err) = cluster.fleetctl(&[
        "journal",
        &port,
        "--lines=2",
        "--output=cat",
        "ticker.service",
    ]);
    assert_eq!((code, out.as_str()), (0, "tick\ntick\n"), "{err}");

    let (code, out, err) = cluster.fleetctl(&["status", &port, "ticker.service"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("● ticker.service - Ticks\n   Loaded: loaded\n   Active: active (running)\n  Machine: bbbb2222.../127.0.0.1\n\n"),
        "{out}"
    );
    assert!(out.ends_with(" bbbb2222 ticker.service: tick\n"), "{out}");

    // By unit, by machine prefix, with `--`, and what is not there.
    for (args, expected) in [
        (
            vec!["ssh", &port, "ticker.service", "echo", "foo"],
            (0, "foo\n"),
        ),
        (
            vec!["ssh", &port, "bbbb", "--", "echo", "-n", "bar"],
            (0, "bar"),
        ),
        (
            vec!["ssh", &port, "--machine", "bbbb2222", "exit 3"],
            (3, ""),
        ),
    ] {
        let (code, out, err) = cluster.fleetctl(&args);
        assert_eq!((code, out.as_str()), expected, "{args:?}: {err}");
    }
    let (code, _, err) = cluster.fleetctl(&["ssh", &port, "nothing-here", "true"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Unable to proceed: could not find matching unit or machine\n"
        )
    );
    let (code, _, err) = cluster.fleetctl(&["ssh", &port, "--machine", "a", "--unit", "b", "true"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Both machine and unit flags provided, please specify only one.\n"
        )
    );

    // --follow: new records arrive as the unit writes them, until fleetctl is stopped.
    let mut follower = cluster
        .command(&["journal", &port, "--lines=1", "--follow", "ticker.service"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while seen.len() < 6 && Instant::now() < deadline {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(seen.len(), 6, "followed: {seen:?}");
    assert!(
        seen.iter()
            .all(|l| l.ends_with(" bbbb2222 ticker.service: tick")),
        "{seen:?}"
    );
}

#[test]
fn host_keys_are_checked_as_fleet_checked_them() {
    let cluster = Cluster::start();
    let port = cluster.port();
    let known_hosts = cluster.dir.path().join("known_hosts");
    let echo = ["ssh", &port, "bbbb", "echo", "foo"];
    let (code, out, err) = cluster.fleetctl(&echo);
    assert_eq!((code, out.as_str()), (0, "foo\n"), "{err}");

    // A key that is not the host's: refused, whatever the user says.
    let wrong = cluster.sshd.known_hosts_line().replace("AAAA", "AAAB");
    std::fs::write(&known_hosts, format!("{wrong}\n")).unwrap();
    let (code, out, err) = cluster.fleetctl(&echo);
    assert_eq!((code, out.as_str()), (255, ""), "{err}");
    assert!(err.contains("Host key verification failed."), "{err}");

    // An unknown host is not trusted without a terminal to ask on...
    std::fs::write(&known_hosts, "").unwrap();
    let (code, _, err) = cluster.fleetctl(&echo);
    assert_eq!(code, 255, "{err}");
    // ...nor checked at all without strict checking (and nothing is recorded).
    let mut loose = vec!["--strict-host-key-checking=false"];
    loose.extend(echo);
    let (code, out, err) = cluster.fleetctl(&loose);
    assert_eq!((code, out.as_str()), (0, "foo\n"), "{err}");
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), "");
}

#[test]
fn the_api_through_a_tunnel() {
    let cluster = Cluster::start();
    // The bastion is the sshd; on it, fleetctl fd-forward joins the pipe to A's socket.
    let tunnel = format!("--tunnel=127.0.0.1:{}", cluster.sshd.port());
    let first = cluster.unit_file("batch-0.service", "[Service]\nExecStart=/bin/sleep 300\n");
    let (code, out, err) = cluster.fleetctl(&[&tunnel, "start", &first]);
    assert_eq!(code, 0, "{err}\n{}", cluster.sshd.log());
    assert!(out.contains("Unit batch-0.service launched on "), "{out}");
    let mut args = vec![tunnel.clone(), "start".to_owned()];
    for i in 1..=10 {
        let text = "[Service]\nExecStart=/bin/sleep 300\n";
        args.push(cluster.unit_file(&format!("batch-{i}.service"), text));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = cluster.fleetctl(&args);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) =
        cluster.fleetctl(&[&tunnel, "list-units", "--no-legend", "--fields=unit,active"]);
    assert_eq!(code, 0, "{err}");
    let active = out.lines().filter(|l| l.ends_with("\tactive")).count();
    assert_eq!(active, 11, "{out}");

    // ssh through the bastion to the machine of a unit.
    let (code, out, err) =
        cluster.fleetctl(&[&tunnel, "ssh", &cluster.port(), "bbbb", "echo", "via"]);
    assert_eq!((code, out.as_str()), (0, "via\n"), "{err}");

    // A bastion that is not there: a clear error, soon.
    let started = Instant::now();
    let (code, _, err) =
        cluster.fleetctl(&["--tunnel=127.0.0.1:1", "--ssh-timeout=2", "list-units"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_global_unit_is_shown_and_restarted_on_every_machine() {
    let cluster = Cluster::start();
    let port = cluster.port();
    let file = cluster.unit_file(
        "everywhere.service",
        "[Service]\nExecStart=/bin/sh -c 'echo started; exec sleep 300'\n\n[X-Fleet]\nGlobal=true\n",
    );
    // A global unit has no currentState: its desired state is shown (fleet printed
    // `Unit everywhere.service ` and nothing more); after fleet's `Triggered` line, on how many
    // machines it runs (fleet did not wait for a global unit).
    let (code, out, err) = cluster.fleetctl(&["start", &file]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "Unit everywhere.service inactive (global)\nTriggered global unit everywhere.service start\nUnit everywhere.service launched on 2 machines\n"
        ),
        "{err}"
    );
    let both_active = || {
        let (_, out, _) =
            cluster.fleetctl(&["list-units", "--no-legend", "--fields=machine,active"]);
        match out.lines().filter(|l| l.ends_with("\tactive")).count() {
            2 => Ok(()),
            _ => Err(out),
        }
    };
    eventually(
        "the global unit never ran on both machines",
        WITHIN,
        both_active,
    );

    // status: one summary per machine; A's log from its own fleetd, B's over ssh.
    let (code, out, err) = cluster.fleetctl(&["status", &port, "everywhere.service"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("   Active: active (running)\n").count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(" aaaa1111 everywhere.service: started\n"),
        "{out}"
    );
    assert!(
        out.contains(" bbbb2222 everywhere.service: started\n"),
        "{out}"
    );
    let (code, out, err) =
        cluster.fleetctl(&["journal", &port, "--output=short", "everywhere.service"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = cluster.fleetctl(&["journal", &port, "-f", "everywhere.service"]);
    assert_eq!(code, 1);
    assert_eq!(err, "Global unit everywhere.service runs on 2 machines; --follow reads one: add --machine ID.\n");

    // restart: stopped everywhere, then started everywhere (each machine logs a second start).
    let (code, out, err) =
        cluster.fleetctl(&["restart", "--block-attempts=5", "everywhere.service"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "Restarted global unit everywhere.service on 2 machines\n"
        ),
        "{err}"
    );
    let (code, out, err) = cluster.fleetctl(&[
        "journal",
        &port,
        "--output=cat",
        "--machine=bbbb",
        "everywhere.service",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("started").count(), 2, "{out}");
}
