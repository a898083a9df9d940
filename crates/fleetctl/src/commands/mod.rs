//! One file per fleetctl command.

pub mod cat;
pub mod destroy;
pub mod fd_forward;
pub mod flags;
pub mod help;
pub mod in_order;
pub mod journal;
pub mod lifecycle;
pub mod list_dependencies;
pub mod list_machines;
pub mod list_unit_files;
pub mod list_units;
pub mod progress;
pub(crate) mod remote;
pub mod ssh;
pub mod status;
pub mod table;
pub mod verify;
pub mod version;
pub mod waits;

use std::io;

use fleet_unit::name::mangle;
use fleet_wire::client::{Client, ClientError};
use fleet_wire::schema::{Machine, Unit};

use crate::Io;

/// The result of an API call, or `None` after printing `{context}: {error}` as fleetctl did.
pub fn fetched<T>(
    io: &mut Io<'_>,
    context: &str,
    result: Result<T, ClientError>,
) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            writeln!(io.err, "{context}: {e}")?;
            Ok(None)
        }
    }
}

/// Every unit of the cluster, or `None` after saying why not.
pub fn all_units(client: &Client, io: &mut Io<'_>) -> io::Result<Option<Vec<Unit>>> {
    fetched(
        io,
        "Error retrieving list of units from repository",
        client.units(),
    )
}

/// The machines, when `needed` (otherwise none, without asking), or `None` after saying why not.
pub fn machines_if(
    needed: bool,
    client: &Client,
    io: &mut Io<'_>,
) -> io::Result<Option<Vec<Machine>>> {
    match needed {
        true => fetched(io, "Error retrieving list of machines", client.machines()),
        false => Ok(Some(Vec::new())),
    }
}

/// The unit names among `args` (flags skipped), mangled as fleetctl did, or `None` after
/// saying "No units given" (each command then exits with its own fleet 1.0 code).
pub fn unit_names(args: &[String], io: &mut Io<'_>) -> io::Result<Option<Vec<String>>> {
    let names: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| mangle(a))
        .collect();
    if names.is_empty() {
        writeln!(io.err, "No units given")?;
        return Ok(None);
    }
    Ok(Some(names))
}

/// Why a global unit runs on no machine (so far as fleetctl can tell).
pub fn global_nowhere(unit: &Unit) -> String {
    let name = &unit.name;
    // (Loaded, it is on every machine that takes it, and shows there.)
    if unit.desired_state == "inactive" {
        return format!("Global unit {name} runs on no machine: it is inactive.");
    }
    let file = unit.unit_file();
    let requirements = fleet_unit::Requirements::for_unit(&file, name);
    let mut why = format!("Global unit {name} runs on no machine");
    if !requirements.conflicts().is_empty() {
        why.push_str(": on each machine it yields to the units it conflicts with (of conflicting global units, the first by name runs)");
    } else if !requirements.required_metadata().is_empty() {
        why.push_str(": no machine has the metadata it asks for, or none has taken it yet");
    } else {
        why.push_str(" yet");
    }
    why.push('.');
    why
}
