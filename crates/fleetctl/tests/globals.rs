//! fleetctl's global flags and their FLEETCTL_* variables.

fn check(args: &[&str], env: &[(&str, &str)], code: i32, stderr: &str) {
    let (got, _, err) = fleetctl::run_captured(args, env);
    assert_eq!(
        (got, err.as_str()),
        (code, stderr),
        "fleetctl {args:?} with {env:?}"
    );
}

#[test]
fn global_flags() {
    let dial = |path: &str| {
        format!("Error retrieving list of active machines: dial unix {path}: connect: no such file or directory\n")
    };
    // The endpoint from the environment (fleet's TestFleetctlWithEnv), or the flag over it.
    check(
        &["list-machines"],
        &[("FLEETCTL_ENDPOINT", "unix:///no/env.sock")],
        1,
        &dial("/no/env.sock"),
    );
    check(
        &["--endpoint", "unix:///no/flag.sock", "list-machines"],
        &[("FLEETCTL_ENDPOINT", "unix:///no/env.sock")],
        1,
        &dial("/no/flag.sock"),
    );
    // Flags fleet had are accepted even where they change nothing here.
    check(
        &[
            "--debug",
            "--ssh-username=admin",
            "--endpoint=unix:///no/x.sock",
            "list-machines",
        ],
        &[],
        1,
        &dial("/no/x.sock"),
    );
    check(
        &["--driver=etcd", "list-machines"],
        &[],
        1,
        "driver \"etcd\" is not supported: fleetctl talks to fleetd's API only (--driver=api); there is no direct etcd access\n",
    );
    check(
        &["--endpoint=unix://var/run/fleet.sock", "list-machines"],
        &[],
        1,
        "Unable to initialize client: unable to connect to host \"var\" with scheme \"unix\"\n",
    );
    check(
        &["--endpoint"],
        &[],
        1,
        "flag needs an argument: --endpoint\n",
    );
}

#[test]
fn bad_table_flags_are_refused_before_the_cluster_is_asked() {
    // The endpoint does not exist: a flag error must come first, alone.
    let env = [("FLEETCTL_ENDPOINT", "unix:///no/env.sock")];
    check(
        &["list-units", "--fields=unit,bogus"],
        &env,
        1,
        "Invalid key in output format: \"bogus\"\n",
    );
    check(
        &["list-machines", "--fields="],
        &env,
        1,
        "Must define output format\n",
    );
    check(&["list-unit-files", "--x"], &env, 1, "unknown flag: --x\n");
}

#[test]
fn the_api_token_never_comes_from_the_command_line() {
    let refused = "--api-token on the command line is visible to every local user (ps, /proc); set FLEETCTL_API_TOKEN or --api-token-file=PATH instead\n";
    check(
        &["--api-token=s3cret-token-0123456789", "list-machines"],
        &[],
        1,
        refused,
    );
    check(
        &["--api-token", "s3cret-token-0123456789", "list-machines"],
        &[],
        1,
        refused,
    );
    check(
        &["--api-token-file=/no/such/token", "list-machines"],
        &[],
        1,
        "--api-token-file /no/such/token: No such file or directory (os error 2)\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let flag = format!("--api-token-file={}", empty.display());
    check(
        &[&flag, "list-machines"],
        &[],
        1,
        &format!("--api-token-file {}: the file is empty\n", empty.display()),
    );
}
