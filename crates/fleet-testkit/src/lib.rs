//! Test support. Everything here starts real components (no fakes) and tears them down on
//! drop, also when a test fails; every wait is bounded.

pub mod etcd;
pub mod measure;
pub mod netns;
pub mod sshd;
pub mod systemd;
pub mod wait;

pub use etcd::{DataDir, EtcdCluster, EtcdServer, TlsFiles};
pub use netns::Network;
pub use sshd::SshServer;
pub use systemd::SystemdSandbox;

use std::process::{Command, Stdio};

/// Whether `child` exits within `within` (polled every 20 ms).
pub fn exits_within(child: &mut std::process::Child, within: std::time::Duration) -> bool {
    wait::within(within, wait::EVERY, || match child.try_wait() {
        Ok(None) => Err(String::new()),
        _ => Ok(()),
    })
    .is_ok()
}

/// A valid machine ID (32 lowercase hex digits, as /etc/machine-id) for a test's machine
/// `label`, the same for the same label: a label that is one already, else its bytes in hex
/// (up to 12 of them), zeros, then a hash of the whole label, so long labels that share a
/// start still differ.
pub fn machine_id(label: &str) -> String {
    if label.len() == 32
        && label
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return label.to_owned();
    }
    let mut id: String = label.bytes().take(12).map(|b| format!("{b:02x}")).collect();
    while id.len() < 24 {
        id.push('0');
    }
    // FNV-1a, 32 bits.
    let hash = label.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    id.push_str(&format!("{hash:08x}"));
    id
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
