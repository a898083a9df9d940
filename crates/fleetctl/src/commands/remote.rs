//! fleetctl run on another machine of the cluster over ssh, for what only that machine's
//! fleetd can answer (a unit's log, its status in systemd), as fleet ran systemctl and
//! journalctl there.

use std::io;

use fleet_wire::client::Client;

use super::ssh::machine_address;
use crate::{ssh, Globals, Io};

/// A machine to run fleetctl on, and how.
pub(crate) struct Remote<'a> {
    pub machine: &'a str,
    pub ssh_port: u16,
    /// Through `sudo` (`journal --sudo`).
    pub sudo: bool,
}

impl Remote<'_> {
    /// Runs `fleetctl COMMAND` (already quoted for the remote shell) on the machine, its
    /// output relayed; the remote exit code.
    pub fn fleetctl(
        &self,
        globals: &Globals,
        client: &Client,
        command: &str,
        io: &mut Io<'_>,
    ) -> io::Result<i32> {
        let address = match machine_address(client, self.machine) {
            Ok(address) => address,
            Err(e) => {
                writeln!(io.err, "Error getting machine IP: {e}")?;
                return Ok(1);
            }
        };
        let command = match self.sudo {
            true => format!("sudo fleetctl {command}"),
            false => format!("fleetctl {command}"),
        };
        match globals
            .ssh
            .command(&address, self.ssh_port, false, Some(&command))
        {
            Ok(argv) => ssh::relay(&argv, io),
            Err(e) => {
                writeln!(io.err, "Error running remote command: {e}")?;
                Ok(1)
            }
        }
    }
}
