//! The fleetd binary as a daemon: it starts on the embedded registry with the native
//! supervisor, stops cleanly on SIGTERM, and refuses a bad configuration with a message
//! naming the option.

mod common;
use common::{eventually, holds, signal_and_wait, stop, Daemon};
use fleet_testkit::measure::is_live;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fleetd's home, with `conf` as its fleet.conf.
fn configured(conf: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.conf"), conf).unwrap();
    dir
}

fn fleetd(dir: &Path) -> Command {
    let mut command = common::fleetd(dir, "node1");
    command
        .arg("--config")
        .arg(dir.join("fleet.conf"))
        .env("FLEET_PUBLIC_IP", "10.0.0.9")
        .stderr(Stdio::piped());
    command
}

#[test]
fn starts_on_the_embedded_registry_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.conf"),
        "metadata = role=test\nagent_ttl = 5s\n",
    )
    .unwrap();
    let mut child = Daemon(fleetd(dir.path()).spawn().unwrap());
    let lease = dir.path().join("data/machine-lease");
    eventually("fleetd never announced its machine", TEN_SECONDS, || {
        still_running(&mut child)?;
        holds(lease.exists())
    });
    assert!(dir.path().join("data/registry.redb").exists());
    let (status, log) = stopped_with_log(&mut child, "-TERM");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("registry: embedded"), "{log}");
}

#[test]
fn a_bad_configuration_is_refused_with_the_option_named() {
    let dir = configured("agent_ttl = forever\n");
    let output = fleetd(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim(),
        "fleetd: fleet.conf line 1: invalid value \"forever\" for agent_ttl: not a duration like \"30s\" or \"1m30s\""
    );
    let missing = fleetd(dir.path()).arg("extra").output().unwrap();
    assert_eq!(missing.status.code(), Some(2));

    // A machine ID is what systemd makes: 32 lowercase hex digits.
    std::fs::write(dir.path().join("fleet.conf"), "").unwrap();
    let output = fleetd(dir.path())
        .env("FLEET_MACHINE_ID", "xyz")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("machine_id: \"xyz\" is not a machine ID: 32 lowercase hexadecimal digits, as in /etc/machine-id"),
        "{stderr}"
    );
}

#[test]
fn systemd_requested_but_unreachable_stops_fleetd_with_the_reason() {
    let dir = configured("unit_manager = systemd\n");
    let bus = format!("unix:path={}/no-bus", dir.path().display());
    let output = fleetd(dir.path())
        .env("FLEET_UNIT_MANAGER", "systemd")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("systemd is not reachable on the system bus: "),
        "{stderr}"
    );
    assert!(stderr.contains("unit_manager=native"), "{stderr}");
}

/// One HTTP/1.1 request over the unix socket; (status, body).
use fleet_testkit::measure::http_unix as http;

#[test]
fn a_unit_launched_through_the_api_runs() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut child = start_and_wait_for_socket(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the API socket is not world-writable");

    let unit = r#"{"desiredState":"launched","name":"hello.service","options":[{"name":"ExecStart","section":"Service","value":"/bin/sleep 30"}]}"#;
    let requested = Instant::now();
    assert_eq!(
        http(
            &socket,
            "PUT",
            "/fleet/v1/units/hello.service?alt=json",
            Some(unit)
        )
        .0,
        201
    );
    running_pid(&socket);
    eprintln!(
        "PUT launched to running through fleetd's API: {:?}",
        requested.elapsed()
    );
    let (status, body) = http(
        &socket,
        "GET",
        "/fleet/v1/units/hello.service?alt=json",
        None,
    );
    assert_eq!(status, 200);
    assert!(body.starts_with(r#"{"currentState":"launched","desiredState":"launched","machineID":"6e6f646531000000000000000f4e2874","name":"hello.service","options":["#), "{body}");
    let (status, metrics) = http(&socket, "GET", "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "fleet_units{state=\"launched\"} 1",
        "fleet_machines 1",
        "fleet_engine_leader 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let (status, body) = http(
        &socket,
        "GET",
        "/fleet/v1/units/missing.service?alt=json",
        None,
    );
    assert_eq!(
        (status, body.as_str()),
        (
            404,
            r#"{"error":{"code":404,"message":"unit does not exist"}}"#
        )
    );

    assert_eq!(
        http(
            &socket,
            "PUT",
            "/fleet/v1/units/hello.service?alt=json",
            Some(r#"{"desiredState":"inactive","name":"hello.service"}"#)
        )
        .0,
        204
    );
    assert_eq!(
        http(
            &socket,
            "DELETE",
            "/fleet/v1/units/hello.service?alt=json",
            None
        )
        .0,
        204
    );
    eventually("state never withdrawn", Duration::from_secs(15), || {
        let (status, body) = http(
            &socket,
            "GET",
            "/fleet/v1/state/hello.service?alt=json",
            None,
        );
        (status == 404)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    stop(&mut child, "-TERM");
    assert!(!socket.exists(), "the socket is removed on the way out");
}

const TEN_SECONDS: Duration = Duration::from_secs(10);

/// `Err` when `child` has exited: a wait for it to do something can stop there.
fn still_running(child: &mut Child) -> Result<(), String> {
    match child.try_wait().unwrap() {
        None => Ok(()),
        Some(status) => panic!("fleetd exited early: {status:?}"),
    }
}

fn start_and_wait_for_socket(dir: &Path) -> Daemon {
    common::serving(fleetd(dir), dir)
}

/// The main PID of hello.service once it runs.
fn running_pid(socket: &Path) -> u32 {
    eventually("never running", Duration::from_secs(15), || {
        let (status, body) = http(
            socket,
            "GET",
            "/fleet/v1/state/hello.service?alt=json",
            None,
        );
        let running = status == 200 && body.contains(r#""systemdSubState":"running""#);
        running.then_some(()).ok_or(format!("{status} {body}"))
    });
    let dir = socket.parent().unwrap();
    let state = std::fs::read_to_string(dir.join("run/native/hello.service/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    state["main_pid"].as_u64().unwrap() as u32
}

/// The PID of hello.service's shim, as its run directory says.
fn hello_shim(dir: &Path) -> u32 {
    let pid = std::fs::read_to_string(dir.join("run/native/hello.service/shim.pid")).unwrap();
    pid.trim().parse().unwrap()
}

/// Launches hello.service (a sleep) through the API; the PID of its process once it runs.
fn launch_sleeper(socket: &Path) -> u32 {
    let unit = r#"{"desiredState":"launched","name":"hello.service","options":[{"name":"ExecStart","section":"Service","value":"/bin/sleep 60"}]}"#;
    let (status, body) = http(
        socket,
        "PUT",
        "/fleet/v1/units/hello.service?alt=json",
        Some(unit),
    );
    assert_eq!(status, 201, "{body}");
    running_pid(socket)
}

#[test]
fn sigquit_leaves_units_running_for_the_next_fleetd_and_sigterm_unloads_them() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut first = start_and_wait_for_socket(dir.path());
    let pid = launch_sleeper(&socket);

    // An upgrade: SIGQUIT stops fleetd only; the next one finds the same process running.
    stop(&mut first, "-QUIT");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the unit survived"
    );
    let mut second = start_and_wait_for_socket(dir.path());
    assert_eq!(running_pid(&socket), pid, "re-attached, not restarted");

    // Leaving: SIGTERM unloads the units.
    stop(&mut second, "-TERM");
    eventually(
        "the unit still runs after SIGTERM",
        Duration::from_secs(5),
        || {
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline"));
            match cmdline {
                Ok(c) if c.contains("sleep") => Err(c),
                _ => Ok(()),
            }
        },
    );
    assert!(!dir.path().join("units/hello.service").exists(), "unloaded");
}

#[test]
fn readiness_is_notified_when_systemd_asks_for_it() {
    let dir = configured("");
    let notify = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = fleetd(dir.path())
        .env("NOTIFY_SOCKET", &notify)
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 64];
    let size = listener.recv(&mut buffer).expect("READY=1 within 10 s");
    assert_eq!(&buffer[..size], b"READY=1");
    assert!(
        UnixStream::connect(dir.path().join("fleet.sock")).is_ok(),
        "ready means serving"
    );
    stop(&mut child, "-TERM");
}

#[test]
fn sighup_reloads_metadata_and_keeps_serving() {
    let dir = configured("metadata = role=a\n");
    let socket = dir.path().join("fleet.sock");
    let mut child = start_and_wait_for_socket(dir.path());
    let machines = |want: &str| {
        eventually(
            &format!("machines never showed {want}"),
            TEN_SECONDS,
            || {
                let (status, body) = http(&socket, "GET", "/fleet/v1/machines?alt=json", None);
                (status == 200 && body.contains(want))
                    .then_some(())
                    .ok_or(body)
            },
        )
    };
    machines(r#""metadata":{"role":"a"}"#);
    std::fs::write(dir.path().join("fleet.conf"), "metadata = role=b, zone=1\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    machines(r#""metadata":{"role":"b","zone":"1"}"#);
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // A broken file is refused, saying so; the running configuration stays.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            kept.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    std::fs::write(dir.path().join("fleet.conf"), "agent_ttl = soon\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    eventually("the broken configuration refused", TEN_SECONDS, || {
        let log = log.lock().unwrap();
        match log.contains("configuration not reloaded") && log.contains("agent_ttl") {
            true => Ok(()),
            false => Err(log.clone()),
        }
    });
    machines(r#""metadata":{"role":"b","zone":"1"}"#);
    stop(&mut child, "-TERM");
}

#[test]
fn socket_activation_serves_the_socket_systemd_passes() {
    let dir = configured("");
    let socket = dir.path().join("activated.sock");
    // systemd's own tool: binds the socket and runs fleetd with LISTEN_FDS=1, LISTEN_PID.
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg(format!(
            "FLEET_DATA_DIR={}",
            dir.path().join("data").display()
        ))
        .arg("-E")
        .arg(format!(
            "FLEET_RUNTIME_DIR={}",
            dir.path().join("run").display()
        ))
        .arg("-E")
        .arg(format!(
            "FLEET_UNITS_DIRECTORY={}",
            dir.path().join("units").display()
        ))
        .arg("-E")
        .arg(format!(
            "FLEET_MACHINE_ID={}",
            fleet_testkit::machine_id("node1")
        ))
        .arg("-E")
        .arg("FLEET_UNIT_MANAGER=native")
        .arg(env!("CARGO_BIN_EXE_fleetd"))
        .arg("--config")
        .arg(dir.path().join("fleet.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("systemd-socket-activate never bound", TEN_SECONDS, || {
        holds(socket.exists())
    });
    // The first connection starts fleetd, which answers on the passed socket.
    let (status, body) = http(&socket, "GET", "/fleet/v1/machines?alt=json", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        !dir.path().join("fleet.sock").exists(),
        "api_listen was not bound as well"
    );
    stop(&mut child, "-TERM");
}

/// Runs the fleetctl library against the fleetd in `dir`; (exit code, stdout, stderr).
fn fleetctl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let endpoint = format!("--endpoint=unix://{}", dir.join("fleet.sock").display());
    let mut all = vec![endpoint.as_str()];
    all.extend_from_slice(args);
    common::fleetctl(&all, &[])
}

/// Writes the unit file `name` into `dir`; its path, for fleetctl.
fn unit_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// fleetctl's standard output, once it has exited 0.
fn fleetctl_ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = fleetctl(dir, args);
    assert_eq!(code, 0, "fleetctl {args:?}: {err}");
    out
}

#[test]
fn fleetctl_starts_units_and_says_why_one_cannot_be_placed() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let hello = dir.path().join("hello.service");
    std::fs::write(&hello, "[Service]\nExecStart=/bin/sleep 30\n").unwrap();
    let (code, out, err) = fleetctl(dir.path(), &["start", hello.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Unit hello.service inactive\nUnit hello.service launched on 6e6f6465.../10.0.0.9\n"
    );
    let (code, out, _) = fleetctl(dir.path(), &["list-units", "--no-legend"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hello.service\t6e6f6465.../10.0.0.9\tactive\trunning\n")
    );

    let mars = dir.path().join("mars.service");
    std::fs::write(
        &mars,
        "[Service]\nExecStart=/bin/sleep 30\n[X-Fleet]\nMachineMetadata=region=mars\n",
    )
    .unwrap();
    let (code, _, err) = fleetctl(
        dir.path(),
        &["start", "--block-attempts=1", mars.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("Unit mars.service cannot be placed yet: no machine has region=mars"),
        "{err}"
    );

    // fleet's fleetctl waited for a failed unit forever; the agent starts it once.
    let broken = dir.path().join("broken.service");
    // Fails before it is ever active (a simple service that exits is active for a moment).
    std::fs::write(
        &broken,
        "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/sleep 30\n",
    )
    .unwrap();
    let (code, out, err) = fleetctl(dir.path(), &["start", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err,
        "Unit broken.service failed to start on 6e6f646531000000000000000f4e2874: failed (failed); \
         /bin/false exited, code=exited, status=1.\n"
    );
    let (_, out, _) = fleetctl(dir.path(), &["list-unit-files", "--no-legend"]);
    assert!(out.contains("broken.service\t"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("broken.service") && l.contains("launched\tlaunched")),
        "a failed unit is still launched, as in fleet: {out}"
    );
    stop(&mut child, "-TERM");
}

#[test]
fn a_second_fleetd_with_the_same_machine_id_is_refused() {
    // Both on one etcd, so the second sees the first's live machine lease.
    let etcd = fleet_testkit::EtcdServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("fleet.conf"), "").unwrap();
        let mut command = fleetd(&sub);
        command.env("FLEET_ETCD_SERVERS", etcd.endpoint());
        command
    };
    let mut first = Daemon(start("one").spawn().unwrap());
    let lease = dir.path().join("one/data/machine-lease");
    eventually("the first never announced itself", TEN_SECONDS, || {
        still_running(&mut first)?;
        holds(lease.exists())
    });
    let second = start("two").output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(
            "machine ID 6e6f646531000000000000000f4e2874 is already in use by another live fleetd"
        ),
        "{stderr}"
    );
    stop(&mut first, "-TERM");
}

#[test]
fn a_fleetd_killed_with_sigkill_is_replaced_without_restarting_its_units() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut first = start_and_wait_for_socket(dir.path());
    let pid = launch_sleeper(&socket);
    first.kill().unwrap(); // SIGKILL: no handler, no cleanup
    first.wait().unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the unit outlived fleetd"
    );
    let mut second = start_and_wait_for_socket(dir.path());
    assert_eq!(running_pid(&socket), pid, "re-adopted, not restarted");
    stop(&mut second, "-TERM");
}

/// The parent of `pid`, from /proc.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state, then the parent's PID.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The signals `pid` ignores, as /proc shows the mask.
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .unwrap();
    u64::from_str_radix(mask.trim(), 16).unwrap()
}

/// Shims are forked by fleetd's zygote (no binary executed per unit), which ends with fleetd
/// while the shims and their units run on; a unit does not inherit the zygote's ignored
/// SIGCHLD (a shell waiting for its children would break).
#[test]
fn shims_are_forked_by_a_zygote_that_ends_with_fleetd() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut first = start_and_wait_for_socket(dir.path());
    let unit = launch_sleeper(&socket);
    let shim = hello_shim(dir.path());
    let zygote = parent_of(shim);
    assert_ne!(zygote, first.id(), "the shim was not executed by fleetd");
    assert_eq!(
        parent_of(zygote),
        first.id(),
        "the zygote is fleetd's child"
    );
    const SIGCHLD_BIT: u64 = 1 << (17 - 1);
    assert_eq!(
        ignored_signals(unit) & SIGCHLD_BIT,
        0,
        "the unit handles SIGCHLD"
    );
    assert_eq!(
        ignored_signals(shim) & SIGCHLD_BIT,
        0,
        "the shim handles SIGCHLD"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    eventually(
        "the zygote outlived fleetd",
        TEN_SECONDS,
        || match is_live(zygote) {
            true => Err(format!("zygote {zygote} still runs")),
            false => Ok(()),
        },
    );
    assert!(
        is_live(shim) && is_live(unit),
        "the shim and its unit live on"
    );
    let mut second = start_and_wait_for_socket(dir.path());
    assert_eq!(running_pid(&socket), unit, "re-adopted, not restarted");
    stop(&mut second, "-TERM");
}

/// When the zygote is gone (killed, as an OOM killer might), shims are executed instead and
/// units still start.
#[test]
fn without_its_zygote_fleetd_executes_shims() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut fleetd = start_and_wait_for_socket(dir.path());
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| is_live(*pid) && parent_of(*pid) == fleetd.id())
        .collect();
    let [zygote] = children[..] else {
        panic!("fleetd has one child, its zygote: {children:?}")
    };
    let killed = Command::new("kill")
        .args(["-KILL", &zygote.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually(
        "the zygote survived SIGKILL",
        TEN_SECONDS,
        || match is_live(zygote) {
            true => Err(String::new()),
            false => Ok(()),
        },
    );
    launch_sleeper(&socket);
    let shim = hello_shim(dir.path());
    assert_eq!(parent_of(shim), fleetd.id(), "executed by fleetd itself");
    stop(&mut fleetd, "-TERM");
}

/// fleetctl works on several units at once but prints as it did one after another: every
/// unit's lines in the order given; an invalid name ends the command there, with the units
/// before it submitted and none after it.
#[test]
fn fleetctl_submits_many_units_at_once_and_reports_them_in_order() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let files: Vec<String> = (0..40)
        .map(|i| {
            let path = dir.path().join(format!("many{i:02}.service"));
            std::fs::write(&path, "[Service]\nExecStart=/bin/sleep 30\n").unwrap();
            path.display().to_string()
        })
        .collect();
    let mut args = vec!["start", "--no-block"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = fleetctl(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let expected: String = (0..40)
        .map(|i| format!("Unit many{i:02}.service inactive\n"))
        .chain((0..40).map(|i| format!("Triggered unit many{i:02}.service start\n")))
        .collect();
    assert_eq!(out, expected);

    let first = dir.path().join("first.service");
    let after = dir.path().join("after.service");
    for path in [&first, &after] {
        std::fs::write(path, "[Service]\nExecStart=/bin/sleep 30\n").unwrap();
    }
    let (first, after) = (first.display().to_string(), after.display().to_string());
    let (code, out, err) = fleetctl(dir.path(), &["submit", &first, "in valid", &after]);
    assert_eq!(
        (code, out.as_str()),
        (1, "Unit first.service inactive\n"),
        "{err}"
    );
    assert!(err.starts_with("Error creating units: "), "{err}");
    let (_, listed, _) = fleetctl(dir.path(), &["list-unit-files", "--no-legend"]);
    assert!(listed.contains("first.service"), "{listed}");
    assert!(!listed.contains("after.service"), "{listed}");
    stop(&mut child, "-TERM");
}

#[test]
fn fleetctl_moves_a_unit_through_every_state() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let file = dir.path().join("web.service");
    let text = "[Unit]\nDescription=Web\n\n[Service]\nExecStart=/bin/sleep 30\n";
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let on = "on 6e6f6465.../10.0.0.9";
    let steps: &[(&[&str], i32, String, String)] = &[
        (
            &["submit", path],
            0,
            "Unit web.service inactive\n".into(),
            String::new(),
        ),
        (
            &["cat", "web.service"],
            0,
            "[Unit]\nDescription=Web\n\n[Service]\nExecStart=/bin/sleep 30\n".into(),
            String::new(),
        ),
        (
            &["load", path],
            0,
            format!("Unit web.service loaded {on}\n"),
            String::new(),
        ),
        (
            &["start", "web.service"],
            0,
            format!("Unit web.service launched {on}\n"),
            String::new(),
        ),
        (
            &["restart", "web.service"],
            0,
            format!("Unit web.service loaded {on}\nUnit web.service launched {on}\n"),
            String::new(),
        ),
        (
            &["stop", "web.service"],
            0,
            format!("Unit web.service loaded {on}\n"),
            "Successfully stopped units [web.service].\n".into(),
        ),
        (
            &["unload", "web.service"],
            0,
            "Unit web.service inactive\n".into(),
            "Successfully unloaded units [web.service].\n".into(),
        ),
        (
            &["stop", "web.service"],
            1,
            String::new(),
            "Unable to stop unit web.service in state inactive\n".into(),
        ),
        (
            &["destroy", "web.service"],
            0,
            "Destroyed web.service\n".into(),
            String::new(),
        ),
        (
            &["destroy", "web.service"],
            0,
            String::new(),
            "Units not found in registry\n".into(),
        ),
        (
            &["cat", "web.service"],
            1,
            String::new(),
            "Unit web.service not found\n".into(),
        ),
    ];
    for (args, code, out, err) in steps {
        let got = fleetctl(dir.path(), args);
        assert_eq!(got, (*code, out.clone(), err.clone()), "fleetctl {args:?}");
    }
    stop(&mut child, "-TERM");
}

use fleet_testkit::free_port;

/// Starts fleetd with an https listener and the given extra configuration; its URL.
fn start_https(dir: &Path, tls: &fleet_testkit::TlsFiles, extra: &str) -> (Daemon, String) {
    let url = format!("https://127.0.0.1:{}", free_port());
    let tls_files = format!(
        "api_tls_cert_file = {}\napi_tls_key_file = {}\n{extra}",
        tls.server_cert.display(),
        tls.server_key.display()
    );
    (serve_also_on(dir, &url, &tls_files), url)
}

/// fleetd serving its unix socket and `url`, with `extra` in its fleet.conf.
fn serve_also_on(dir: &Path, url: &str, extra: &str) -> Daemon {
    let conf = format!(
        "api_listen = unix://{}/fleet.sock,{url}\n{extra}",
        dir.display()
    );
    std::fs::write(dir.join("fleet.conf"), conf).unwrap();
    let mut command = fleetd(dir);
    command.env_remove("FLEET_API_LISTEN");
    let daemon = common::serving(command, dir);
    // The machine announces itself a moment after the API answers: the tests list it.
    eventually("the machine announced", TEN_SECONDS, || {
        let socket = dir.join("fleet.sock");
        let (status, body) =
            fleet_testkit::measure::http_unix(&socket, "GET", "/fleet/v1/machines", None);
        holds(status == 200 && body.contains("\"id\"")).map_err(|_| body)
    });
    daemon
}

/// Stops `child` with `signal`: its exit status and what it logged.
fn stopped_with_log(child: &mut Child, signal: &str) -> (std::process::ExitStatus, String) {
    let status = signal_and_wait(child, signal);
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (status, log)
}

#[test]
fn https_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let tls = fleet_testkit::TlsFiles::generate(dir.path()).unwrap();
    let (mut child, url) = start_https(
        dir.path(),
        &tls,
        &format!("api_tls_client_ca_file = {}\n", tls.ca.display()),
    );
    let endpoint = format!("--endpoint={url}");
    let ca = format!("--ca-file={}", tls.ca.display());
    let cert = format!("--cert-file={}", tls.client_cert.display());
    let key = format!("--key-file={}", tls.client_key.display());
    let (code, out, err) = common::fleetctl(
        &[&endpoint, &ca, &cert, &key, "list-machines", "--no-legend"],
        &[],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "6e6f6465...\t10.0.0.9\t-\n"),
        "{err}"
    );
    // Without a client certificate the handshake is refused.
    let (code, _, err) = common::fleetctl(&[&endpoint, &ca, "list-machines"], &[]);
    assert_eq!(code, 1, "{err}");
    // Without our CA, fleetd's certificate is not trusted; without any CA, https is refused.
    let (code, _, err) = common::fleetctl(&[&endpoint, "list-machines"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("an https endpoint needs --ca-file"), "{err}");
    stop(&mut child, "-TERM");
}

#[test]
fn https_with_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let tls = fleet_testkit::TlsFiles::generate(dir.path()).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let (mut child, url) = start_https(
        dir.path(),
        &tls,
        &format!("api_token_file = {}\n", token_file.display()),
    );
    let endpoint = format!("--endpoint={url}");
    let ca = format!("--ca-file={}", tls.ca.display());
    let with_token = [("FLEETCTL_API_TOKEN", "s3cret-token-0123456789")];
    // Clients that never start their handshake hold up nobody else's (each had held the
    // listener for 10 s, one after another).
    let address = url.trim_start_matches("https://");
    let _silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(address).unwrap())
        .collect();
    let asked = Instant::now();
    let (code, out, err) = common::fleetctl(
        &[&endpoint, &ca, "list-machines", "--no-legend"],
        &with_token,
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "6e6f6465...\t10.0.0.9\t-\n"),
        "{err}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        asked.elapsed()
    );
    let (code, _, err) = common::fleetctl(&[&endpoint, &ca, "list-machines"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("googleapi: Error 401: missing or wrong bearer token"),
        "{err}"
    );
    // The token in a file (never on the command line, where ps shows it).
    let from_file = format!("--api-token-file={}", token_file.display());
    let (code, _, err) = common::fleetctl(&[&endpoint, &ca, &from_file, "list-machines"], &[]);
    assert_eq!(code, 0, "{err}");
    let wrong = [("FLEETCTL_API_TOKEN", "s3cret-token-0123456780")];
    assert_eq!(
        common::fleetctl(&[&endpoint, &ca, "list-machines"], &wrong).0,
        1
    );
    // The unix socket needs no token: its file mode is the access control.
    let (code, _, _) = fleetctl(dir.path(), &["list-machines"]);
    assert_eq!(code, 0);
    stop(&mut child, "-TERM");
}

/// What fleetd writes may hold a unit's secrets (its file, its environment, its output): 0600
/// files in 0700 directories. The unit itself gets systemd's default umask (0022).
#[test]
fn what_fleetd_writes_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let made = dir.path().join("made-by-the-unit");
    let file = unit_file(
        dir.path(),
        "secret.service",
        &format!(
            "[Service]\nEnvironment=PASSWORD=hunter2\nExecStart=/bin/sh -c 'echo $PASSWORD; touch {}; exec sleep 30'\n",
            made.display()
        ),
    );
    fleetctl_ok(dir.path(), &["start", &file]);
    eventually("the unit made its file", TEN_SECONDS, || {
        holds(made.exists())
    });
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let home = dir.path();
    for (path, expected) in [
        (home.join("data"), 0o700),
        (home.join("data/registry.redb"), 0o600),
        (home.join("data/logs/secret.service"), 0o600),
        (home.join("units/secret.service"), 0o600),
        (home.join("run/native/secret.service/spec.json"), 0o600),
        (home.join("fleet.sock"), 0o660),
        (made.clone(), 0o644),
    ] {
        assert_eq!(
            mode(&path),
            expected,
            "{}: {:o}",
            path.display(),
            mode(&path)
        );
    }
    stop(&mut child, "-TERM");
}

/// Plain http on loopback is served only with a bearer token: any local user reaches it, and
/// fleetd runs units as root.
#[test]
fn plain_http_on_loopback_needs_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let token = format!("api_token_file = {}\n", token_file.display());
    let mut child = serve_also_on(dir.path(), &url, &token);
    let endpoint = format!("--endpoint={url}");
    let (code, _, err) = common::fleetctl(&[&endpoint, "list-machines"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("googleapi: Error 401: missing or wrong bearer token"),
        "{err}"
    );
    let with_token = [("FLEETCTL_API_TOKEN", "s3cret-token-0123456789")];
    let (code, out, err) =
        common::fleetctl(&[&endpoint, "list-machines", "--no-legend"], &with_token);
    assert_eq!(
        (code, out.as_str()),
        (0, "6e6f6465...\t10.0.0.9\t-\n"),
        "{err}"
    );
    stop(&mut child, "-TERM");
}

/// `api_allow_unauthenticated_loopback` serves plain http on loopback without a token, and
/// says at start what that allows.
#[test]
fn unauthenticated_loopback_only_when_asked_for_and_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let opt_in = "api_allow_unauthenticated_loopback = true\n";
    let mut child = serve_also_on(dir.path(), &url, opt_in);
    let endpoint = format!("--endpoint={url}");
    let (code, _, err) = common::fleetctl(&[&endpoint, "list-machines"], &[]);
    assert_eq!(code, 0, "{err}");
    let (_, log) = stopped_with_log(&mut child, "-TERM");
    assert!(
        log.contains("any local user can run units as root through this listener"),
        "{log}"
    );
}

#[test]
fn a_network_api_without_tls_or_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = fleet_testkit::TlsFiles::generate(dir.path()).unwrap();
    let cases = [
        (
            format!("api_listen = https://127.0.0.1:{}\napi_tls_cert_file = {}\napi_tls_key_file = {}\n", free_port(), tls.server_cert.display(), tls.server_key.display()),
            "an API on the network needs authentication",
        ),
        (format!("api_listen = http://0.0.0.0:{}\n", free_port()), "plain http on the network sends everything in the clear"),
        (format!("api_listen = http://0.0.0.0:{}\napi_allow_plain_tcp = true\n", free_port()), "a TCP listener needs authentication, on loopback too"),
        (format!("api_listen = http://127.0.0.1:{}\n", free_port()), "a TCP listener needs authentication, on loopback too"),
        (format!("api_listen = https://127.0.0.1:{}\napi_token_file = /no/such/token\n", free_port()), "https needs api_tls_cert_file and api_tls_key_file"),
    ];
    for (conf, expected) in cases {
        std::fs::write(dir.path().join("fleet.conf"), &conf).unwrap();
        let mut command = fleetd(dir.path());
        command.env_remove("FLEET_API_LISTEN");
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{conf}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{conf}: {stderr}");
    }
}

#[test]
fn fleetctl_journal_shows_a_units_output() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let file = unit_file(
        dir.path(),
        "talk.service",
        "[Service]\nExecStart=/bin/sh -c 'echo one; echo two; echo three; exec sleep 30'\n",
    );
    fleetctl_ok(dir.path(), &["start", &file]);
    let out = eventually("never two lines", TEN_SECONDS, || {
        let (code, out, err) = fleetctl(dir.path(), &["journal", "--lines", "2", "talk.service"]);
        assert_eq!(code, 0, "{err}");
        match out.lines().count() {
            2 => Ok(out),
            _ => Err(out),
        }
    });
    let texts: Vec<&str> = out
        .lines()
        .map(|l| l.split_once(" talk.service: ").unwrap().1)
        .collect();
    assert_eq!(texts, vec!["two", "three"]);
    assert!(
        out.lines().all(|l| l.contains(" 6e6f6465 talk.service: ")),
        "{out}"
    );
    let status = fleetctl_ok(dir.path(), &["status", "talk.service"]);
    assert!(
        status.starts_with("● talk.service\n   Loaded: loaded\n   Active: active (running)\n  Machine: 6e6f6465.../10.0.0.9\n\n"),
        "{status}"
    );
    assert!(
        status.ends_with(" 6e6f6465 talk.service: three\n"),
        "the log follows: {status}"
    );
    let (code, _, err) = fleetctl(dir.path(), &["journal", "nope.service"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Unit nope.service does not exist.\n")
    );

    // A client following the log does not hold up fleetd's shutdown: the stream ends, and
    // so does `journal -f`.
    let fleetctl_binary = dir.path().join("fleetctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fleetd"), &fleetctl_binary).unwrap();
    let endpoint = format!(
        "--endpoint=unix://{}",
        dir.path().join("fleet.sock").display()
    );
    let mut follower = Daemon(
        Command::new(&fleetctl_binary)
            .args([
                endpoint.as_str(),
                "journal",
                "-f",
                "--lines=1",
                "talk.service",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    let stdout = follower.stdout.take().unwrap();
    let mut stdout = std::io::BufReader::new(stdout);
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert!(first.ends_with(" talk.service: three\n"), "{first}");
    let stopping = Instant::now();
    stop(&mut child, "-TERM");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "fleetd took {:?} to stop with a journal followed",
        stopping.elapsed()
    );
    let ended = eventually("journal -f ends with fleetd", TEN_SECONDS, || {
        follower.try_wait().unwrap().ok_or_else(String::new)
    });
    assert!(ended.success(), "{ended:?}");
}

/// `status` of an instance shows its description as systemd would: specifiers resolved by
/// the machine (fleet's documented `Apache web server on port %i`).
#[test]
fn fleetctl_status_shows_the_description_with_its_specifiers_resolved() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let template = unit_file(
        dir.path(),
        "web@.service",
        "[Unit]\nDescription=Web server on port %i of %m\n\n[Service]\nExecStart=/bin/sleep 30\n",
    );
    fleetctl_ok(dir.path(), &["submit", &template]);
    fleetctl_ok(dir.path(), &["start", "web@8080.service"]);
    let status = fleetctl_ok(dir.path(), &["status", "web@8080.service"]);
    let machine = fleet_testkit::machine_id("node1");
    let first = status.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("● web@8080.service - Web server on port 8080 of {machine}"),
        "{status}"
    );
    stop(&mut child, "-TERM");
}

#[test]
fn replace_follows_fleets_rules() {
    let dir = configured("");
    let mut child = start_and_wait_for_socket(dir.path());
    let file = dir.path().join("app.service");
    let path = file.to_str().unwrap().to_owned();
    std::fs::write(&file, "[Service]\nExecStart=/bin/sleep 30\n").unwrap();
    assert_eq!(fleetctl(dir.path(), &["submit", &path]).0, 0);
    std::fs::write(&file, "[Service]\nExecStart=/bin/sleep 31\n").unwrap();
    let warned = fleetctl(dir.path(), &["submit", &path]);
    assert_eq!(
        warned,
        (0, String::new(), format!("WARNING: Unit app.service in registry differs from local unit file {path}. Add --replace to override.\n"))
    );
    let replaced = fleetctl(dir.path(), &["submit", "--replace", &path]);
    assert_eq!(
        replaced,
        (0, "Unit app.service inactive\n".to_owned(), String::new())
    );
    assert!(fleetctl(dir.path(), &["cat", "app.service"])
        .1
        .contains("sleep 31"));
    let same = fleetctl(dir.path(), &["submit", "--replace", &path]);
    assert_eq!(
        same.1,
        "Found same Unit(app.service) in Registry, nothing to do\n"
    );
    // A launched unit: submit may not replace it, start may (it starts over and runs again).
    assert_eq!(fleetctl(dir.path(), &["start", &path]).0, 0);
    std::fs::write(&file, "[Service]\nExecStart=/bin/sleep 32\n").unwrap();
    let refused = fleetctl(dir.path(), &["submit", "--replace", &path]);
    assert_eq!(
        refused,
        (0, String::new(), "Warning: can not replace Unit(app.service) in state 'launched', use the appropriate command\n".to_owned())
    );
    let (code, out, err) = fleetctl(dir.path(), &["start", "--replace", &path]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "Unit app.service inactive\nUnit app.service launched on 6e6f6465.../10.0.0.9\n"
    );
    assert!(fleetctl(dir.path(), &["cat", "app.service"])
        .1
        .contains("sleep 32"));
    stop(&mut child, "-TERM");
}

/// The live descendants of `root` (the supervisor's own reading of /proc, itself checked
/// against a scan of every process in its unit tests).
fn descendants_of(root: u32) -> Vec<u32> {
    fleet_native::process::descendants(root)
}

#[test]
fn a_unit_whose_processes_died_runs_again_with_one_process() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let run = dir.path().join("run/native/hello.service");
    let mut first = start_and_wait_for_socket(dir.path());
    let old = launch_sleeper(&socket);
    let shim = hello_shim(dir.path());
    // fleetd, the shim and the unit's process die together (a crash, an OOM kill of all).
    for pid in [shim, old] {
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(killed.unwrap().success());
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start_and_wait_for_socket(dir.path());
    let (new, new_shim) = running_anew(&socket, &run, old);
    assert_eq!(
        descendants_of(new_shim),
        vec![new],
        "one process, under its shim"
    );

    // Its shim alone killed (the OOM killer's choice): the unit's process is not left
    // unmanaged, and the unit runs again under a new shim.
    let killed = Command::new("kill")
        .args(["-KILL", &new_shim.to_string()])
        .status();
    assert!(killed.unwrap().success());
    let (newest, newest_shim) = running_anew(&socket, &run, new);
    assert!(!is_live(new), "the process the killed shim left was ended");
    assert_eq!(descendants_of(newest_shim), vec![newest]);
    stop(&mut second, "-TERM");
}

/// Waits until hello.service runs, reported so, with a main process other than `old`; that
/// process and its shim.
fn running_anew(socket: &Path, run: &Path, old: u32) -> (u32, u32) {
    eventually("never running again", Duration::from_secs(15), || {
        let state = std::fs::read_to_string(run.join("state.json")).map_err(|e| e.to_string())?;
        let state: serde_json::Value = serde_json::from_str(&state).map_err(|e| e.to_string())?;
        let main = state["main_pid"].as_u64().map(|p| p as u32);
        let shim = std::fs::read_to_string(run.join("shim.pid"))
            .map_err(|e| e.to_string())?
            .trim()
            .parse::<u32>()
            .map_err(|e| e.to_string())?;
        let (status, body) = http(
            socket,
            "GET",
            "/fleet/v1/state/hello.service?alt=json",
            None,
        );
        match main {
            Some(main) if main != old && body.contains(r#""systemdSubState":"running""#) => {
                Ok((main, shim))
            }
            _ => Err(format!("{status} {body} {state}")),
        }
    })
}

#[test]
fn awkward_unit_names_run_or_fail_alone_and_never_stop_the_others() {
    let dir = configured("");
    let socket = dir.path().join("fleet.sock");
    let mut daemon = start_and_wait_for_socket(dir.path());
    let long = |length: usize| format!("{}.service", "a".repeat(length - ".service".len()));
    // `..service` is a valid name (`%2E.service` in a URL path); 255 bytes is the longest a
    // file name can be; 256 bytes is valid for fleet but no file can carry it.
    let names = [
        ("..service".to_owned(), "%2E.service".to_owned()),
        (long(255), long(255)),
        (long(256), long(256)),
        ("after.service".to_owned(), "after.service".to_owned()),
    ];
    for (name, path) in &names {
        let unit = format!(
            r#"{{"desiredState":"launched","name":"{name}","options":[{{"name":"ExecStart","section":"Service","value":"/bin/sleep 60"}}]}}"#
        );
        let (status, body) = http(
            &socket,
            "PUT",
            &format!("/fleet/v1/units/{path}?alt=json"),
            Some(&unit),
        );
        assert_eq!(status, 201, "{name}: {body}");
    }
    let sub_of = |path: &str| {
        let (_, body) = http(
            &socket,
            "GET",
            &format!("/fleet/v1/state/{path}?alt=json"),
            None,
        );
        body
    };
    for (name, path) in &names {
        let expected = match name.len() {
            256 => r#""systemdLoadState":"error""#,
            _ => r#""systemdSubState":"running""#,
        };
        eventually(
            &format!("{name} never {expected}"),
            Duration::from_secs(15),
            || {
                let body = sub_of(path);
                body.contains(expected).then_some(()).ok_or(body)
            },
        );
    }
    stop(&mut daemon, "-TERM");
}

/// The main PID of `unit` from its run directory, while it runs.
fn main_pid_of(dir: &Path, unit: &str) -> Option<u64> {
    let state =
        std::fs::read_to_string(dir.join("run/native").join(unit).join("state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&state).ok()?;
    (state["sub"] == "running").then(|| state["main_pid"].as_u64())?
}

#[test]
fn a_restart_of_a_main_unit_brings_its_bound_sidekick_back() {
    let dir = configured("");
    let mut daemon = start_and_wait_for_socket(dir.path());
    let main = dir.path().join("web.service");
    std::fs::write(&main, "[Service]\nExecStart=/bin/sleep 60\n").unwrap();
    let side = dir.path().join("web-discovery.service");
    std::fs::write(
        &side,
        "[Unit]\nBindsTo=web.service\nAfter=web.service\n[Service]\nExecStart=/bin/sleep 61\n[X-Fleet]\nMachineOf=web.service\n",
    )
    .unwrap();
    let (code, _, err) = fleetctl(
        dir.path(),
        &["start", main.to_str().unwrap(), side.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let before = eventually("the sidekick never ran", TEN_SECONDS, || {
        main_pid_of(dir.path(), "web-discovery.service").ok_or("not running".to_owned())
    });
    let (code, _, err) = fleetctl(dir.path(), &["restart", "web.service"]);
    assert_eq!(code, 0, "{err}");
    // As systemd propagates a restart to BindsTo= dependents: the sidekick runs again, anew,
    // and the registry (still launched) agrees with the machine.
    let after = eventually("the sidekick never came back", TEN_SECONDS, || {
        main_pid_of(dir.path(), "web-discovery.service")
            .filter(|pid| *pid != before)
            .ok_or("not running anew".to_owned())
    });
    assert_ne!(after, before);
    eventually("the listing never agreed", TEN_SECONDS, || {
        let (_, out, _) = fleetctl(
            dir.path(),
            &["list-units", "--no-legend", "--fields=unit,active,sub"],
        );
        (out == "web-discovery.service\tactive\trunning\nweb.service\t\tactive\trunning\n")
            .then_some(())
            .ok_or(format!("{out:?}"))
    });
    stop(&mut daemon, "-TERM");
}
