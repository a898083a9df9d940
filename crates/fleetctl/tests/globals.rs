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
