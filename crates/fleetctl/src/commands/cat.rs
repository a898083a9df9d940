//! `fleetctl cat UNIT`: the unit file as the cluster holds it, exactly as fleetctl 1.0 printed
//! it (the canonical serialization, no newline added).

use std::io;

use fleet_unit::name::mangle;

use crate::{Globals, Io};

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let [arg] = args else {
        writeln!(io.err, "One unit file must be provided")?;
        return Ok(1);
    };
    let name = mangle(arg);
    match globals.client().unit(&name) {
        Ok(Some(unit)) => {
            io.out.write_all(unit.unit_file().serialize().as_bytes())?;
            Ok(0)
        }
        Ok(None) => {
            writeln!(io.err, "Unit {name} not found")?;
            Ok(1)
        }
        Err(e) => {
            writeln!(io.err, "Error retrieving Unit({name}) from Registry: {e}")?;
            Ok(1)
        }
    }
}
