//! A real OpenSSH server on a free loopback port, for the user running the tests, with a key of
//! its own held by an `ssh-agent` of its own: what `fleetctl ssh`, `status`, `journal` and
//! `--tunnel` are tested against. Everything lives in a temp dir and ends on drop.
//!
//! As root, sshd insists on its privilege-separation directory `/run/sshd`; rather than touch
//! the host's /run, the server runs in a mount namespace of its own with a private /run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, run_output};

const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SshServer {
    sshd: Child,
    agent: Child,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    host_key: String,
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    crate::wait::within(START_TIMEOUT, crate::wait::EVERY, || {
        done().then_some(()).ok_or_else(String::new)
    })
    .map_err(|_| format!("{what} within {START_TIMEOUT:?}"))
}

impl SshServer {
    /// Starts sshd and the agent. Sessions get `environment` (name, value) — a `PATH` that finds
    /// the fleetctl under test, a `FLEETCTL_ENDPOINT` — in addition to sshd's own.
    pub fn start(environment: &[(&str, &str)]) -> Result<SshServer, String> {
        let sshd_path = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("no sshd: install openssh-server")?;
        let dir = tempfile::Builder::new()
            .prefix("fleet-sshd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key"] {
            run_output(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(path(key)),
            )?;
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys"))
            .map_err(|e| e.to_string())?;
        let user = run_output(Command::new("id").arg("-un"))?;
        let port = free_port();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nAllowAgentForwarding yes\nAllowTcpForwarding yes\n",
            path("host_key").display(),
            path("authorized_keys").display(),
        );
        // One SetEnv line: sshd keeps only the first.
        if !environment.is_empty() {
            let pairs: Vec<String> = environment
                .iter()
                .map(|(name, value)| format!("\"{name}={value}\""))
                .collect();
            config.push_str(&format!("SetEnv {}\n", pairs.join(" ")));
        }
        std::fs::write(path("sshd_config"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(path("sshd.log")).map_err(|e| e.to_string())?;
        let root = run_output(Command::new("id").arg("-u"))? == "0";
        let mut command = match root {
            true => {
                let mut command = Command::new("unshare");
                command.args(["--mount", "--propagation", "private", "sh", "-c"]).arg(format!(
                    "mount -t tmpfs -o mode=755 fleet-sshd-run /run && mkdir -m 755 /run/sshd && exec {sshd_path} -D -e -f {}",
                    path("sshd_config").display()
                ));
                command
            }
            false => {
                let mut command = Command::new(sshd_path);
                command.args(["-D", "-e", "-f"]).arg(path("sshd_config"));
                command
            }
        };
        let sshd = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let agent_socket = path("agent.sock");
        let agent = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start ssh-agent: {e}"))?;
        let host_key = std::fs::read_to_string(path("host_key.pub")).map_err(|e| e.to_string())?;
        let host_key = host_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut server = SshServer {
            sshd,
            agent,
            dir,
            port,
            user,
            host_key,
        };
        // The socket file appears at bind(), before listen(): wait until it takes connections.
        wait_until("ssh-agent never listened on its socket", || {
            std::os::unix::net::UnixStream::connect(&agent_socket).is_ok()
        })?;
        run_output(
            Command::new("ssh-add")
                .arg("-q")
                .arg(server.dir.path().join("client_key"))
                .env("SSH_AUTH_SOCK", &agent_socket),
        )?;
        let log = server.dir.path().join("sshd.log");
        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        let mut exited = None;
        wait_until("sshd never listened", || {
            exited = server.sshd.try_wait().ok().flatten();
            exited.is_some() || std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening))
        })
        .map_err(|e| format!("{e}: {}", server.log()))?;
        if let Some(status) = exited {
            return Err(format!("sshd exited ({status}): {}", server.log()));
        }
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user sessions log in as (the one running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// `SSH_AUTH_SOCK` for clients: the agent holding the key sshd accepts.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The known_hosts line for this server (`[127.0.0.1]:PORT ssh-ed25519 ...`).
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        for child in [&mut self.sshd, &mut self.agent] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
