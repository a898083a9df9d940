use std::io;

use crate::{Io, VERSION};

/// `fleetctl version`: the same line as fleet's.
pub fn run(io: &mut Io<'_>) -> io::Result<i32> {
    writeln!(io.out, "fleetctl version {VERSION}")?;
    Ok(0)
}
