//! Test support. Everything here starts real components (no fakes) and tears them down on
//! drop, also when a test fails; every wait is bounded.

pub mod etcd;
pub mod measure;
pub mod netns;
pub mod sshd;
pub mod systemd;

pub use etcd::{DataDir, EtcdCluster, EtcdServer, TlsFiles};
pub use netns::Network;
pub use sshd::SshServer;
pub use systemd::SystemdSandbox;

use std::process::{Command, Stdio};

/// Whether `child` exits within `within` (polled every 20 ms).
pub fn exits_within(child: &mut std::process::Child, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs `command` with no stdin; its trimmed stdout, or an error with the command and what it
/// printed.
pub(crate) fn run_output(command: &mut Command) -> Result<String, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
