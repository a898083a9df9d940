//! `fleetctl status UNIT...`: fleet ran `systemctl status -l UNIT` on the unit's machine. Here:
//! the unit's state and machine from the API, laid out like systemctl's summary, and its last
//! log lines from that machine's fleetd (over ssh when it is another machine, as `journal`
//! does). A global unit is shown once per machine it runs on.

use std::io;

use fleet_api::client::Client;
use fleet_api::schema::{Machine, Unit, UnitState};
use fleet_unit::name::mangle;

use super::flags::{self, value, Flag};
use super::journal::{show_log, LogRequest, Output};
use super::list_units::machine_column;
use crate::{Globals, Io};

const FLAGS: &[Flag] = &[value(&["ssh-port"])];

/// Log lines shown under the summary, as systemctl shows.
const LOG_LINES: usize = 10;

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(parsed) = flags::or_explain(flags::parse(args, FLAGS, false), io)? else {
        return Ok(1);
    };
    let Some(ssh_port) = flags::or_explain(flags::number(&parsed, "ssh-port", 22), io)? else {
        return Ok(1);
    };
    if parsed.args.is_empty() {
        writeln!(io.err, "No units given")?;
        return Ok(1);
    }
    let client = globals.client();
    // Every unit is checked before anything is shown, as fleet did.
    let mut units = Vec::new();
    for arg in &parsed.args {
        let name = mangle(arg);
        match client.unit(&name) {
            Ok(Some(unit)) if unit.current_state == "inactive" => {
                writeln!(io.err, "Unit {name} does not appear to be loaded.")?;
                return Ok(1);
            }
            Ok(Some(unit)) => units.push(unit),
            Ok(None) => {
                writeln!(io.err, "Unit {name} does not exist.")?;
                return Ok(1);
            }
            Err(e) => {
                writeln!(io.err, "Error retrieving unit: {e}")?;
                return Ok(1);
            }
        }
    }
    let machines = client.machines().unwrap_or_default();
    let mut first = true;
    for unit in &units {
        let states = match client.states_of(&unit.name) {
            Ok(states) => states,
            Err(e) => {
                writeln!(io.err, "Error retrieving the state of {}: {e}", unit.name)?;
                return Ok(1);
            }
        };
        let global = unit.is_global();
        let states = states
            .into_iter()
            .filter(|s| global || s.machine_id == unit.machine_id);
        for state in states {
            // The blank line between units matches systemctl status.
            if !std::mem::take(&mut first) {
                writeln!(io.out)?;
            }
            let code = show(globals, &client, unit, &state, &machines, ssh_port, io)?;
            if code != 0 {
                return Ok(code);
            }
        }
    }
    Ok(0)
}

/// The summary of `unit` on `state`'s machine, then its log there.
fn show(
    globals: &Globals,
    client: &Client,
    unit: &Unit,
    state: &UnitState,
    machines: &[Machine],
    ssh_port: u16,
    io: &mut Io<'_>,
) -> io::Result<i32> {
    let description = unit
        .options
        .iter()
        .rfind(|o| o.section == "Unit" && o.name == "Description")
        .map(|o| format!(" - {}", o.value))
        .unwrap_or_default();
    let dot = match state.systemd_active_state.as_str() {
        "active" => "●",
        _ => "○",
    };
    let ip = machines
        .iter()
        .find(|m| m.id == state.machine_id)
        .map(|m| m.primary_ip.as_str());
    writeln!(io.out, "{dot} {}{description}", unit.name)?;
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
    writeln!(io.out)?;
    let request = LogRequest {
        name: unit.name.clone(),
        lines: LOG_LINES,
        follow: false,
        output: Output::Short,
        sudo: false,
        ssh_port,
    };
    show_log(globals, client, &request, Some(&state.machine_id), true, io)
}
