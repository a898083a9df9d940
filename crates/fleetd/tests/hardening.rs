//! The adversarial suite: a real fleetd (embedded registry, native supervisor) given what an
//! attacker, a broken client or a careless operator would give it. Each case asserts the
//! answer (status and message), that fleetd goes on serving, and that nothing was lost.

mod common;
use common::{eventually, Daemon};
use fleet_testkit::measure::http_unix as http;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// fleetd on a fresh home, serving its unix socket.
fn started() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.conf"), "").unwrap();
    let mut command = common::fleetd(dir.path(), "node1");
    command.arg("--config").arg(dir.path().join("fleet.conf"));
    let daemon = common::serving(command, dir.path());
    (dir, daemon)
}

/// Whether fleetd closed `stream` (a read sees the end, or the connection reset) within
/// `within`.
fn closed_within(mut stream: &UnixStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // An answer (a 408 for a half-sent request): read on to the close.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn silent_half_sent_and_idle_connections_are_closed_and_never_starve_the_api() {
    let (dir, _fleetd) = started();
    let socket = dir.path().join("fleet.sock");
    let connect = || UnixStream::connect(&socket).unwrap();
    // 100 that say nothing, 100 that stop half-way through their headers, 100 kept alive
    // after one request.
    let silent: Vec<UnixStream> = (0..100).map(|_| connect()).collect();
    let half: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"GET /fleet/v1/units HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut s = connect();
            s.write_all(b"GET /fleet/v1/machines HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    let opened = Instant::now();
    // With 300 of them open, the API answers.
    let (status, _) = http(&socket, "GET", "/fleet/v1/units", None);
    assert_eq!(status, 200);
    // Each is closed once the header timeout (10 s) has passed.
    for (kind, streams) in [("silent", &silent), ("half-sent", &half), ("idle", &idle)] {
        let open = streams
            .iter()
            .filter(|s| {
                let left = Duration::from_secs(14).saturating_sub(opened.elapsed());
                !closed_within(s, left.max(Duration::from_millis(10)))
            })
            .count();
        assert_eq!(open, 0, "{kind} connections still open after 14 s");
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(9),
        "not before the timeout"
    );
}

#[test]
fn a_body_that_never_arrives_is_answered_408() {
    let (dir, _fleetd) = started();
    let socket = dir.path().join("fleet.sock");
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .write_all(b"PUT /fleet/v1/units/a.service HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"desiredState\":")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
    let (status, listing) = http(&socket, "GET", "/fleet/v1/units", None);
    assert_eq!((status, listing.trim()), (200, "{}"), "nothing stored");
}

#[test]
fn more_connections_than_the_limit_are_closed_at_once_and_the_api_recovers() {
    let (dir, _fleetd) = started();
    let socket = dir.path().join("fleet.sock");
    // Past 512 at once, a new connection is closed straight away.
    let held: Vec<UnixStream> = (0..530)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let closed_at_once = held
        .iter()
        .skip(512)
        .filter(|s| closed_within(s, Duration::from_secs(2)))
        .count();
    assert!(
        closed_at_once >= 10,
        "only {closed_at_once} of 18 over the limit closed"
    );
    // The held ones time out; then the API answers again.
    eventually(
        "the API never answered again",
        Duration::from_secs(20),
        || {
            let mut stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
            stream
                .write_all(b"GET /fleet/v1/units HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            match answer.starts_with("HTTP/1.1 200") {
                true => Ok(()),
                false => Err(format!("answered {answer:?}")),
            }
        },
    );
    drop(held);
}

#[test]
fn invented_methods_add_no_metrics_series() {
    let (dir, _fleetd) = started();
    let socket = dir.path().join("fleet.sock");
    for i in 0..300 {
        let request =
            format!("X{i}METHOD /fleet/v1/units HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _) = fleet_testkit::measure::exchange_unix(&socket, &request);
        assert!((400..500).contains(&status), "X{i}METHOD answered {status}");
    }
    let (status, metrics) = http(&socket, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("X1METHOD"),
        "a series per invented method"
    );
    let other = metrics
        .lines()
        .find(|l| l.starts_with("fleet_api_requests_total{method=\"other\""))
        .unwrap_or_else(|| panic!("no 'other' series in {metrics}"));
    assert!(other.ends_with(" 300"), "{other}");
    assert!(
        metrics.len() < 20_000,
        "/metrics is {} bytes",
        metrics.len()
    );
}

/// fleetd on `dir` (its fleet.conf empty) with `env` added, its log on a pipe.
fn fleetd_with(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Command {
    std::fs::write(dir.join("fleet.conf"), "").unwrap();
    let mut command = common::fleetd(dir, "node1");
    command
        .arg("--config")
        .arg(dir.join("fleet.conf"))
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[test]
fn values_out_of_range_are_refused_at_start_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // What the adversarial run saw panic (`cannot convert float seconds to Duration`,
    // `period must be non-zero`).
    for (name, value) in [
        ("FLEET_AGENT_TTL", "99999999999999999999999h"),
        ("FLEET_ETCD_REQUEST_TIMEOUT", "1e300"),
        ("FLEET_ENGINE_RECONCILE_INTERVAL", "1e20"),
        ("FLEET_ENGINE_LEASE_TTL", "9999999999999999h"),
        ("FLEET_AGENT_TTL", "0"),
        ("FLEET_AGENT_TTL", "1ns"),
        ("FLEET_ENGINE_RECONCILE_INTERVAL", "1e-12"),
        ("FLEET_ETCD_SERVERS", "notaurl"),
    ] {
        let output = fleetd_with(dir.path(), &[(name, value)]).output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}={value}: {log}");
        assert!(
            log.contains(&format!("invalid value {value:?} for {name}"))
                && !log.contains("panicked"),
            "{name}={value}: {log}"
        );
    }
}

#[test]
fn such_a_value_by_sighup_leaves_the_running_configuration_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    std::fs::write(
        dir.path().join("fleet.conf"),
        "agent_ttl = 99999999999999999999999h\n",
    )
    .unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &fleetd.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fleetd.try_wait().unwrap().is_none(),
        "fleetd died of the reload"
    );
    let (status, _) = http(
        &dir.path().join("fleet.sock"),
        "GET",
        "/fleet/v1/machines",
        None,
    );
    assert_eq!(status, 200);
    let status = common::signal_and_wait(&mut fleetd, "-TERM");
    let mut log = String::new();
    fleetd
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("configuration not reloaded") && log.contains("must be from 1s to 24h0m0s"),
        "{log}"
    );
}

#[test]
fn fleetd_waiting_for_etcd_at_its_start_stops_at_once() {
    // One etcd that refuses connections, one that accepts them and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_port = refused.local_addr().unwrap().port();
    drop(refused);
    for server in [
        format!("http://127.0.0.1:{refused_port}"),
        format!("http://{}", silent.local_addr().unwrap()),
    ] {
        for signal in ["-TERM", "-INT", "-QUIT"] {
            let dir = tempfile::tempdir().unwrap();
            let mut fleetd = fleetd_with(dir.path(), &[("FLEET_ETCD_SERVERS", &server)])
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            assert!(fleetd.try_wait().unwrap().is_none(), "it waits for etcd");
            let asked = Instant::now();
            let status = common::signal_and_wait(&mut fleetd, signal);
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "{server} {signal}: stopped after {:?}",
                asked.elapsed()
            );
            assert!(status.success(), "{server} {signal}: {status:?}");
        }
    }
}

#[test]
fn a_dangling_symlink_or_a_directory_in_the_units_directory_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    std::os::unix::fs::symlink("/nonexistent", units.join("dangling.service")).unwrap();
    std::fs::create_dir(units.join("dir.service")).unwrap();
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    let (status, _) = http(
        &dir.path().join("fleet.sock"),
        "GET",
        "/fleet/v1/units",
        None,
    );
    assert_eq!(status, 200);
    common::stop(&mut fleetd, "-TERM");
}

#[test]
fn an_empty_registry_file_is_refused_not_taken_for_a_new_registry() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/registry.redb"), "").unwrap();
    let output = fleetd_with(dir.path(), &[]).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("registry.redb") && log.contains("the file is empty (0 bytes)"),
        "{log}"
    );
    // A damaged one is refused, saying what to do.
    std::fs::write(dir.path().join("data/registry.redb"), vec![0x5a; 8192]).unwrap();
    let output = fleetd_with(dir.path(), &[]).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("restore it from a backup"), "{log}");
}

/// PUTs `name` (a sleeper, launched) over `socket`; the status and answer.
fn submit(socket: &std::path::Path, name: &str) -> (u16, String) {
    let unit = r#"{"desiredState":"launched","options":[{"section":"Service","name":"ExecStart","value":"/bin/sleep 600"}]}"#;
    http(
        socket,
        "PUT",
        &format!("/fleet/v1/units/{name}"),
        Some(unit),
    )
}

/// The main PID of `name` once the native supervisor runs it.
fn main_pid(dir: &std::path::Path, name: &str) -> u64 {
    let state = dir.join(format!("run/native/{name}/state.json"));
    eventually("never running", Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&state).map_err(|e| e.to_string())?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        value["main_pid"].as_u64().ok_or(text)
    })
}

#[test]
fn its_own_stale_lease_is_recognised_when_the_lease_file_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fleet.sock");
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    assert_eq!(submit(&socket, "kept.service").0, 201);
    let pid = main_pid(dir.path(), "kept.service");
    // Killed (its units run on), and its lease file lost, as a full disk could make it.
    fleetd.kill().unwrap();
    fleetd.wait().unwrap();
    std::fs::remove_file(dir.path().join("data/machine-lease")).unwrap();
    let mut again = fleetd_with(dir.path(), &[]);
    again.stderr(std::process::Stdio::null());
    let mut fleetd = common::serving(again, dir.path());
    eventually(
        "the unit is not reported running",
        Duration::from_secs(15),
        || {
            let (status, body) = http(&socket, "GET", "/fleet/v1/state", None);
            match status == 200 && body.contains(r#""systemdSubState":"running""#) {
                true => Ok(()),
                false => Err(format!("{status} {body}")),
            }
        },
    );
    assert_eq!(main_pid(dir.path(), "kept.service"), pid, "restarted");
    common::stop(&mut fleetd, "-TERM");
}

/// An embedded registry put back from an older copy (a backup restored over it, say) is not
/// taken for the registry as it is: fleetd refuses to start on it, saying so and what to do,
/// and the unit started since the copy keeps running.
#[test]
fn an_older_copy_of_the_embedded_registry_is_refused_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fleet.sock");
    let registry = dir.path().join("data/registry.redb");
    let copy = dir.path().join("registry.redb.copy");
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    assert_eq!(submit(&socket, "first.service").0, 201);
    main_pid(dir.path(), "first.service");
    common::stop(&mut fleetd, "-QUIT");
    std::fs::copy(&registry, &copy).unwrap();
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    assert_eq!(submit(&socket, "second.service").0, 201);
    let pid = main_pid(dir.path(), "second.service");
    common::stop(&mut fleetd, "-QUIT");

    std::fs::copy(&copy, &registry).unwrap();
    let output = fleetd_with(dir.path(), &[]).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("it went backwards") && log.contains("registry-known.json to accept it"),
        "{log}"
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "still running");

    // Accepted: the copy is the registry now, and the unit it does not hold is stopped.
    std::fs::remove_file(dir.path().join("data/registry-known.json")).unwrap();
    let mut fleetd = common::serving(fleetd_with(dir.path(), &[]), dir.path());
    eventually(
        "the unit the copy lacks stopped",
        Duration::from_secs(15),
        || common::holds(!Path::new(&format!("/proc/{pid}")).exists()),
    );
    let (status, body) = http(&socket, "GET", "/fleet/v1/units", None);
    assert!(
        status == 200 && body.contains("first.service") && !body.contains("second"),
        "{body}"
    );
    common::stop(&mut fleetd, "-TERM");
}

#[test]
fn a_full_disk_refuses_writes_with_the_reason_and_is_used_again_once_it_has_room() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for a tmpfs of its own");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A small filesystem of fleetd's own, in a mount namespace that ends with it.
    let fleetd = fleetd_with(dir.path(), &[]);
    let mut command = std::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=8m tmpfs {} && exec \"$0\" \"$@\"",
            data.display()
        ))
        .arg(fleetd.get_program())
        .args(fleetd.get_args());
    command.env_clear();
    for (name, value) in fleetd.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut fleetd = common::serving(command, dir.path());
    let socket = dir.path().join("fleet.sock");
    // Its data directory as fleetd sees it.
    let seen = std::path::PathBuf::from(format!("/proc/{}/root{}", fleetd.id(), data.display()));
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}.service");
        assert_eq!(submit(&socket, &name).0, 201);
        acknowledged.push(name);
    }
    let filler = seen.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
    }
    let mut refused = None;
    for i in 0..200 {
        let name = format!("full-{i}.service");
        match submit(&socket, &name) {
            (201, _) => acknowledged.push(name),
            (status, answer) => {
                refused = Some((status, answer));
                break;
            }
        }
    }
    let (status, answer) = refused.expect("a write was refused on a full disk");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("registry.redb"), "{answer}");
    std::fs::remove_file(&filler).unwrap();
    eventually(
        "writes are not taken again",
        Duration::from_secs(10),
        || match submit(&socket, "after.service") {
            (201, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    acknowledged.push("after.service".into());
    let (status, listing) = http(&socket, "GET", "/fleet/v1/units", None);
    assert_eq!(status, 200);
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|name| !listing.contains(&format!("\"name\":\"{name}\"")))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    common::stop(&mut fleetd, "-TERM");
}
