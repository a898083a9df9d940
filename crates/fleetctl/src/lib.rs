//! fleetctl as a library: `run(args, io) -> exit code`, so that every command can be tested
//! in-process. `main.rs` only connects it to the process's arguments and streams.

mod commands;

use std::io::Write;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a command writes. Tests pass buffers; the binary passes stdout and stderr.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

/// Runs fleetctl with `args` (without the program name) and returns the exit code.
pub fn run(args: &[String], io: &mut Io<'_>) -> i32 {
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "version" | "--version" | "-v" => commands::version::run(io),
        "verify" => commands::verify::run(rest, io),
        "help" | "--help" | "-h" => commands::help::run(io),
        other => {
            let _ = writeln!(
                io.err,
                "Unknown command {other:?}. Run 'fleetctl help' for usage."
            );
            Ok(2)
        }
    };
    result.unwrap_or_else(|e| {
        // Writing to a closed pipe (fleetctl ... | head) is not worth a second error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(io.err, "fleetctl: {e}");
        }
        1
    })
}
