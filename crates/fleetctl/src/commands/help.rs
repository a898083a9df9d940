use std::io;

use crate::{Io, VERSION};

pub fn run(io: &mut Io<'_>) -> io::Result<i32> {
    write!(
        io.out,
        "NAME:
\tfleetctl - fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system.

USAGE:
\tfleetctl [global options] <command> [command options] [arguments...]

VERSION:
\t{VERSION}

COMMANDS:
\thelp\t\tShow a list of commands or help for one command
\tverify\t\tCheck unit files for problems, with line numbers
\tversion\t\tPrint the version and exit
"
    )?;
    Ok(0)
}
