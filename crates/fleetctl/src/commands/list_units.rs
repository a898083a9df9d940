//! `fleetctl list-units`: the state of every unit on every machine, as fleetctl 1.0 printed it.

use std::collections::BTreeMap;
use std::io;

use fleet_wire::schema::{Machine, UnitState};

use super::table::{self, TableFlags};
use crate::{Globals, Io};

const DEFAULT: &[&str] = &["unit", "machine", "active", "sub"];
const VALID: &[&str] = &[
    "active", "hash", "health", "load", "machine", "reason", "sub", "unit",
];

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(flags) = table::parse_or_explain(args, DEFAULT, VALID, io)? else {
        return Ok(1);
    };
    let client = globals.client();
    let Some(states) = super::fetched(
        io,
        "Error retrieving list of units from repository",
        client.states(),
    )?
    else {
        return Ok(1);
    };
    let needs_machines = flags.fields.iter().any(|f| f == "machine")
        && states.iter().any(|s| !s.machine_id.is_empty());
    let Some(machines) = super::machines_if(needs_machines, &client, io)? else {
        return Ok(1);
    };
    io.out
        .write_all(render(&flags, &states, &machines).as_bytes())?;
    Ok(0)
}

/// The table of `states` (machine addresses from `machines`), sorted by unit then machine.
pub fn render(flags: &TableFlags, states: &[UnitState], machines: &[Machine]) -> String {
    let ips: BTreeMap<&str, &str> = machines
        .iter()
        .map(|m| (m.id.as_str(), m.primary_ip.as_str()))
        .collect();
    let mut sorted: Vec<&UnitState> = states.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.machine_id).cmp(&(&b.name, &b.machine_id)));
    table::render(flags, &sorted, |state, field| match field {
        "unit" => state.name.clone(),
        "machine" => machine_column(
            &state.machine_id,
            ips.get(state.machine_id.as_str()).copied(),
            flags.full,
        ),
        "active" => state.systemd_active_state.clone(),
        "sub" => state.systemd_sub_state.clone(),
        "load" => state.systemd_load_state.clone(),
        "hash" => table::hash(&state.hash, flags.full),
        // Ours: why its machine's init system refused it.
        "reason" => table::or_dash(&state.reason),
        // Ours: what its health checks last said.
        "health" => table::or_dash(&state.health),
        _ => "-".into(),
    })
}

/// `0b8a1f4e.../10.0.0.1`; the full ID with `--full`; no address part when it is unknown.
pub fn machine_column(id: &str, ip: Option<&str>, full: bool) -> String {
    let shown = table::machine_id(id, full);
    match ip.filter(|ip| !ip.is_empty() && !id.is_empty()) {
        Some(ip) => format!("{shown}/{ip}"),
        None => shown,
    }
}
