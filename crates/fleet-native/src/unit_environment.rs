//! The environment a unit's processes get, built as systemd builds it, plus what units written
//! for CoreOS and fleet expect to find.

use std::collections::BTreeMap;

use super::environment::{apply, parse_env_file};
use super::process::Identity;
use super::service::Service;

/// systemd's `PATH` for services.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the machine contributes to every unit's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineEnvironment {
    pub machine_id: String,
    /// Empty when the machine has none.
    pub public_ip: String,
}

/// `$HOME` and `$SHELL` as systemd sets them for `User=` (its "clean" credentials): no home
/// that is empty, `/` or relative, no shell that is empty, relative or one that refuses logins;
/// and neither for `nobody`, whom systemd knows without asking the user database (home `/`,
/// shell nologin).
fn login_home_and_shell(identity: &Identity) -> (Option<&str>, Option<&str>) {
    const NOLOGIN: &[&str] = &[
        "/bin/nologin",
        "/sbin/nologin",
        "/usr/bin/nologin",
        "/usr/sbin/nologin",
        "/bin/false",
        "/usr/bin/false",
        "/bin/true",
        "/usr/bin/true",
    ];
    if identity.user == "nobody" || identity.uid == 65534 {
        return (None, None);
    }
    let home = Some(identity.home.as_str()).filter(|h| h.starts_with('/') && *h != "/");
    let shell =
        Some(identity.shell.as_str()).filter(|s| s.starts_with('/') && !NOLOGIN.contains(s));
    (home, shell)
}

/// The environment, with the warnings of environment files that had bad lines. Order, later
/// winning: defaults (PATH, and USER/LOGNAME/HOME/SHELL when `User=` is set), fleet's
/// variables, `Environment=`, then `EnvironmentFile=`s (systemd's rule: files override).
/// `COREOS_PUBLIC_IPV4` is added last, and only if the unit did not set it.
pub fn unit_environment(
    service: &Service,
    identity: &Identity,
    machine: &MachineEnvironment,
) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut environment = BTreeMap::new();
    let mut warnings = Vec::new();
    environment.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    if service.user.is_some() {
        let (home, shell) = login_home_and_shell(identity);
        for (name, value) in [
            ("USER", Some(identity.user.as_str())),
            ("LOGNAME", Some(identity.user.as_str())),
            ("HOME", home),
            ("SHELL", shell),
        ] {
            if let Some(value) = value {
                environment.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    environment.insert("FLEET_MACHINE_ID".to_owned(), machine.machine_id.clone());
    environment.insert("FLEET_PUBLIC_IP".to_owned(), machine.public_ip.clone());
    apply(&mut environment, &service.environment);
    for file in &service.environment_files {
        match std::fs::read(&file.path) {
            Ok(bytes) => {
                let parsed = parse_env_file(&String::from_utf8_lossy(&bytes));
                apply(&mut environment, &parsed.values);
                let path = file.path.display();
                warnings.extend(parsed.warnings.into_iter().map(|w| format!("{path}: {w}")));
            }
            Err(e) if file.optional && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "Failed to load environment files: {}: {e}",
                    file.path.display()
                ))
            }
        }
    }
    if !environment.contains_key("COREOS_PUBLIC_IPV4") && !machine.public_ip.is_empty() {
        environment.insert("COREOS_PUBLIC_IPV4".to_owned(), machine.public_ip.clone());
    }
    Ok((environment, warnings))
}

#[cfg(test)]
mod tests {
    use fleet_unit::UnitFile;

    use super::*;
    use crate::specifiers::SpecifierContext;

    fn service(text: &str) -> Service {
        let context = SpecifierContext {
            unit_name: "x.service".into(),
            ..SpecifierContext::default()
        };
        Service::load(&UnitFile::parse(text).unwrap(), &context).unwrap()
    }

    fn identity() -> Identity {
        Identity {
            user: "app".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/app".into(),
            shell: "/bin/sh".into(),
        }
    }

    fn machine() -> MachineEnvironment {
        MachineEnvironment {
            machine_id: "m1".into(),
            public_ip: "10.0.0.7".into(),
        }
    }

    fn check(text: &str, expected: &[(&str, &str)], absent: &[&str]) {
        let (environment, _) = unit_environment(&service(text), &identity(), &machine()).unwrap();
        for (name, value) in expected {
            assert_eq!(
                environment.get(*name).map(String::as_str),
                Some(*value),
                "{name} in {text}"
            );
        }
        for name in absent {
            assert!(!environment.contains_key(*name), "{name} in {text}");
        }
    }

    #[test]
    fn environments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        std::fs::write(&file, "B=from-file\nCOREOS_PUBLIC_IPV4=1.2.3.4\n").unwrap();
        let file = file.display();
        check(
            "[Service]\nExecStart=/bin/true\n",
            &[
                ("PATH", DEFAULT_PATH),
                ("FLEET_MACHINE_ID", "m1"),
                ("FLEET_PUBLIC_IP", "10.0.0.7"),
                ("COREOS_PUBLIC_IPV4", "10.0.0.7"),
            ],
            &["USER", "HOME"],
        );
        check(
            "[Service]\nExecStart=/bin/true\nUser=app\nEnvironment=A=1 PATH=/opt/bin\n",
            &[
                ("USER", "app"),
                ("HOME", "/home/app"),
                ("A", "1"),
                ("PATH", "/opt/bin"),
            ],
            &[],
        );
        check(
            &format!("[Service]\nExecStart=/bin/true\nEnvironment=B=from-unit\nEnvironmentFile={file}\nEnvironmentFile=-/no/such/file\n"),
            &[("B", "from-file"), ("COREOS_PUBLIC_IPV4", "1.2.3.4")],
            &[],
        );
    }

    #[test]
    fn home_and_shell_are_set_as_systemd_cleans_them() {
        type HomeAndShell = (Option<&'static str>, Option<&'static str>);
        let cases: &[(&str, u32, &str, &str, HomeAndShell)] = &[
            (
                "app",
                1000,
                "/home/app",
                "/bin/bash",
                (Some("/home/app"), Some("/bin/bash")),
            ),
            ("svc", 998, "/", "/usr/sbin/nologin", (None, None)),
            ("svc", 998, "", "bash", (None, None)),
            (
                "svc",
                998,
                "/var/lib/svc",
                "/bin/false",
                (Some("/var/lib/svc"), None),
            ),
            ("nobody", 65534, "/nonexistent", "/bin/sh", (None, None)),
        ];
        for (user, uid, home, shell, expected) in cases {
            let identity = Identity {
                user: user.to_string(),
                uid: *uid,
                gid: *uid,
                home: home.to_string(),
                shell: shell.to_string(),
            };
            assert_eq!(
                login_home_and_shell(&identity),
                *expected,
                "{user} {home} {shell}"
            );
        }
    }

    #[test]
    fn a_missing_environment_file_fails_the_start() {
        let unit = "[Service]\nExecStart=/bin/true\nEnvironmentFile=/no/such/file\n";
        let err = unit_environment(&service(unit), &identity(), &machine()).unwrap_err();
        assert_eq!(
            err,
            "Failed to load environment files: /no/such/file: No such file or directory (os error 2)"
        );
    }
}
