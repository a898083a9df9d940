//! `fleetctl list-unit-files`: the units of the cluster with their desired and current state,
//! as fleetctl 1.0 printed them.

use std::collections::BTreeMap;
use std::io;

use fleet_unit::UnitFile;
use fleet_wire::schema::{Machine, Unit};

use super::list_units::machine_column;
use super::table::{self, TableFlags};
use crate::{Globals, Io};

const DEFAULT: &[&str] = &["unit", "hash", "dstate", "state", "target"];
const VALID: &[&str] = &[
    "desc", "dstate", "global", "hash", "reason", "state", "target", "tmachine", "unit",
];

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(flags) = table::parse_or_explain(args, DEFAULT, VALID, io)? else {
        return Ok(1);
    };
    if flags.fields.iter().any(|f| f == "tmachine") {
        writeln!(
            io.err,
            "WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead"
        )?;
    }
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    let needs_machines = flags
        .fields
        .iter()
        .any(|f| f == "target" || f == "tmachine")
        && units.iter().any(|u| !u.machine_id.is_empty());
    let Some(machines) = super::machines_if(needs_machines, &client, io)? else {
        return Ok(1);
    };
    io.out
        .write_all(render(&flags, &units, &machines).as_bytes())?;
    Ok(0)
}

pub fn render(flags: &TableFlags, units: &[Unit], machines: &[Machine]) -> String {
    let ips: BTreeMap<&str, &str> = machines
        .iter()
        .map(|m| (m.id.as_str(), m.primary_ip.as_str()))
        .collect();
    // Each unit's file is built (and hashed, if asked) once, not once per column.
    let mut sorted: Vec<(&Unit, UnitFile, bool)> = units
        .iter()
        .map(|unit| {
            let file = unit.unit_file();
            let global = fleet_unit::Requirements::raw(&file).is_global();
            (unit, file, global)
        })
        .collect();
    sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    table::render(flags, &sorted, |(unit, file, global), field| {
        let global = *global;
        let target = || match (global, unit.machine_id.is_empty()) {
            (true, _) => "global".to_owned(),
            (false, true) => "-".to_owned(),
            (false, false) => machine_column(
                &unit.machine_id,
                ips.get(unit.machine_id.as_str()).copied(),
                flags.full,
            ),
        };
        match field {
            "unit" => unit.name.clone(),
            "hash" => table::hash(&file.hash().to_string(), flags.full),
            "dstate" => table::or_dash(&unit.desired_state),
            "state" => match global {
                true => "-".into(),
                false => table::or_dash(&unit.current_state),
            },
            "target" | "tmachine" => target(),
            "desc" => table::or_dash(file.description().unwrap_or_default()),
            "global" => global.to_string(),
            // Ours: why the engine cannot place it, or start it yet.
            "reason" => match (
                unit.unplaceable_reason.is_empty(),
                unit.waiting_for.is_empty(),
            ) {
                (false, _) => unit.unplaceable_reason.clone(),
                (true, false) => fleet_unit::requirements::waiting_reason(&unit.waiting_for),
                (true, true) => table::or_dash(&unit.rescheduling),
            },
            _ => "-".into(),
        }
    })
}
