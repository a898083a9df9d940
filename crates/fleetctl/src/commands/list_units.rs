//! `fleetctl list-units [--no-legend] [--full]`: the state of every unit on every machine, as
//! fleetctl 1.0 printed it (default fields unit, machine, active, sub).

use std::collections::BTreeMap;
use std::io;

use fleet_api::schema::{Machine, UnitState};

use crate::tabwriter;
use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let mut legend = true;
    let mut full = false;
    for arg in args {
        match arg.as_str() {
            "--no-legend" | "-no-legend" => legend = false,
            "--full" | "-full" | "--l" | "-l" => full = true,
            other => {
                writeln!(io.err, "Unknown flag {other:?} for list-units")?;
                return Ok(1);
            }
        }
    }
    let client = globals.client();
    let states = match client.states() {
        Ok(states) => states,
        Err(e) => {
            writeln!(
                io.err,
                "Error retrieving list of units from repository: {e}"
            )?;
            return Ok(1);
        }
    };
    let machines = match states.iter().any(|s| !s.machine_id.is_empty()) {
        true => match client.machines() {
            Ok(machines) => machines,
            Err(e) => {
                writeln!(io.err, "Error retrieving list of machines: {e}")?;
                return Ok(1);
            }
        },
        false => Vec::new(),
    };
    io.out
        .write_all(table(&states, &machines, legend, full).as_bytes())?;
    Ok(0)
}

/// The table of `states` (machine addresses from `machines`).
pub fn table(states: &[UnitState], machines: &[Machine], legend: bool, full: bool) -> String {
    let ips: BTreeMap<&str, &str> = machines
        .iter()
        .map(|m| (m.id.as_str(), m.primary_ip.as_str()))
        .collect();
    let mut sorted: Vec<&UnitState> = states.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.machine_id).cmp(&(&b.name, &b.machine_id)));
    let mut rows = Vec::with_capacity(sorted.len() + 1);
    if legend {
        rows.push(
            ["UNIT", "MACHINE", "ACTIVE", "SUB"]
                .map(String::from)
                .to_vec(),
        );
    }
    for state in sorted {
        let machine = machine_column(
            &state.machine_id,
            ips.get(state.machine_id.as_str()).copied(),
            full,
        );
        rows.push(vec![
            state.name.clone(),
            machine,
            state.systemd_active_state.clone(),
            state.systemd_sub_state.clone(),
        ]);
    }
    tabwriter::format(&rows)
}

/// `0b8a1f4e.../10.0.0.1`; the full ID with `--full`; no address part when it is unknown.
pub fn machine_column(id: &str, ip: Option<&str>, full: bool) -> String {
    if id.is_empty() {
        return "-".into();
    }
    let shown = match full {
        true => id.to_owned(),
        false => format!("{}...", id.chars().take(8).collect::<String>()),
    };
    match ip.filter(|ip| !ip.is_empty()) {
        Some(ip) => format!("{shown}/{ip}"),
        None => shown,
    }
}
