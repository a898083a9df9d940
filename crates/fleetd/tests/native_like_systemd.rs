//! The native supervisor runs a unit file as systemd does: each case's unit runs once under
//! the native supervisor (real shims) and once on a real systemd 252 (booted in a sandbox,
//! never the host's) through the systemd manager, and what it leaves (the file its commands
//! write, its final state) must be the same, and what the case expects. Needs root.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::manager::UnitManager;
use fleet_agent::native::supervisor::{Supervisor, SupervisorConfig};
use fleet_agent::systemd::{SystemdConfig, SystemdManager};
use fleet_testkit::SystemdSandbox;
use fleet_unit::{UnitFile, UnitName};

/// A unit file (`OUT` stands for the file its commands write), the state it settles in, and
/// what the file then holds.
struct Case {
    name: &'static str,
    unit: &'static str,
    settles: (&'static str, &'static str),
    writes: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "order.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStartPre=/bin/sh -c 'echo pre >> OUT'\nExecStart=/bin/sh -c 'echo start >> OUT'\nExecStartPost=/bin/sh -c 'echo post >> OUT'\n",
        settles: ("active", "exited"),
        writes: "pre\nstart\npost\n",
    },
    Case {
        name: "environment.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=\"A=one two\" B=three\nExecStart=/bin/sh -c 'echo \"$A|$B\" > OUT'\n",
        settles: ("active", "exited"),
        writes: "one two|three\n",
    },
    Case {
        // fleet's documented sidekicks continue ExecStart= over lines.
        name: "continued.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo first \\\n  second > OUT'\n",
        settles: ("active", "exited"),
        writes: "first second\n",
    },
    Case {
        name: "specifiers.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo %n %p > OUT'\n",
        settles: ("active", "exited"),
        writes: "specifiers.service specifiers\n",
    },
    Case {
        name: "fails.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo ran > OUT; exit 3'\n",
        settles: ("failed", "failed"),
        writes: "ran\n",
    },
    Case {
        name: "stoppost.service",
        unit: "[Service]\nExecStart=/bin/true\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("inactive", "dead"),
        writes: "success exited 0\n",
    },
    Case {
        name: "stoppost-failed.service",
        unit: "[Service]\nExecStart=/bin/sh -c 'exit 3'\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("failed", "failed"),
        writes: "exit-code exited 3\n",
    },
    Case {
        name: "stoppost-killed.service",
        unit: "[Service]\nExecStart=/bin/sh -c 'kill -9 $$$$'\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("failed", "failed"),
        writes: "signal killed KILL\n",
    },
    Case {
        name: "workdir.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nWorkingDirectory=/usr\nExecStart=/bin/sh -c 'pwd > OUT'\n",
        settles: ("active", "exited"),
        writes: "/usr\n",
    },
    Case {
        // $A unbraced is split into words, ${B} stays one: no shell does this, the manager does.
        name: "words.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=\"A=x y\" \"B=p q\"\nExecStart=/bin/sh -c 'echo \"$1|$2|$3\" > OUT' sh $A ${B}\n",
        settles: ("active", "exited"),
        writes: "x|y|p q\n",
    },
    Case {
        name: "ignored-failure.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=-/bin/false\nExecStartPost=/bin/sh -c 'echo post > OUT'\n",
        settles: ("active", "exited"),
        writes: "post\n",
    },
    Case {
        // Fails twice, then succeeds: restarted after each failure.
        name: "restarts.service",
        unit: "[Service]\nRestart=on-failure\nRestartSec=100ms\nExecStart=/bin/sh -c 'echo x >> OUT; [ $(wc -l < OUT) -ge 3 ]'\n",
        settles: ("inactive", "dead"),
        writes: "x\nx\nx\n",
    },
    Case {
        name: "user.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nExecStart=/bin/sh -c 'echo $(id -un) $USER $LOGNAME \"[$HOME]\" \"[$SHELL]\" > OUT'\n",
        settles: ("active", "exited"),
        // systemd knows nobody without the user database: no home, no login shell.
        writes: "nobody nobody nobody [] []\n",
    },
];

/// Runs every case under `manager`, its files in `out`; what each left: (state, file).
async fn run_all(manager: &dyn UnitManager, out: &Path) -> Vec<((String, String), String)> {
    let mut left = Vec::new();
    for case in CASES {
        let file = out.join(case.name);
        let text = case.unit.replace("OUT", &file.display().to_string());
        let name = UnitName::new(case.name).unwrap();
        manager
            .load(&name, &UnitFile::parse(&text).unwrap())
            .await
            .unwrap();
        manager.start(&name).await.unwrap();
        let state = settled(manager, &name, case.settles).await;
        // What a command writes last may land a moment after the state.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut written = std::fs::read_to_string(&file).unwrap_or_default();
        while written != case.writes && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            written = std::fs::read_to_string(&file).unwrap_or_default();
        }
        left.push((state, written));
        // Nothing outlives the test (a oneshot with RemainAfterExit= keeps its shim).
        manager.unload(&name).await.unwrap();
    }
    left
}

/// Waits (at most 10 s) for `name` to show `expected`; the state it shows then.
async fn settled(
    manager: &dyn UnitManager,
    name: &UnitName,
    expected: (&str, &str),
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = manager.state(name).await.unwrap();
        let shown = (state.active.clone(), state.sub.clone());
        if (shown.0.as_str(), shown.1.as_str()) == expected || Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_supervisor_runs_each_unit_file_as_systemd_does() {
    let sandbox = SystemdSandbox::boot(env!("CARGO_TARGET_TMPDIR").as_ref()).unwrap();
    // The same paths inside the sandbox and out.
    let shared = sandbox.shared_dir();
    let systemd_out = shared.join("out-systemd");
    let native_out = shared.join("out-native");
    for dir in [&systemd_out, &native_out] {
        std::fs::create_dir_all(dir).unwrap();
        // Writable by the cases that run as another user.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
    }
    let systemd = SystemdManager::connect(SystemdConfig {
        address: Some(sandbox.bus_address()),
        user: false,
        units_dir: shared.join("units"),
        command_prefix: sandbox.enter(),
        root: sandbox.root(),
    })
    .await
    .unwrap();
    let native_dir = tempfile::tempdir().unwrap();
    let native: Arc<dyn UnitManager> = Arc::new(
        Supervisor::open(SupervisorConfig::under(
            native_dir.path(),
            Path::new(env!("CARGO_BIN_EXE_fleetd")),
        ))
        .unwrap(),
    );
    let on_systemd = run_all(systemd.as_ref(), &systemd_out).await;
    let on_native = run_all(native.as_ref(), &native_out).await;
    for ((case, systemd), native) in CASES.iter().zip(&on_systemd).zip(&on_native) {
        let expected = (
            (case.settles.0.to_owned(), case.settles.1.to_owned()),
            case.writes.to_owned(),
        );
        assert_eq!(*systemd, expected, "{} on systemd", case.name);
        assert_eq!(*native, *systemd, "{} natively, against systemd", case.name);
    }
}
