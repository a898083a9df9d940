//! `fleetctl destroy UNIT...`: removes units from the cluster, as fleetctl 1.0 did (names not
//! in the cluster are skipped; none found is not an error).

use std::io;

use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let Some(names) = super::unit_names(args, io)? else {
        return Ok(0);
    };
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    let mut found = false;
    for name in &names {
        if !units.iter().any(|u| &u.name == name) {
            continue;
        }
        found = true;
        match client.delete_unit(name) {
            Ok(_) => writeln!(io.out, "Destroyed {name}")?,
            Err(e) => {
                writeln!(io.err, "Error destroying units: {e}")?;
                return Ok(1);
            }
        }
    }
    if !found {
        writeln!(io.err, "Units not found in registry")?;
    }
    Ok(0)
}
