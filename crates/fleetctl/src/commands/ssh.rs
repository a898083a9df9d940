//! `fleetctl ssh [-A|--forward-agent] [--machine|--unit] {MACHINE|UNIT} [COMMAND...]`: a shell,
//! or one command, on a machine of the cluster (given by a prefix of its ID, or by a unit that
//! runs there), through the system's ssh.

use std::io;

use fleet_unit::name::mangle;
use fleet_wire::client::Client;

use super::flags::{self, switch, value, Flag};
use crate::{ssh, Globals, Io};

const FLAGS: &[Flag] = &[
    value(&["machine", "m"]),
    value(&["unit", "u"]),
    switch(&["forward-agent", "A"]),
    value(&["ssh-port"]),
];

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(parsed) = flags::or_explain(flags::parse(args, FLAGS, true), io)? else {
        return Ok(1);
    };
    let Some(port) = flags::or_explain(flags::number(&parsed, "ssh-port", 22), io)? else {
        return Ok(1);
    };
    let client = globals.client();
    let mut command = parsed.args.as_slice();
    let address = match (parsed.value("machine"), parsed.value("unit")) {
        (Some(_), Some(_)) => {
            writeln!(
                io.err,
                "Both machine and unit flags provided, please specify only one."
            )?;
            return Ok(1);
        }
        (Some(machine), None) => machine_address(&client, machine),
        (None, Some(unit)) => unit_address(&client, unit),
        (None, None) => match command.split_first() {
            None => Err("one machine or unit must be provided".to_owned()),
            Some((lookup, rest)) => {
                command = rest;
                either_address(&client, lookup)
            }
        },
    };
    let address = match address {
        Ok(address) => address,
        Err(e) => {
            writeln!(io.err, "Unable to proceed: {e}")?;
            return Ok(1);
        }
    };
    // As fleet: everything after a `--` is the command.
    if let Some(dashes) = command.iter().position(|a| a == "--") {
        command = &command[dashes + 1..];
    }
    let remote = (!command.is_empty()).then(|| command.join(" "));
    let forward_agent = parsed.is_set("forward-agent");
    let argv = match globals
        .ssh
        .command(&address, port, forward_agent, remote.as_deref())
    {
        Ok(argv) => argv,
        Err(e) => {
            writeln!(io.err, "Failed building SSH client: {e}")?;
            return Ok(1);
        }
    };
    match remote {
        Some(_) => ssh::relay(&argv, io),
        None => ssh::interactive(&argv),
    }
}

/// The address of the one machine whose ID starts with `prefix`.
pub(crate) fn machine_address(client: &Client, prefix: &str) -> Result<String, String> {
    let machines = client.machines().map_err(|e| e.to_string())?;
    let mut matching = machines.iter().filter(|m| m.id.starts_with(prefix));
    match (matching.next(), matching.next()) {
        (Some(machine), None) if !machine.primary_ip.is_empty() => Ok(machine.primary_ip.clone()),
        (Some(_), None) => Err("Could not determine address of machine.".into()),
        (Some(_), Some(_)) => Err("found more than one machine".into()),
        (None, _) => Err("machine does not exist".into()),
    }
}

/// The address of the machine running `unit`.
fn unit_address(client: &Client, unit: &str) -> Result<String, String> {
    let name = mangle(unit);
    let unit = client
        .unit(&name)
        .map_err(|e| e.to_string())?
        .ok_or("unit does not exist")?;
    if unit.is_global() {
        return Err("global units unsupported".into());
    }
    if unit.machine_id.is_empty() {
        return Err(format!("unit {name} is not placed on any machine"));
    }
    machine_address(client, &unit.machine_id)
}

/// `lookup` as a machine ID prefix or a unit, whichever it names (both is ambiguous).
fn either_address(client: &Client, lookup: &str) -> Result<String, String> {
    match (
        machine_address(client, lookup),
        unit_address(client, lookup),
    ) {
        (Ok(_), Ok(_)) => Err(format!(
            "ambiguous argument, both machine and unit found for `{lookup}`.\n\
             Please use flag `-m` or `-u` to refine the search"
        )),
        (Ok(address), Err(_)) | (Err(_), Ok(address)) => Ok(address),
        (Err(_), Err(_)) => Err("could not find matching unit or machine".into()),
    }
}
