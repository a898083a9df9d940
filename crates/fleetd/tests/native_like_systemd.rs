//! The native supervisor runs a unit file as systemd does: each case's unit runs once under
//! the native supervisor (real shims) and once on a real systemd 252 (booted in a sandbox,
//! never the host's) through the systemd manager, and what it leaves (the file its commands
//! write, its final state) must be the same, and what the case expects. Needs root.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::manager::UnitManager;
use fleet_agent::systemd::{SystemdConfig, SystemdManager};
use fleet_native::supervisor::{Supervisor, SupervisorConfig};
use fleet_testkit::SystemdSandbox;
use fleet_unit::{UnitFile, UnitName};

/// A unit file (`OUT` stands for the file its commands write), the state it settles in, and
/// what the file then holds.
struct Case {
    name: &'static str,
    unit: &'static str,
    /// Units loaded before it (`OUT` as in `unit`), started only by `first` or by relations.
    others: &'static [(&'static str, &'static str)],
    /// Of `others`, started (and waited for, active) before `name` is.
    first: &'static [&'static str],
    /// Stopped once it shows this state (else left as it settles).
    stopped_at: Option<(&'static str, &'static str)>,
    settles: (&'static str, &'static str),
    writes: &'static str,
}

const CASE: Case = Case {
    name: "",
    unit: "",
    others: &[],
    first: &[],
    stopped_at: None,
    settles: ("", ""),
    writes: "",
};

const CASES: &[Case] = &[
    Case {
        name: "order.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStartPre=/bin/sh -c 'echo pre >> OUT'\nExecStart=/bin/sh -c 'echo start >> OUT'\nExecStartPost=/bin/sh -c 'echo post >> OUT'\n",
        settles: ("active", "exited"),
        writes: "pre\nstart\npost\n",
        ..CASE
    },
    Case {
        name: "environment.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=\"A=one two\" B=three\nExecStart=/bin/sh -c 'echo \"$A|$B\" > OUT'\n",
        settles: ("active", "exited"),
        writes: "one two|three\n",
        ..CASE
    },
    Case {
        // fleet's documented sidekicks continue ExecStart= over lines.
        name: "continued.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo first \\\n  second > OUT'\n",
        settles: ("active", "exited"),
        writes: "first second\n",
        ..CASE
    },
    Case {
        name: "specifiers.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo %n %p > OUT'\n",
        settles: ("active", "exited"),
        writes: "specifiers.service specifiers\n",
        ..CASE
    },
    Case {
        name: "fails.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo ran > OUT; exit 3'\n",
        settles: ("failed", "failed"),
        writes: "ran\n",
        ..CASE
    },
    Case {
        name: "stoppost.service",
        unit: "[Service]\nExecStart=/bin/true\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("inactive", "dead"),
        writes: "success exited 0\n",
        ..CASE
    },
    Case {
        name: "stoppost-failed.service",
        unit: "[Service]\nExecStart=/bin/sh -c 'exit 3'\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("failed", "failed"),
        writes: "exit-code exited 3\n",
        ..CASE
    },
    Case {
        name: "stoppost-killed.service",
        unit: "[Service]\nExecStart=/bin/sh -c 'kill -9 $$$$'\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("failed", "failed"),
        writes: "signal killed KILL\n",
        ..CASE
    },
    Case {
        name: "workdir.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nWorkingDirectory=/usr\nExecStart=/bin/sh -c 'pwd > OUT'\n",
        settles: ("active", "exited"),
        writes: "/usr\n",
        ..CASE
    },
    Case {
        // $A unbraced is split into words, ${B} stays one: no shell does this, the manager does.
        name: "words.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=\"A=x y\" \"B=p q\"\nExecStart=/bin/sh -c 'echo \"$1|$2|$3\" > OUT' sh $A ${B}\n",
        settles: ("active", "exited"),
        writes: "x|y|p q\n",
        ..CASE
    },
    Case {
        name: "ignored-failure.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=-/bin/false\nExecStartPost=/bin/sh -c 'echo post > OUT'\n",
        settles: ("active", "exited"),
        writes: "post\n",
        ..CASE
    },
    Case {
        // Fails twice, then succeeds: restarted after each failure.
        name: "restarts.service",
        unit: "[Service]\nRestart=on-failure\nRestartSec=100ms\nExecStart=/bin/sh -c 'echo x >> OUT; [ $(wc -l < OUT) -ge 3 ]'\n",
        settles: ("inactive", "dead"),
        writes: "x\nx\nx\n",
        ..CASE
    },
    Case {
        name: "user.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nExecStart=/bin/sh -c 'echo $(id -un) $USER $LOGNAME \"[$HOME]\" \"[$SHELL]\" > OUT'\n",
        settles: ("active", "exited"),
        // systemd knows nobody without the user database: no home, no login shell.
        writes: "nobody nobody nobody [] []\n",
        ..CASE
    },
    Case {
        name: "stop.service",
        unit: "[Service]\nType=simple\nExecStart=/bin/sleep 600\nExecStop=/bin/sh -c 'echo stop >> OUT'\nExecStopPost=/bin/sh -c 'echo \"post $SERVICE_RESULT\" >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "stop\npost success\n",
        ..CASE
    },
    Case {
        name: "exec.service",
        unit: "[Service]\nType=exec\nExecStart=/bin/sh -c 'echo exec > OUT; exec sleep 600'\n",
        settles: ("active", "running"),
        writes: "exec\n",
        ..CASE
    },
    Case {
        name: "forking.service",
        unit: "[Service]\nType=forking\nPIDFile=OUT.pid\nExecStart=/bin/sh -c 'sleep 600 & echo $! > OUT.pid; echo forked > OUT'\nExecStop=/bin/sh -c 'echo stop >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "forked\nstop\n",
        ..CASE
    },
    Case {
        name: "notify.service",
        unit: "[Service]\nType=notify\nNotifyAccess=all\nExecStart=/bin/sh -c 'echo starting > OUT; systemd-notify --ready; echo ready >> OUT; exec sleep 600'\n",
        settles: ("active", "running"),
        writes: "starting\nready\n",
        ..CASE
    },
    Case {
        name: "envfile.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironmentFile=/etc/os-release\nEnvironmentFile=-/nonexistent/env\nExecStart=/bin/sh -c 'echo $ID > OUT'\n",
        settles: ("active", "exited"),
        writes: "debian\n",
        ..CASE
    },
    Case {
        name: "group.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nGroup=nogroup\nUMask=0027\nExecStart=/bin/sh -c 'echo $(id -un):$(id -gn) $(umask) > OUT'\n",
        settles: ("active", "exited"),
        writes: "nobody:nogroup 0027\n",
        ..CASE
    },
    Case {
        name: "start-timeout.service",
        unit: "[Service]\nType=oneshot\nTimeoutStartSec=1\nExecStart=/bin/sh -c 'echo a > OUT; exec sleep 30'\nExecStopPost=/bin/sh -c 'echo $SERVICE_RESULT >> OUT'\n",
        settles: ("failed", "failed"),
        writes: "a\ntimeout\n",
        ..CASE
    },
    Case {
        // SIGTERM is trapped and outlived: SIGKILL after TimeoutStopSec=.
        name: "stop-timeout.service",
        unit: "[Service]\nTimeoutStopSec=1\nExecStart=/bin/sh -c 'trap \"echo term >> OUT\" TERM; echo up > OUT; while :; do sleep 0.1; done'\nExecStopPost=/bin/sh -c 'echo $SERVICE_RESULT >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("failed", "failed"),
        writes: "up\nterm\ntimeout\n",
        ..CASE
    },
    Case {
        name: "kill-signal.service",
        unit: "[Service]\nKillSignal=SIGINT\nExecStart=/bin/sh -c 'trap \"echo int >> OUT; exit 0\" INT; echo up > OUT; while :; do sleep 0.1; done'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "up\nint\n",
        ..CASE
    },
    Case {
        // Only the main process is signalled: its child lives on and has its say.
        name: "kill-process.service",
        unit: "[Service]\nKillMode=process\nExecStart=/bin/sh -c '(trap \"echo child-killed >> OUT; exit\" TERM; sleep 1; echo child-lived >> OUT) & wait'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "child-lived\n",
        ..CASE
    },
    Case {
        // Every process of the unit is signalled (the default).
        name: "kill-group.service",
        // The trap undoes itself first: a second TERM (systemd's to the group and the shell's
        // own, in either order) must not write twice. The unit is running only once the
        // child's trap is set (ExecStartPost= waits for it): a stop before that (CI, loaded)
        // killed the child before it could write.
        unit: "[Service]\nExecStart=/bin/sh -c '(trap \"trap - TERM; echo child-killed >> OUT; exit\" TERM; : > OUT.armed; sleep 1; echo child-lived >> OUT) & wait'\nExecStartPost=/bin/sh -c 'while [ ! -e OUT.armed ]; do sleep 0.01; done'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "child-killed\n",
        ..CASE
    },
    Case {
        name: "argv0.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=@/bin/sh called -c 'echo $0 > OUT'\n",
        settles: ("active", "exited"),
        writes: "called\n",
        ..CASE
    },
    Case {
        name: "instance@a-b.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo %n %N %p %i %I %f %j > OUT'\n",
        settles: ("active", "exited"),
        writes: "instance@a-b.service instance@a-b instance a-b a/b /a/b instance\n",
        ..CASE
    },
    Case {
        name: "start-limit.service",
        unit: "[Unit]\nStartLimitIntervalSec=30\nStartLimitBurst=3\n[Service]\nRestart=always\nRestartSec=50ms\nExecStart=/bin/sh -c 'echo x >> OUT; exit 1'\nExecStopPost=/bin/sh -c 'echo $SERVICE_RESULT >> OUT'\n",
        settles: ("failed", "failed"),
        writes: "x\nexit-code\nx\nexit-code\nx\nexit-code\n",
        ..CASE
    },
    Case {
        name: "requires.service",
        unit: "[Unit]\nRequires=requires-dep.service\nAfter=requires-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "requires-dep.service",
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'sleep 0.2; echo dep >> OUT'\n",
        )],
        settles: ("active", "exited"),
        writes: "dep\nmain\n",
        ..CASE
    },
    Case {
        // A wanted unit that fails holds nothing up.
        name: "wants.service",
        unit: "[Unit]\nWants=wants-dep.service\nAfter=wants-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "wants-dep.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo dep >> OUT; exit 1'\n",
        )],
        settles: ("active", "exited"),
        writes: "dep\nmain\n",
        ..CASE
    },
    Case {
        // A required unit that fails: the unit does not run.
        name: "requires-failed.service",
        unit: "[Unit]\nRequires=requires-failed-dep.service\nAfter=requires-failed-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "requires-failed-dep.service",
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo dep >> OUT; exit 1'\n",
        )],
        settles: ("inactive", "dead"),
        writes: "dep\n",
        ..CASE
    },
    Case {
        // Before= on the other side orders the same way.
        name: "before.service",
        unit: "[Unit]\nWants=before-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "before-dep.service",
            "[Unit]\nBefore=before.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'sleep 0.2; echo dep >> OUT'\n",
        )],
        settles: ("active", "exited"),
        writes: "dep\nmain\n",
        ..CASE
    },
    Case {
        // [Install] WantedBy= of a loaded unit pulls it in with the unit it names.
        name: "wanted.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'sleep 0.2; echo main >> OUT'\n",
        others: &[(
            "wanted-by.service",
            "[Unit]\nBefore=wanted.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo by >> OUT'\n[Install]\nWantedBy=wanted.service\n",
        )],
        settles: ("active", "exited"),
        writes: "by\nmain\n",
        ..CASE
    },
    Case {
        // Starting a unit stops the units it conflicts with.
        name: "conflicts.service",
        unit: "[Unit]\nConflicts=conflicts-other.service\nAfter=conflicts-other.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "conflicts-other.service",
            "[Service]\nExecStart=/bin/sleep 600\nExecStopPost=/bin/sh -c 'echo other-stopped >> OUT'\n",
        )],
        first: &["conflicts-other.service"],
        settles: ("active", "exited"),
        writes: "other-stopped\nmain\n",
        ..CASE
    },
    Case {
        // A unit bound to another (a sidekick) stops with it.
        name: "bound.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\n",
        others: &[(
            "bound-sidekick.service",
            "[Unit]\nBindsTo=bound.service\nAfter=bound.service\n[Service]\nExecStart=/bin/sleep 600\nExecStopPost=/bin/sh -c 'echo sidekick-stopped >> OUT'\n",
        )],
        first: &["bound-sidekick.service"],
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "sidekick-stopped\n",
    },
    Case {
        // A stop fleetd asked for: ExecStopPost= is told the main process was killed.
        name: "stoppost-stopped.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "success killed TERM\n",
        ..CASE
    },
    Case {
        name: "stoppost-oneshot.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/true\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        settles: ("inactive", "dead"),
        writes: "success exited 0\n",
        ..CASE
    },
    Case {
        name: "stoppost-remain.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\nExecStopPost=/bin/sh -c 'echo \"$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS\" > OUT'\n",
        stopped_at: Some(("active", "exited")),
        settles: ("inactive", "dead"),
        writes: "success exited 0\n",
        ..CASE
    },
    Case {
        // A oneshot's ExecStop= runs once its ExecStart= is done.
        name: "oneshot-stop.service",
        unit: "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo a >> OUT'\nExecStart=/bin/sh -c 'echo b >> OUT'\nExecStop=/bin/sh -c 'echo stop >> OUT'\n",
        settles: ("inactive", "dead"),
        writes: "a\nb\nstop\n",
        ..CASE
    },
    Case {
        name: "mainpid.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\nExecStop=/bin/sh -c 'test -n \"$MAINPID\" && kill $MAINPID && echo killed-by-stop >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "killed-by-stop\n",
        ..CASE
    },
    Case {
        // SIGTERM to the main process, then SIGKILL to what is left of the unit.
        name: "kill-mixed.service",
        unit: "[Service]\nKillMode=mixed\nExecStart=/bin/sh -c '(trap \"echo child-term >> OUT; exit\" TERM; sleep 1; echo child-lived >> OUT) & wait'\nExecStopPost=/bin/sh -c 'echo post >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "post\n",
        ..CASE
    },
    Case {
        // Nothing is signalled: the process finishes on its own after the stop.
        name: "kill-none.service",
        unit: "[Service]\nKillMode=none\nExecStart=/bin/sh -c 'trap \"echo term >> OUT\" TERM; sleep 1; echo lived >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "lived\n",
        ..CASE
    },
    Case {
        // SIGTERM outlived, and no SIGKILL: the process lives on past the timeout.
        // (Its sleeps end at each SIGTERM, the loop goes on: after the timeout ExecStopPost=
        // runs, then a second SIGTERM, and the process ends on its own.)
        name: "no-sigkill.service",
        unit: "[Service]\nTimeoutStopSec=1\nSendSIGKILL=no\nExecStart=/bin/sh -c 'trap \"echo term >> OUT\" TERM; echo up > OUT; for i in $(seq 30); do sleep 0.1; done; echo lived >> OUT'\nExecStopPost=/bin/sh -c 'echo $SERVICE_RESULT >> OUT'\n",
        stopped_at: Some(("active", "running")),
        settles: ("failed", "failed"),
        writes: "up\nterm\ntimeout\nterm\nlived\n",
        ..CASE
    },
    Case {
        name: "timeout-sec.service",
        unit: "[Service]\nType=oneshot\nTimeoutSec=1\nExecStart=/bin/sh -c 'echo a > OUT; exec sleep 30'\nExecStopPost=/bin/sh -c 'echo $SERVICE_RESULT >> OUT'\n",
        settles: ("failed", "failed"),
        writes: "a\ntimeout\n",
        ..CASE
    },
    Case {
        // Only a signal other than the clean ones is abnormal: an exit code is not.
        name: "on-abnormal.service",
        unit: "[Service]\nRestart=on-abnormal\nRestartSec=100ms\nExecStart=/bin/sh -c 'echo x >> OUT; [ $(wc -l < OUT) -ge 2 ] && exit 3; kill -ABRT $$$$'\n",
        settles: ("failed", "failed"),
        writes: "x\nx\n",
        ..CASE
    },
    Case {
        name: "start-limit-old-name.service",
        unit: "[Unit]\nStartLimitInterval=30\nStartLimitBurst=2\n[Service]\nRestart=always\nRestartSec=50ms\nExecStart=/bin/sh -c 'echo x >> OUT; exit 1'\n",
        settles: ("failed", "failed"),
        writes: "x\nx\n",
        ..CASE
    },
    Case {
        // A requisite that is not active: the start fails at once, nothing runs.
        name: "requisite.service",
        unit: "[Unit]\nRequisite=requisite-dep.service\nAfter=requisite-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "requisite-dep.service",
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo dep >> OUT'\n",
        )],
        settles: ("inactive", "dead"),
        writes: "",
        ..CASE
    },
    Case {
        name: "requisite-met.service",
        unit: "[Unit]\nRequisite=requisite-met-dep.service\nAfter=requisite-met-dep.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "requisite-met-dep.service",
            "[Service]\nExecStart=/bin/sh -c 'echo dep >> OUT; exec sleep 600'\n",
        )],
        first: &["requisite-met-dep.service"],
        settles: ("active", "exited"),
        writes: "dep\nmain\n",
        ..CASE
    },
    Case {
        // [Install] RequiredBy= of a loaded unit: it is required, so its failure holds the unit.
        name: "required.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo main >> OUT'\n",
        others: &[(
            "required-by.service",
            "[Unit]\nBefore=required.service\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo by >> OUT; exit 1'\n[Install]\nRequiredBy=required.service\n",
        )],
        settles: ("inactive", "dead"),
        writes: "by\n",
        ..CASE
    },
    Case {
        // `:` keeps `$A` as it is written; `+` runs as root whatever User= says.
        name: "prefixes.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nEnvironment=A=x\nExecStart=:/bin/sh -c 'echo \"$1\" > OUT' sh $A\nExecStartPost=+/bin/sh -c 'id -un >> OUT'\nExecStartPost=/bin/sh -c 'id -un >> OUT'\n",
        settles: ("active", "exited"),
        writes: "$A\nroot\nnobody\n",
        ..CASE
    },
    Case {
        name: "escapes.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironment=N=%n\nExecStart=/bin/sh -c 'echo \"a\\x41b\\tc $N 100%%\" > OUT'\n",
        settles: ("active", "exited"),
        writes: "aAb\tc escapes.service 100%\n",
        ..CASE
    },
    Case {
        // The manager's own user and directories (a system manager's).
        name: "manager-specifiers.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo %u %U %h %t %S %C %L %E %T %V > OUT; [ \"%s\" = \"$(getent passwd root | cut -d: -f7)\" ] && echo shell >> OUT'\n",
        settles: ("active", "exited"),
        writes: "root 0 /root /run /var/lib /var/cache /var/log /etc /tmp /var/tmp\nshell\n",
        ..CASE
    },
    Case {
        // The host's names, as each manager's machine has them.
        name: "host-specifiers.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'h=$(cat /proc/sys/kernel/hostname); [ \"%H\" = \"$h\" ] && [ \"%l\" = \"$${h%%%%.*}\" ] && [ \"%m\" = \"$(cat /etc/machine-id)\" ] && [ \"%b\" = \"$(tr -d - < /proc/sys/kernel/random/boot_id)\" ] && echo same > OUT'\n",
        settles: ("active", "exited"),
        writes: "same\n",
        ..CASE
    },
    Case {
        // A numeric User=, and a working directory that may be missing (`-`: the root).
        name: "uid.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=65534\nWorkingDirectory=-/nonexistent\nExecStart=/bin/sh -c 'echo $(id -u) $(pwd) > OUT'\n",
        settles: ("active", "exited"),
        writes: "65534 /\n",
        ..CASE
    },
    Case {
        // EnvironmentFile= wins over Environment=, whatever their order.
        name: "env-precedence.service",
        unit: "[Service]\nType=oneshot\nRemainAfterExit=yes\nEnvironmentFile=/etc/os-release\nEnvironment=ID=mine\nExecStart=/bin/sh -c 'echo $ID > OUT'\n",
        settles: ("active", "exited"),
        writes: "debian\n",
        ..CASE
    },
    Case {
        name: "part.service",
        unit: "[Service]\nExecStart=/bin/sleep 600\n",
        others: &[(
            "part-of.service",
            "[Unit]\nPartOf=part.service\nAfter=part.service\n[Service]\nExecStart=/bin/sleep 600\nExecStopPost=/bin/sh -c 'echo part-stopped >> OUT'\n",
        )],
        first: &["part-of.service"],
        stopped_at: Some(("active", "running")),
        settles: ("inactive", "dead"),
        writes: "part-stopped\n",
    },
];

/// Runs every case under `manager`, its files in `out`; what each left: (state, file).
async fn run_all(manager: &dyn UnitManager, out: &Path) -> Vec<((String, String), String)> {
    let mut left = Vec::new();
    for case in CASES {
        let file = out.join(case.name);
        let load = |name: &'static str, text: &'static str| {
            let text = text.replace("OUT", &file.display().to_string());
            async move {
                let name = UnitName::new(name).unwrap();
                manager
                    .load(&name, &UnitFile::parse(&text).unwrap())
                    .await
                    .unwrap();
                name
            }
        };
        let mut loaded = Vec::new();
        for (other, text) in case.others {
            loaded.push(load(other, text).await);
        }
        let name = load(case.name, case.unit).await;
        loaded.push(name.clone());
        for first in case.first {
            let first = UnitName::new(*first).unwrap();
            manager.start(&first).await.unwrap();
            settled(manager, &first, ("active", "running")).await;
        }
        // A start that cannot succeed may be refused at once (natively) or fail as a job
        // (systemd): either way the state it leaves is what is compared.
        if let Err(error) = manager.start(&name).await {
            eprintln!("{}: start: {error}", case.name);
        }
        if let Some(running) = case.stopped_at {
            settled(manager, &name, running).await;
            // Its commands set up what they do on a stop (traps) first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            manager.stop(&name).await.unwrap();
        }
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
        for name in loaded.iter().rev() {
            manager.unload(name).await.unwrap();
        }
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
    // This machine's names, as fleetd gives them (systemd reads the same ones in its sandbox).
    let machine = SupervisorConfig {
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .unwrap()
            .trim()
            .to_owned(),
        hostname: fleet_native::host::hostname(),
        boot_id: fleet_native::host::boot_id(),
        ..SupervisorConfig::under(native_dir.path(), Path::new(env!("CARGO_BIN_EXE_fleetd")))
    };
    let native: Arc<dyn UnitManager> = Arc::new(Supervisor::open(machine).unwrap());
    let on_systemd = run_all(systemd.as_ref(), &systemd_out).await;
    let on_native = run_all(native.as_ref(), &native_out).await;
    // Every difference at once: one run says all a change broke.
    let mut differences = Vec::new();
    for ((case, systemd), native) in CASES.iter().zip(&on_systemd).zip(&on_native) {
        let expected = (
            (case.settles.0.to_owned(), case.settles.1.to_owned()),
            case.writes.to_owned(),
        );
        if *systemd != expected {
            differences.push(format!(
                "{} on systemd: {systemd:?}, expected {expected:?}",
                case.name
            ));
        }
        if native != systemd {
            differences.push(format!(
                "{} natively: {native:?}, on systemd {systemd:?}",
                case.name
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
