//! The system's OpenSSH client, as fleetctl uses it: to run a command on a cluster machine
//! (`ssh`, and `status`/`journal` of a unit on another machine) and to reach a bastion's API
//! (`--tunnel`). fleet 1.0 carried its own SSH client; ours is `ssh` itself, so the user's
//! agent, keys and `~/.ssh/config` apply as they do everywhere else.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_wire::client::Endpoint;

use crate::Io;

/// The ssh settings from the global flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    /// `--ssh-username` (`core`).
    pub user: String,
    /// `--known-hosts-file`, `~` expanded.
    pub known_hosts: PathBuf,
    /// `--strict-host-key-checking`: ask before trusting a new host, refuse a changed key.
    pub strict: bool,
    /// `--ssh-timeout`.
    pub timeout: Duration,
    /// `--tunnel`: the bastion `host[:port]` every connection goes through.
    pub tunnel: Option<String>,
}

impl Ssh {
    /// `ssh` with every option fleetctl sets, to `host:port`, running `remote` (a shell when
    /// `None`).
    pub fn command(
        &self,
        host: &str,
        port: u16,
        forward_agent: bool,
        remote: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let mut argv = vec!["ssh".to_owned()];
        argv.extend(self.options()?);
        if let Some(bastion) = &self.tunnel {
            let mut jump = vec!["ssh".to_owned()];
            jump.extend(self.options()?);
            jump.extend(self.address(bastion, 22)?);
            jump.insert(jump.len() - 1, "-W".into());
            jump.insert(jump.len() - 1, "%h:%p".into());
            argv.push("-o".into());
            argv.push(format!(
                "ProxyCommand={}",
                jump.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
            ));
        }
        if forward_agent {
            argv.push("-A".into());
        }
        argv.extend(host_args(host, port)?);
        if let Some(remote) = remote {
            argv.push(remote.to_owned());
        }
        Ok(argv)
    }

    /// The command a `--tunnel` request runs: stdin and stdout joined to the API at
    /// `endpoint`, as seen from the bastion.
    pub fn tunnel(&self, endpoint: &Endpoint) -> Result<Option<Vec<String>>, String> {
        let Some(bastion) = &self.tunnel else {
            return Ok(None);
        };
        let mut argv = vec!["ssh".to_owned()];
        argv.extend(self.options()?);
        match endpoint {
            Endpoint::Unix(socket) => {
                argv.extend(self.address(bastion, 22)?);
                argv.push(format!("fleetctl fd-forward {}", quote(socket)));
            }
            Endpoint::Http { host, .. } | Endpoint::Https { host, .. } => {
                argv.push("-W".into());
                argv.push(host.clone());
                argv.extend(self.address(bastion, 22)?);
            }
        }
        Ok(Some(argv))
    }

    fn options(&self) -> Result<Vec<String>, String> {
        let mut options = vec!["-l".to_owned(), self.user.clone()];
        let mut set = |option: String| {
            options.push("-o".into());
            options.push(option);
        };
        let seconds = self.timeout.as_secs_f64().ceil().max(1.0) as u64;
        set(format!("ConnectTimeout={seconds}"));
        // A connection that stops answering is given up after about three timeouts.
        set(format!("ServerAliveInterval={seconds}"));
        set("ServerAliveCountMax=3".into());
        // fleet's client printed nothing of its own; ssh's "Permanently added ..." neither.
        set("LogLevel=ERROR".into());
        if self.strict {
            if let Some(dir) = self.known_hosts.parent() {
                create_private_dir(dir)?;
            }
            set("StrictHostKeyChecking=ask".into());
            set(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        } else {
            set("StrictHostKeyChecking=no".into());
            set("UserKnownHostsFile=/dev/null".into());
        }
        Ok(options)
    }

    /// `-p PORT HOST` for `host[:port]` (`[v6]:port` too).
    fn address(&self, address: &str, default_port: u16) -> Result<Vec<String>, String> {
        let (host, port) = split_host_port(address, default_port)?;
        host_args(&host, port)
    }
}

/// `-p PORT HOST`; a host that ssh would read as an option, or that is no host, is refused.
fn host_args(host: &str, port: u16) -> Result<Vec<String>, String> {
    if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
        return Err(format!("invalid address {host:?}"));
    }
    Ok(vec!["-p".into(), port.to_string(), host.to_owned()])
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 address, into host and port.
pub fn split_host_port(address: &str, default_port: u16) -> Result<(String, u16), String> {
    let invalid = || format!("invalid address {address:?}");
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
        (host, after.strip_prefix(':'))
    } else if address.matches(':').count() > 1 {
        (address, None)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().map_err(|_| invalid())?,
        None => default_port,
    };
    host_args(host, port).map_err(|_| invalid())?;
    Ok((host.to_owned(), port))
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// `arg` as one word for a POSIX shell (the remote command line, a ProxyCommand).
pub fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return arg.to_owned();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `argv` with the terminal's stdin and stderr, copying its stdout to `io.out` as it
/// comes; its exit code (255 when ssh itself failed, as ssh reports).
pub fn relay(argv: &[String], io: &mut Io<'_>) -> io::Result<i32> {
    let mut child = spawn(argv, Stdio::piped())?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match stdout.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Err(e) = io.out.write_all(&buffer[..n]).and_then(|_| io.out.flush()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
    exit_code(child.wait()?)
}

/// Runs `argv` on the terminal (an interactive shell).
pub fn interactive(argv: &[String]) -> io::Result<i32> {
    exit_code(spawn(argv, Stdio::inherit())?.wait()?)
}

fn spawn(argv: &[String], stdout: Stdio) -> io::Result<std::process::Child> {
    let (program, args) = argv.split_first().expect("an argv names its program");
    Command::new(program)
        .args(args)
        .stdout(stdout)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))
}

fn exit_code(status: std::process::ExitStatus) -> io::Result<i32> {
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(strict: bool, tunnel: Option<&str>) -> Ssh {
        Ssh {
            user: "core".into(),
            known_hosts: PathBuf::from("/nonexistent-fleetctl-test/known_hosts"),
            strict,
            timeout: Duration::from_secs_f64(2.5),
            tunnel: tunnel.map(str::to_owned),
        }
    }

    const LOOSE: &str = "ssh -l core -o ConnectTimeout=3 -o ServerAliveInterval=3 -o ServerAliveCountMax=3 -o LogLevel=ERROR -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null";

    #[test]
    fn commands() {
        let check = |got: Result<Vec<String>, String>, expected: &str| {
            assert_eq!(got.map(|argv| argv.join(" ")), Ok(expected.to_owned()));
        };
        check(
            ssh(false, None).command("10.0.0.1", 22, false, Some("echo hi")),
            &format!("{LOOSE} -p 22 10.0.0.1 echo hi"),
        );
        check(
            ssh(false, None).command("::1", 2222, true, None),
            &format!("{LOOSE} -A -p 2222 ::1"),
        );
        check(
            ssh(false, Some("bastion:2200")).command("10.0.0.2", 22, false, Some("uptime")),
            &format!(
                "{LOOSE} -o ProxyCommand=ssh -l core -o ConnectTimeout=3 -o ServerAliveInterval=3 -o ServerAliveCountMax=3 -o LogLevel=ERROR -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p 2200 -W %h:%p bastion -p 22 10.0.0.2 uptime"
            ),
        );
        check(
            ssh(false, Some("bastion"))
                .tunnel(&Endpoint::Unix("/var/run/fleet.sock".into()))
                .map(Option::unwrap),
            &format!("{LOOSE} -p 22 bastion fleetctl fd-forward /var/run/fleet.sock"),
        );
        check(
            ssh(false, Some("[fd00::1]:22"))
                .tunnel(&Endpoint::Http {
                    host: "127.0.0.1:8080".into(),
                    prefix: String::new(),
                })
                .map(Option::unwrap),
            &format!("{LOOSE} -W 127.0.0.1:8080 -p 22 fd00::1"),
        );
        assert_eq!(
            ssh(false, None).tunnel(&Endpoint::Unix("/s".into())),
            Ok(None)
        );
    }

    #[test]
    fn strict_checking_uses_the_known_hosts_file_and_asks() {
        let dir = tempfile::tempdir().unwrap();
        let mut strict = ssh(true, None);
        strict.known_hosts = dir.path().join("fleetctl/known_hosts");
        let argv = strict.command("h", 22, false, None).unwrap().join(" ");
        assert!(argv.contains("-o StrictHostKeyChecking=ask"), "{argv}");
        assert!(argv.contains(&format!(
            "-o UserKnownHostsFile={}",
            strict.known_hosts.display()
        )));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fleetctl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn addresses() {
        type HostPort<'a> = Result<(&'a str, u16), ()>;
        let rows: &[(&str, HostPort)] = &[
            ("10.0.0.1", Ok(("10.0.0.1", 22))),
            ("10.0.0.1:2222", Ok(("10.0.0.1", 2222))),
            ("[fd00::1]:2222", Ok(("fd00::1", 2222))),
            ("fd00::1", Ok(("fd00::1", 22))),
            ("-oProxyCommand=x", Err(())),
            ("", Err(())),
            ("host:port", Err(())),
            ("a b", Err(())),
        ];
        for (address, expected) in rows {
            let got = split_host_port(address, 22).map_err(|_| ());
            let expected = expected.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(got, expected, "{address}");
        }
    }

    #[test]
    fn quoting() {
        for (arg, expected) in [
            ("hello@1.service", "hello@1.service"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("$(reboot)", "'$(reboot)'"),
        ] {
            assert_eq!(quote(arg), expected);
        }
    }
}
