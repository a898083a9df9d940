//! `fleetctl list-machines`: the machines of the cluster, as fleetctl 1.0 printed them.

use std::io;

use fleet_wire::schema::Machine;

use super::table::{self, TableFlags};
use crate::{Globals, Io};

const DEFAULT: &[&str] = &["machine", "ip", "metadata"];
const VALID: &[&str] = &["ip", "machine", "metadata"];

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(flags) = table::parse_or_explain(args, DEFAULT, VALID, io)? else {
        return Ok(1);
    };
    let Some(machines) = super::fetched(
        io,
        "Error retrieving list of active machines",
        globals.client().machines(),
    )?
    else {
        return Ok(1);
    };
    io.out.write_all(render(&flags, &machines).as_bytes())?;
    Ok(0)
}

pub fn render(flags: &TableFlags, machines: &[Machine]) -> String {
    let mut sorted: Vec<&Machine> = machines.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    table::render(flags, &sorted, |machine, field| match field {
        "machine" => table::machine_id(&machine.id, flags.full),
        "ip" => table::or_dash(&machine.primary_ip),
        "metadata" => {
            let pairs: Vec<String> = machine
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            table::or_dash(&pairs.join(","))
        }
        _ => "-".into(),
    })
}
