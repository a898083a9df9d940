//! Several hosts on one machine: each host a network namespace with one interface (`eth0`,
//! 10.77.0.<i+1>/24) on a bridge that lives in a namespace of its own, so nothing is added to
//! the root namespace. A host's link can go down (a full partition) and up again. Needs root
//! (and `ip` from iproute2).
//!
//! Namespaces are named `ft<pid>n<k>-...`: a test process that died without dropping its
//! network leaves names whose PID is gone, and the next `Network::create` deletes them.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::run_output;

static NETWORKS: AtomicUsize = AtomicUsize::new(0);

pub struct Network {
    prefix: String,
    hosts: usize,
}

impl Network {
    /// A switch and `hosts` hosts on it, every link up.
    pub fn create(hosts: usize) -> Result<Network, String> {
        assert!(hosts < 250, "one /24 holds the hosts");
        remove_stale();
        let prefix = format!(
            "ft{}n{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        // Dropped on failure half-way: whatever was made goes.
        let mut network = Network { prefix, hosts: 0 };
        let switch = network.switch();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..hosts {
            let ns = network.namespace(i);
            ip(&["netns", "add", &ns])?;
            network.hosts = i + 1;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("sw-h{i}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            let address = format!("{}/24", network.address(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(network)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The network namespace of host `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Host `i`'s address.
    pub fn address(&self, i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }

    /// `program` to run on host `i` (`ip netns exec`, which execs it: the child's PID is the
    /// program's).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(i)])
            .arg(program);
        command
    }

    /// Takes host `i`'s link down (a full partition) or up again.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.namespace(i), "link", "set", "eth0", state])
    }
}

impl Drop for Network {
    /// Deletes the namespaces. Processes still inside keep theirs alive: whoever started them
    /// must have ended them first.
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run_output(Command::new("ip").args(args))
        .map(|_| ())
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))
}

/// Deletes the namespaces of test processes that are gone.
fn remove_stale() {
    let Ok(list) = run_output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("ft")
            .and_then(|rest| rest.split_once('n'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // What a killed test left running there (fleetds, etcd, units) goes first.
            if let Ok(pids) = run_output(Command::new("ip").args(["netns", "pids", name])) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", name]);
        }
    }
}
