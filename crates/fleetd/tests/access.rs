//! Who may do what, with a real fleetd: tokens with roles on a TCP listener (`read` lists,
//! gets and watches; `operate` also changes), the unix socket by its file mode, a line in the
//! audit log for every change and every refusal, and local users without privileges (run with
//! `setpriv` as uid 65534) kept out of the socket, the files and the API.

mod common;
use common::{eventually, Daemon};
use fleet_testkit::measure::{http_tcp, http_unix};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const OPERATE: &str = "alice-0123456789abcdef";
const READ: &str = "grafana-0123456789abcdef";
const UNIT: &str = r#"{"desiredState":"launched","options":[{"section":"Service","name":"ExecStart","value":"/bin/sleep 600"},{"section":"Service","name":"Environment","value":"PASSWORD=hunter2"}]}"#;

/// fleetd on `dir` serving its unix socket and plain http on a loopback port, with an operate
/// and a read token; the address of the TCP listener.
fn started(dir: &Path) -> (Daemon, String) {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# who may use the API over TCP\noperate alice {OPERATE}\nread grafana {READ}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let address = format!("127.0.0.1:{}", fleet_testkit::free_port());
    let mut command = common::fleetd(dir, "node1");
    command
        .env(
            "FLEET_API_LISTEN",
            format!(
                "unix://{},http://{address}",
                dir.join("fleet.sock").display()
            ),
        )
        .env("FLEET_API_TOKEN_FILE", &tokens)
        .stderr(std::fs::File::create(dir.join("fleetd.log")).unwrap());
    (common::serving(command, dir), address)
}

/// The audit log's records as (who, method, path, status), each checked to have a time.
fn audited(dir: &Path) -> Vec<(String, String, String, u16, Option<String>)> {
    let text = std::fs::read_to_string(dir.join("data/audit.log")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let time = record["time"].as_str().unwrap_or_default();
            assert!(time.len() == 27 && time.ends_with('Z'), "{line}");
            let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
            (
                text("who"),
                text("method"),
                text("path"),
                record["status"].as_u64().unwrap_or_default() as u16,
                record["change"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn row(who: &str, method: &str, path: &str, status: u16) -> (String, String, String, u16) {
    (who.into(), method.into(), path.into(), status)
}

#[test]
fn a_read_token_reads_an_operate_token_changes_and_every_change_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleetd, address) = started(dir.path());
    let socket = dir.path().join("fleet.sock");
    let units = "/fleet/v1/units";
    let tcp = |method: &str, path: &str, body: Option<&str>, bearer: Option<&str>| {
        http_tcp(&address, method, path, body, bearer)
    };

    /// A request over TCP and what it must be answered: its status, and words of the answer.
    struct Case<'a>(
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let a = "/fleet/v1/units/a.service";
    let machines = "/fleet/v1/machines";
    let cases = [
        Case("GET", units, None, Some(READ), 200, ""),
        Case("GET", "/metrics", None, Some(READ), 200, "fleet_"),
        Case(
            "PUT",
            a,
            Some(UNIT),
            Some(READ),
            403,
            "token grafana has the role read",
        ),
        Case("DELETE", a, None, Some(READ), 403, "not change anything"),
        Case("PATCH", machines, Some("[]"), Some(READ), 403, "role read"),
        Case(
            "PUT",
            a,
            Some(UNIT),
            None,
            401,
            "missing or wrong bearer token",
        ),
        Case(
            "GET",
            units,
            None,
            Some("grafana-0123456789abcdeX"),
            401,
            "wrong bearer",
        ),
        Case("PUT", a, Some(UNIT), Some(OPERATE), 201, ""),
        Case("GET", "/fleet/v1/state", None, Some(READ), 200, ""),
    ];
    for Case(method, path, body, token, status, says) in cases {
        let (got, answer) = tcp(method, path, body, token);
        assert_eq!(got, status, "{method} {path} with {token:?}: {answer}");
        assert!(answer.contains(says), "{method} {path}: {answer}");
    }
    // The unix socket needs no token; its caller is known by uid.
    let (status, answer) = http_unix(&socket, "PUT", "/fleet/v1/units/b.service", Some(UNIT));
    assert_eq!(status, 201, "{answer}");
    let (_, listed) = tcp("GET", units, None, Some(READ));
    assert!(
        listed.contains("a.service") && listed.contains("b.service"),
        "{listed}"
    );

    // fleetctl with the read token lists, and is told why it cannot change anything.
    let endpoint = format!("--endpoint=http://{address}");
    let read = [("FLEETCTL_API_TOKEN", READ)];
    let (code, out, err) = common::fleetctl(&[&endpoint, "list-unit-files", "--no-legend"], &read);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, _, err) = common::fleetctl(&[&endpoint, "destroy", "a.service"], &read);
    assert_eq!(code, 1);
    assert!(err.contains("token grafana has the role read"), "{err}");

    let records = audited(dir.path());
    let seen: Vec<_> = records
        .iter()
        .map(|(who, method, path, status, _)| row(who, method, path, *status))
        .collect();
    let uid = nix_uid();
    let expected = vec![
        row("token grafana", "PUT", a, 403),
        row("token grafana", "DELETE", a, 403),
        row("token grafana", "PATCH", machines, 403),
        row("unauthenticated", "PUT", a, 401),
        row("unauthenticated", "GET", units, 401),
        row("token alice", "PUT", a, 201),
        row(
            &format!("uid {uid}"),
            "PUT",
            "/fleet/v1/units/b.service",
            201,
        ),
        row("token grafana", "DELETE", a, 403),
    ];
    assert_eq!(seen, expected);
    let created = records[5].4.as_deref().unwrap_or_default();
    assert!(
        created.starts_with("created a.service (unit file ")
            && created.ends_with("desired state launched"),
        "{created}"
    );
    let mode = std::fs::metadata(dir.path().join("data/audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No secret in what fleetd writes about its callers.
    let log = std::fs::read_to_string(dir.path().join("fleetd.log")).unwrap();
    let audit = std::fs::read_to_string(dir.path().join("data/audit.log")).unwrap();
    for secret in [OPERATE, READ, "grafana-0123456789abcdeX", "hunter2"] {
        assert!(
            !log.contains(secret) && !audit.contains(secret),
            "{secret} written"
        );
    }
    common::stop(&mut fleetd, "-TERM");
}

#[test]
fn a_token_file_that_cannot_be_used_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("operate alice {OPERATE}\nadmin bob {READ}\n"),
    )
    .unwrap();
    let output = common::fleetd(dir.path(), "node1")
        .env("FLEET_API_TOKEN_FILE", &tokens)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("line 2: unknown role \"admin\": use read or operate"),
        "{said}"
    );
    assert!(
        !said.contains(READ) && !said.contains(OPERATE),
        "a secret shown: {said}"
    );
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// The probe's environment variable: what to try, run as another user (see `probe`).
const PROBE: &str = "FLEET_ACCESS_PROBE";

/// What an unprivileged local user gets for each of `tries` (`connect:PATH`, `read:PATH`,
/// `list:PATH`, `put:ADDRESS`): this test binary's `probe`, run as uid 65534 by `setpriv`.
fn as_nobody(tries: &[String]) -> Vec<String> {
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, tries.join("\n"))
        .output()
        .expect("setpriv runs (util-linux)");
    let out = String::from_utf8_lossy(&output.stdout);
    let results: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once("PROBE ").map(|(_, result)| result))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        results.len(),
        tries.len(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    results
}

/// Run by `as_nobody` as another user: tries each line of `FLEET_ACCESS_PROBE` and prints
/// `PROBE <what came of it>`.
#[test]
#[ignore = "run by local_users_without_privileges_are_kept_out, as another user"]
fn probe() {
    let tries = std::env::var(PROBE).expect("run by as_nobody");
    for line in tries.lines() {
        let (what, target) = line.split_once(':').unwrap();
        let outcome = match what {
            "connect" => std::os::unix::net::UnixStream::connect(target).map(drop),
            "read" => std::fs::read(target).map(drop),
            "list" => std::fs::read_dir(target).map(drop),
            "put" => {
                let (status, _) = http_tcp(
                    target,
                    "PUT",
                    "/fleet/v1/units/pwn.service",
                    Some(UNIT),
                    None,
                );
                println!("PROBE status {status}");
                continue;
            }
            other => panic!("unknown probe {other}"),
        };
        match outcome {
            Ok(()) => println!("PROBE allowed"),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => println!("PROBE denied"),
            Err(e) => println!("PROBE error {e}"),
        }
    }
}

#[test]
fn local_users_without_privileges_are_kept_out() {
    if nix_uid() != 0 {
        eprintln!("skipped: needs root, to run a probe as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The way to the socket is open to everyone: the socket's own mode must keep them out.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut fleetd, address) = started(dir.path());
    let socket = dir.path().join("fleet.sock");
    let (status, answer) = http_unix(&socket, "PUT", "/fleet/v1/units/secret.service", Some(UNIT));
    assert_eq!(status, 201, "{answer}");
    let home = dir.path();
    eventually("the unit runs", Duration::from_secs(15), || {
        common::holds(home.join("run/native/secret.service/spec.json").exists())
    });
    let files = [
        "data/registry.redb",
        "data/registry-known.json",
        "data/machine-lease",
        "data/audit.log",
        "data/logs/secret.service",
        "units/secret.service",
        "run/native/secret.service/spec.json",
        "tokens",
    ];
    let mut tries = vec![format!("connect:{}", socket.display())];
    tries.extend(
        files
            .iter()
            .map(|f| format!("read:{}", home.join(f).display())),
    );
    tries.push(format!("list:{}", home.join("data").display()));
    tries.push(format!("put:{address}"));
    let results = as_nobody(&tries);
    let mut expected = vec!["denied".to_owned(); tries.len() - 1];
    expected.push("status 401".into());
    assert_eq!(
        tries.iter().zip(&results).collect::<Vec<_>>(),
        tries.iter().zip(&expected).collect::<Vec<_>>()
    );
    // The files exist (so "denied" was the file's mode, not its absence), and nothing came of
    // the attempt to submit a unit.
    for file in files {
        assert!(home.join(file).exists(), "{file}");
    }
    let (_, listed) = http_unix(&socket, "GET", "/fleet/v1/units", None);
    assert!(!listed.contains("pwn.service"), "{listed}");
    common::stop(&mut fleetd, "-TERM");
}
