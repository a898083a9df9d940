//! A service unit as the native supervisor runs it: the `[Unit]`, `[Service]` and `[Install]`
//! options it implements, read with systemd's rules (later assignments win, an empty one resets
//! a list, specifiers resolved). Options it does not implement are listed as warnings, never
//! silently dropped; values it cannot use make the unit fail to load, with the reason.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use fleet_unit::{UnitFile, UnitOption};

use super::command::{parse_exec, ExecCommand};
use super::environment::parse_environment;
use super::specifiers::{resolve, SpecifierContext};
use super::timespan::parse_timespan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Simple,
    Exec,
    Oneshot,
    Forking,
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    ControlGroup,
    Mixed,
    Process,
    None,
}

/// `EnvironmentFile=`: a path, optional when written with a leading `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    pub path: PathBuf,
    pub optional: bool,
}

/// `WorkingDirectory=`: `~` is the user's home; a leading `-` makes a missing one harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkingDirectory {
    Path { path: PathBuf, optional: bool },
    Home,
}

/// The `[Unit]` and `[Install]` relations to other units on the same machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    pub requires: Vec<String>,
    pub requisite: Vec<String>,
    pub wants: Vec<String>,
    pub binds_to: Vec<String>,
    pub part_of: Vec<String>,
    pub conflicts: Vec<String>,
    pub after: Vec<String>,
    pub before: Vec<String>,
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub description: String,
    pub relations: Relations,
    pub service_type: ServiceType,
    pub remain_after_exit: bool,
    pub pid_file: Option<PathBuf>,
    pub exec_start_pre: Vec<ExecCommand>,
    pub exec_start: Vec<ExecCommand>,
    pub exec_start_post: Vec<ExecCommand>,
    pub exec_reload: Vec<ExecCommand>,
    pub exec_stop: Vec<ExecCommand>,
    pub exec_stop_post: Vec<ExecCommand>,
    /// `Environment=` assignments in order (later ones win).
    pub environment: Vec<(String, String)>,
    pub environment_files: Vec<EnvironmentFile>,
    pub working_directory: Option<WorkingDirectory>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub restart: RestartPolicy,
    pub restart_sec: Duration,
    pub start_limit_interval: Duration,
    pub start_limit_burst: u32,
    /// `None`: no timeout (`0` or `infinity`).
    pub timeout_start: Option<Duration>,
    pub timeout_stop: Option<Duration>,
    pub kill_mode: KillMode,
    pub kill_signal: i32,
    pub send_sigkill: bool,
    /// Options the supervisor does not implement, and other things a user should know.
    pub warnings: Vec<String>,
}

/// Why a unit cannot be loaded; its state becomes load=error with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Options whose absence changes a default.
#[derive(Debug, Clone, Copy, Default)]
struct Given {
    service_type: bool,
    timeout_start: bool,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
const SECONDS: Duration = Duration::from_secs(1);

/// Signals by name, for `KillSignal=` (Linux numbers).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("WINCH", 28),
];

impl Service {
    /// Reads `unit` (named `context.unit_name`) for the supervisor.
    pub fn load(unit: &UnitFile, context: &SpecifierContext) -> Result<Service, LoadError> {
        if !context.unit_name.ends_with(".service") {
            let kind = context.unit_name.rsplit('.').next().unwrap_or("");
            return Err(LoadError(format!(
                "unit type {kind} is not supported by the native supervisor (only .service units)"
            )));
        }
        let mut service = Service {
            description: String::new(),
            relations: Relations::default(),
            service_type: ServiceType::Simple,
            remain_after_exit: false,
            pid_file: None,
            exec_start_pre: Vec::new(),
            exec_start: Vec::new(),
            exec_start_post: Vec::new(),
            exec_reload: Vec::new(),
            exec_stop: Vec::new(),
            exec_stop_post: Vec::new(),
            environment: Vec::new(),
            environment_files: Vec::new(),
            working_directory: None,
            user: None,
            group: None,
            umask: None,
            restart: RestartPolicy::No,
            restart_sec: Duration::from_millis(100),
            start_limit_interval: Duration::from_secs(10),
            start_limit_burst: 5,
            timeout_start: Some(DEFAULT_TIMEOUT),
            timeout_stop: Some(DEFAULT_TIMEOUT),
            kill_mode: KillMode::ControlGroup,
            kill_signal: 15,
            send_sigkill: true,
            warnings: Vec::new(),
        };
        let mut given = Given::default();
        for option in unit.options() {
            let value = resolve(&joined(&option.value), context).map_err(|e| {
                LoadError(format!(
                    "[{}] {}={}: {e}",
                    option.section, option.name, option.value
                ))
            })?;
            let applied = service.apply(option, &value, &mut given);
            if let Err(why) = applied {
                return Err(LoadError(format!(
                    "[{}] {}={}: {why}",
                    option.section, option.name, option.value
                )));
            }
        }
        service.check(given)?;
        Ok(service)
    }

    /// Applies one option; `Err` for a value that cannot be used (`value`: continuations
    /// joined, specifiers resolved).
    fn apply(&mut self, option: &UnitOption, value: &str, given: &mut Given) -> Result<(), String> {
        let list = |target: &mut Vec<String>| {
            if value.trim().is_empty() {
                target.clear();
            } else {
                target.extend(value.split_whitespace().map(str::to_owned));
            }
        };
        let exec = |target: &mut Vec<ExecCommand>| -> Result<(), String> {
            if value.trim().is_empty() {
                target.clear();
                return Ok(());
            }
            target.extend(parse_exec(value).map_err(|e| e.to_string())?);
            Ok(())
        };
        let span = |default_infinite: bool| -> Result<Option<Duration>, String> {
            let parsed = parse_timespan(value, SECONDS).map_err(|e| e.to_string())?;
            Ok(match parsed {
                Some(d) if d.is_zero() && default_infinite => None,
                other => other,
            })
        };
        let r = &mut self.relations;
        match (option.section.as_str(), option.name.as_str()) {
            ("Unit", "Description") => self.description = value.to_owned(),
            ("Unit", "Documentation" | "DefaultDependencies") => {}
            ("Unit", "Requires") => list(&mut r.requires),
            ("Unit", "Requisite") => list(&mut r.requisite),
            ("Unit", "Wants") => list(&mut r.wants),
            ("Unit", "BindsTo") => list(&mut r.binds_to),
            ("Unit", "PartOf") => list(&mut r.part_of),
            ("Unit", "Conflicts") => list(&mut r.conflicts),
            ("Unit", "After") => list(&mut r.after),
            ("Unit", "Before") => list(&mut r.before),
            ("Install", "WantedBy") => list(&mut r.wanted_by),
            ("Install", "RequiredBy") => list(&mut r.required_by),
            ("Unit", "StartLimitIntervalSec") | ("Service", "StartLimitInterval") => {
                self.start_limit_interval = span(false)?.unwrap_or(Duration::ZERO);
            }
            ("Unit" | "Service", "StartLimitBurst") => {
                self.start_limit_burst = value.trim().parse().map_err(|_| "not a number")?;
            }
            ("Service", "Type") => {
                given.service_type = true;
                self.service_type = keyword(value, "service type", SERVICE_TYPES)?;
            }
            ("Service", "RemainAfterExit") => self.remain_after_exit = boolean(value)?,
            ("Service", "PIDFile") => self.pid_file = Some(PathBuf::from(value.trim())),
            ("Service", "ExecStartPre") => exec(&mut self.exec_start_pre)?,
            ("Service", "ExecStart") => exec(&mut self.exec_start)?,
            ("Service", "ExecStartPost") => exec(&mut self.exec_start_post)?,
            ("Service", "ExecReload") => exec(&mut self.exec_reload)?,
            ("Service", "ExecStop") => exec(&mut self.exec_stop)?,
            ("Service", "ExecStopPost") => exec(&mut self.exec_stop_post)?,
            ("Service", "Environment") => {
                if value.trim().is_empty() {
                    self.environment.clear();
                } else {
                    let parsed = parse_environment(value).map_err(|e| e.to_string())?;
                    self.environment.extend(parsed.values);
                    self.warnings.extend(parsed.warnings);
                }
            }
            ("Service", "EnvironmentFile") => {
                let value = value.trim();
                if value.is_empty() {
                    self.environment_files.clear();
                } else {
                    let (optional, path) = match value.strip_prefix('-') {
                        Some(path) => (true, path),
                        None => (false, value),
                    };
                    self.environment_files.push(EnvironmentFile {
                        path: absolute(path)?,
                        optional,
                    });
                }
            }
            ("Service", "WorkingDirectory") => {
                let value = value.trim();
                let (optional, path) = match value.strip_prefix('-') {
                    Some(path) => (true, path),
                    None => (false, value),
                };
                self.working_directory = match path {
                    "" => None,
                    "~" => Some(WorkingDirectory::Home),
                    path => Some(WorkingDirectory::Path {
                        path: absolute(path)?,
                        optional,
                    }),
                };
            }
            ("Service", "User") => self.user = non_empty(value),
            ("Service", "Group") => self.group = non_empty(value),
            ("Service", "UMask") => {
                let umask =
                    u32::from_str_radix(value.trim(), 8).map_err(|_| "not an octal mode")?;
                if umask > 0o777 {
                    return Err("not a file mode mask (0000 to 0777)".into());
                }
                self.umask = Some(umask);
            }
            ("Service", "Restart") => {
                self.restart = keyword(value, "restart policy", RESTART_POLICIES)?
            }
            ("Service", "RestartSec") => self.restart_sec = span(false)?.unwrap_or(Duration::MAX),
            ("Service", "TimeoutSec") => {
                given.timeout_start = true;
                self.timeout_start = span(true)?;
                self.timeout_stop = self.timeout_start;
            }
            ("Service", "TimeoutStartSec") => {
                given.timeout_start = true;
                self.timeout_start = span(true)?;
            }
            ("Service", "TimeoutStopSec") => self.timeout_stop = span(true)?,
            ("Service", "KillMode") => self.kill_mode = keyword(value, "kill mode", KILL_MODES)?,
            ("Service", "KillSignal") => self.kill_signal = signal(value)?,
            ("Service", "SendSIGKILL") => self.send_sigkill = boolean(value)?,
            ("Service", "NotifyAccess" | "GuessMainPID") => {}
            ("X-Fleet", _) => {}
            (section, name) => self.warnings.push(format!(
                "[{section}] {name}= is not supported by the native supervisor and is ignored"
            )),
        }
        Ok(())
    }

    /// systemd's defaults that depend on other options, and its checks once all are read.
    fn check(&mut self, given: Given) -> Result<(), LoadError> {
        if !given.service_type && self.exec_start.is_empty() {
            self.service_type = ServiceType::Oneshot;
        }
        let oneshot = self.service_type == ServiceType::Oneshot;
        if oneshot && !given.timeout_start {
            self.timeout_start = None;
        }
        if self.exec_start.is_empty() && !oneshot {
            return Err(LoadError(
                "Service has no ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.".into(),
            ));
        }
        if self.exec_start.len() > 1 && !oneshot {
            return Err(LoadError(
                "Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.".into(),
            ));
        }
        if oneshot
            && matches!(
                self.restart,
                RestartPolicy::Always | RestartPolicy::OnSuccess
            )
        {
            return Err(LoadError(
                "Service has Restart= set to either always or on-success, which isn't allowed for Type=oneshot services. Refusing.".into(),
            ));
        }
        if self.pid_file.is_some() && self.service_type != ServiceType::Forking {
            self.warnings
                .push("PIDFile= only has an effect with Type=forking".into());
        }
        Ok(())
    }

    /// Units this one pulls in when started (`Requires=`, `Wants=`, `BindsTo=`).
    pub fn pulled_in(&self) -> impl Iterator<Item = &String> {
        let r = &self.relations;
        r.requires.iter().chain(&r.wants).chain(&r.binds_to)
    }
}

const SERVICE_TYPES: &[(&str, ServiceType)] = &[
    ("simple", ServiceType::Simple),
    ("exec", ServiceType::Exec),
    ("oneshot", ServiceType::Oneshot),
    ("forking", ServiceType::Forking),
    ("notify", ServiceType::Notify),
];

const RESTART_POLICIES: &[(&str, RestartPolicy)] = &[
    ("no", RestartPolicy::No),
    ("always", RestartPolicy::Always),
    ("on-success", RestartPolicy::OnSuccess),
    ("on-failure", RestartPolicy::OnFailure),
    ("on-abnormal", RestartPolicy::OnAbnormal),
    ("on-abort", RestartPolicy::OnAbort),
    ("on-watchdog", RestartPolicy::OnWatchdog),
];

const KILL_MODES: &[(&str, KillMode)] = &[
    ("control-group", KillMode::ControlGroup),
    ("mixed", KillMode::Mixed),
    ("process", KillMode::Process),
    ("none", KillMode::None),
];

/// One of a fixed set of words; the error lists them.
fn keyword<T: Copy>(value: &str, what: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let value = value.trim();
    match choices.iter().find(|(word, _)| *word == value) {
        Some((_, choice)) => Ok(*choice),
        None => {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            Err(format!(
                "unknown {what} {value:?} (supported: {})",
                words.join(", ")
            ))
        }
    }
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        other => Err(format!("not a boolean: {other:?}")),
    }
}

fn signal(value: &str) -> Result<i32, String> {
    let value = value.trim();
    if let Ok(number) = value.parse::<i32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
    }
    let name = value.strip_prefix("SIG").unwrap_or(value);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| format!("unknown signal {value:?}"))
}

fn absolute(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute"));
    }
    Ok(PathBuf::from(path))
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// A value as systemd reads it: fleet keeps a continued line verbatim (its hash depends on
/// it), systemd joins it, each backslash-newline becoming a space, with comment lines inside
/// the continuation left out.
fn joined(value: &str) -> String {
    if !value.contains('\n') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for (index, line) in value.split('\n').enumerate() {
        let trimmed = line.trim_start();
        if index > 0 && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(body) => {
                out.push_str(body);
                out.push(' ');
            }
            None => out.push_str(line),
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_lines_are_joined_as_systemd_joins_them() {
        let check = |raw: &str, expected: &str| assert_eq!(joined(raw), expected, "{raw:?}");
        check("plain", "plain");
        check(
            "/bin/sh -c '\\\n  echo a; \\\n  echo b'",
            "/bin/sh -c '   echo a;    echo b'",
        );
        check("a \\\n# a comment\n b", "a   b");
        check("a \\\n", "a");
    }

    /// The etcd-registration sidekick of fleet's own documentation (`apache-discovery@.service`),
    /// continued over several lines.
    #[test]
    fn the_documented_sidekick_loads() {
        let text = "[Unit]\nDescription=Announce Apache on port %i\nBindsTo=apache@%i.service\nAfter=apache@%i.service\n\n[Service]\nExecStart=/bin/bash -c '\\\n  while true; do \\\n    curl -f ${COREOS_PUBLIC_IPV4}:%i; \\\n    if [ $? -eq 0 ]; then \\\n      etcdctl set /services/website/${COREOS_PUBLIC_IPV4} \\'{\"host\": \"%H\", \"port\": %i}\\' --ttl 30; \\\n    else \\\n      etcdctl rm /services/website/${COREOS_PUBLIC_IPV4}; \\\n    fi; \\\n    sleep 20; \\\n  done'\nExecStop=/usr/bin/etcdctl rm /services/website/${COREOS_PUBLIC_IPV4}\n\n[X-Fleet]\nMachineOf=apache@%i.service\n";
        let unit = UnitFile::parse(text).unwrap();
        let context = SpecifierContext {
            unit_name: "apache-discovery@8080.service".into(),
            hostname: "core-01".into(),
            ..SpecifierContext::default()
        };
        let service = Service::load(&unit, &context).unwrap();
        assert_eq!(service.description, "Announce Apache on port 8080");
        assert_eq!(service.relations.binds_to, vec!["apache@8080.service"]);
        let start = &service.exec_start[0];
        let (program, argv) = start.expand(&Default::default());
        assert_eq!(program, "/bin/bash");
        assert_eq!(argv.len(), 3, "{argv:?}");
        assert_eq!(argv[1], "-c");
        let script = argv[2].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            script,
            "while true; do curl -f :8080; if [ $? -eq 0 ]; then etcdctl set /services/website/ '{\"host\": \"core-01\", \"port\": 8080}' --ttl 30; else etcdctl rm /services/website/; fi; sleep 20; done"
        );
    }

    fn load(name: &str, text: &str) -> Result<Service, LoadError> {
        let unit = UnitFile::parse(text).unwrap();
        let context = SpecifierContext {
            unit_name: name.into(),
            machine_id: "m1".into(),
            ..SpecifierContext::default()
        };
        Service::load(&unit, &context)
    }

    fn check(text: &str, expected: Result<&str, &str>) {
        let loaded = load("x.service", text);
        match (loaded, expected) {
            (Ok(service), Ok(summary)) => assert_eq!(summary_of(&service), summary, "{text}"),
            (Err(e), Err(why)) => assert_eq!(e.0, why, "{text}"),
            (other, _) => panic!("{text}: unexpected {other:?}"),
        }
    }

    /// The fields a row is about, compactly.
    fn summary_of(s: &Service) -> String {
        let exec = |c: &[ExecCommand]| {
            c.iter()
                .map(ExecCommand::display)
                .collect::<Vec<_>>()
                .join(";")
        };
        format!(
            "type={:?} start={} pre={} restart={:?}/{:?} timeout={:?}/{:?} kill={:?}/{}/{} env={:?} warnings={}",
            s.service_type,
            exec(&s.exec_start),
            exec(&s.exec_start_pre),
            s.restart,
            s.restart_sec,
            s.timeout_start,
            s.timeout_stop,
            s.kill_mode,
            s.kill_signal,
            s.send_sigkill,
            s.environment,
            s.warnings.len(),
        )
    }

    #[test]
    fn services() {
        let rows: &[(&str, Result<&str, &str>)] = &[
            (
                "[Service]\nExecStart=/bin/sleep 100\n",
                Ok("type=Simple start=/bin/sleep 100 pre= restart=No/100ms timeout=Some(90s)/Some(90s) kill=ControlGroup/15/true env=[] warnings=0"),
            ),
            (
                "[Service]\nExecStartPre=-/bin/a\nExecStartPre=\nExecStartPre=/bin/b %m\nExecStart=/bin/c\nRestart=on-failure\nRestartSec=5\nTimeoutStartSec=0\nTimeoutStopSec=1min\nKillMode=mixed\nKillSignal=SIGINT\nSendSIGKILL=no\nEnvironment=\"A=1 2\" B=%n\n",
                Ok("type=Simple start=/bin/c pre=/bin/b m1 restart=OnFailure/5s timeout=None/Some(60s) kill=Mixed/2/false env=[(\"A\", \"1 2\"), (\"B\", \"x.service\")] warnings=0"),
            ),
            (
                "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/a\nExecStart=/bin/b\n",
                Ok("type=Oneshot start=/bin/a;/bin/b pre= restart=No/100ms timeout=None/Some(90s) kill=ControlGroup/15/true env=[] warnings=0"),
            ),
            (
                "[Unit]\nConditionPathExists=/x\n[Service]\nExecStart=/bin/a\nMemoryLimit=1G\n[X-Fleet]\nGlobal=true\n",
                Ok("type=Simple start=/bin/a pre= restart=No/100ms timeout=Some(90s)/Some(90s) kill=ControlGroup/15/true env=[] warnings=2"),
            ),
            ("[Service]\nType=idle\nExecStart=/bin/a\n", Err("[Service] Type=idle: unknown service type \"idle\" (supported: simple, exec, oneshot, forking, notify)")),
            ("[Service]\nExecStart=/bin/a \"x\n", Err("[Service] ExecStart=/bin/a \"x: unterminated quote")),
            ("[Service]\nExecStart=/bin/a\nRestartSec=soon\n", Err("[Service] RestartSec=soon: invalid time span \"soon\"")),
            ("[Service]\nExecStart=/bin/a %z\n", Err("[Service] ExecStart=/bin/a %z: unknown specifier %z")),
            ("[Service]\nExecStart=/bin/a\nKillSignal=SIGNOPE\n", Err("[Service] KillSignal=SIGNOPE: unknown signal \"SIGNOPE\"")),
            ("[Service]\nExecStart=/bin/a\nEnvironmentFile=relative\n", Err("[Service] EnvironmentFile=relative: path \"relative\" is not absolute")),
            (
                "[Service]\nExecStartPre=/bin/a\n",
                Ok("type=Oneshot start= pre=/bin/a restart=No/100ms timeout=None/Some(90s) kill=ControlGroup/15/true env=[] warnings=0"),
            ),
            ("[Service]\nType=simple\n", Err("Service has no ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.")),
            ("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n", Err("Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.")),
            ("[Service]\nType=oneshot\nExecStart=/bin/a\nRestart=always\n", Err("Service has Restart= set to either always or on-success, which isn't allowed for Type=oneshot services. Refusing.")),
        ];
        for (text, expected) in rows {
            check(text, *expected);
        }
    }

    #[test]
    fn relations_resolve_specifiers_and_reset() {
        let text = "[Unit]\nRequires=a.service b.service\nRequires=\nRequires=%p-db.service\nBindsTo=web@%i.service\nAfter=x.service y.service\n[Service]\nExecStart=/bin/a\n[Install]\nWantedBy=main.service\n";
        let service = load("side@1.service", text).unwrap();
        let r = &service.relations;
        assert_eq!(r.requires, vec!["side-db.service"]);
        assert_eq!(r.binds_to, vec!["web@1.service"]);
        assert_eq!(r.after, vec!["x.service", "y.service"]);
        assert_eq!(r.wanted_by, vec!["main.service"]);
        let pulled: Vec<&String> = service.pulled_in().collect();
        assert_eq!(pulled, vec!["side-db.service", "web@1.service"]);
    }

    #[test]
    fn only_service_units() {
        let unit = UnitFile::parse("[Timer]\nOnCalendar=daily\n").unwrap();
        let context = SpecifierContext {
            unit_name: "x.timer".into(),
            ..SpecifierContext::default()
        };
        let err = Service::load(&unit, &context).unwrap_err();
        assert_eq!(
            err.0,
            "unit type timer is not supported by the native supervisor (only .service units)"
        );
    }
}
