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
    let present: Vec<&String> = names
        .iter()
        .filter(|name| units.iter().any(|u| &u.name == *name))
        .collect();
    if present.is_empty() {
        writeln!(io.err, "Units not found in registry")?;
        return Ok(0);
    }
    // Several requests at once (a machine of a thousand units is emptied in a second, not in
    // a thousand round trips), reported in the order given; after a failure no new request
    // is sent, and what was destroyed before it is still said.
    let results = super::in_order::each(
        &present,
        |name| client.delete_unit_related(name),
        Result::is_err,
    );
    for (name, result) in present.iter().zip(results) {
        match result {
            Some(Ok(related)) => {
                writeln!(io.out, "Destroyed {name}")?;
                // Ours: what stopped with it (fleet had no relations across the cluster).
                for line in related.into_iter().flatten() {
                    if let Some(said) = super::lifecycle::related_line(name, &line) {
                        writeln!(io.out, "{said}")?;
                    }
                }
            }
            Some(Err(e)) => {
                writeln!(io.err, "Error destroying units: {e}")?;
                return Ok(1);
            }
            None => {}
        }
    }
    Ok(0)
}
