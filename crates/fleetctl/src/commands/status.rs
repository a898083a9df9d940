//! `fleetctl status UNIT...`: fleet ran `systemctl status -l UNIT` on the unit's machine. Here:
//! the unit's reported state and machine from the API, and its last log lines from that
//! machine's fleetd, laid out like systemctl's summary.

use std::io;

use super::journal::short_format;
use super::list_units::machine_column;
use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(names) = super::unit_names(args, io)? else {
        return Ok(1);
    };
    let client = globals.client();
    let machines = client.machines().unwrap_or_default();
    let mut failed = false;
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            writeln!(io.out)?;
        }
        let state = match client.state(name) {
            Ok(Some(state)) => state,
            Ok(None) => {
                writeln!(io.err, "Unit {name} does not exist or has no state yet.")?;
                failed = true;
                continue;
            }
            Err(e) => {
                writeln!(io.err, "Error retrieving the state of {name}: {e}")?;
                failed = true;
                continue;
            }
        };
        let description = client
            .unit(name)
            .ok()
            .flatten()
            .and_then(|u| {
                u.options
                    .into_iter()
                    .rfind(|o| o.section == "Unit" && o.name == "Description")
            })
            .map(|o| format!(" - {}", o.value))
            .unwrap_or_default();
        let dot = if state.systemd_active_state == "active" {
            "●"
        } else {
            "○"
        };
        let ip = machines
            .iter()
            .find(|m| m.id == state.machine_id)
            .map(|m| m.primary_ip.as_str());
        writeln!(io.out, "{dot} {name}{description}")?;
        writeln!(io.out, "   Loaded: {}", state.systemd_load_state)?;
        writeln!(
            io.out,
            "   Active: {} ({})",
            state.systemd_active_state, state.systemd_sub_state
        )?;
        writeln!(
            io.out,
            "  Machine: {}",
            machine_column(&state.machine_id, ip, false)
        )?;
        if let Ok((machine, lines)) = client.journal(name, 10) {
            if !lines.is_empty() {
                writeln!(io.out)?;
                let host: String = machine.chars().take(8).collect();
                for line in lines {
                    writeln!(io.out, "{}", short_format(&line, &host, name))?;
                }
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}
