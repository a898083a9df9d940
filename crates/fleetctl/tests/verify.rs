//! `fleetctl verify` and `version`, run in-process on real files.

use std::path::Path;

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = fleetctl::run(
        &args,
        &mut fleetctl::Io {
            out: &mut out,
            err: &mut err,
            terminal: false,
        },
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs verify on one file and compares stderr, with the directory shown as `DIR`.
fn check(name: &str, text: &[u8], code: i32, expected_err: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    let (got_code, out, err) = run(&["verify", &path]);
    let err = err.replace(dir.path().to_str().unwrap(), "DIR");
    assert_eq!(
        (got_code, out.as_str(), err.as_str()),
        (code, "", expected_err),
        "{name}"
    );
}

#[test]
fn verify_reports_problems_with_lines() {
    check(
        "ok.service",
        b"[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n",
        0,
        "",
    );
    check(
        "bad.service",
        b"[Unit]\nDescription=x\nnonsense\n[Service]junk\nExecStart=/bin/true\n",
        1,
        "DIR/bad.service:3: error: unexpected newline encountered while parsing option name\n\
         DIR/bad.service:4: error: found garbage after section name \"Service\": \"junk\"\n",
    );
    check(
        "x.service",
        b"[X-Fleet]\nMachineID=abc\nGlobal=true\nBogus=1\n",
        1,
        "DIR/x.service: warning: unrecognized requirement in [X-Fleet] section: \"Bogus\"\n\
         DIR/x.service: error: MachineID cannot be used with Global\n",
    );
    // Ours: the self-healing keys are known (no warning) and checked, naming key and line.
    check(
        "healthy.service",
        b"[Service]\nExecStart=/bin/true\n[X-Fleet]\nHealthCheck=http://localhost:8080/\nHealthCheckInterval=5s\nReschedule=no\n",
        0,
        "",
    );
    check(
        "sick.service",
        b"[Service]\nExecStart=/bin/true\n[X-Fleet]\nHealthCheck=tcp://db:5432\nHealthCheck=ftp://h:21/\n",
        1,
        "DIR/sick.service:5: error: invalid HealthCheck=ftp://h:21/: unknown scheme \"ftp\": use http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND\n",
    );
    check(
        "eager.service",
        b"[X-Fleet]\nHealthCheck=tcp://db:5432\nHealthCheckInterval = 0\n",
        1,
        "DIR/eager.service:3: error: invalid HealthCheckInterval=0: use 1ms to 24h\n",
    );
    check(
        "bin.service",
        b"[Unit]\nA=\xff\n",
        1,
        "DIR/bin.service:2: error: unit file is not valid UTF-8\n",
    );
    check(
        "bad name.service",
        b"[Unit]\n",
        1,
        "DIR/bad name.service: error: unit name \"bad name.service\": invalid character ' ' in unit name\n",
    );
}

#[test]
fn verify_without_units_or_with_missing_file() {
    assert_eq!(
        run(&["verify"]),
        (2, String::new(), "No units given\n".into())
    );
    let (code, _, err) = run(&["verify", "/nonexistent/a.service"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/a.service: error: unable to read file: "),
        "{err}"
    );
}

#[test]
fn version_and_unknown_command() {
    let (code, out, _) = run(&["version"]);
    assert_eq!(
        (code, out),
        (0, format!("fleetctl version {}\n", fleetctl::VERSION))
    );
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("Unknown command \"frobnicate\""), "{err}");
}
