//! fleetd: the daemon. The engine, agent, registry and API arrive with their issues; until
//! then the binary reports its version and runs unit shims (`fleetd shim <run dir>`, started
//! by the native supervisor), and refuses to start as a daemon rather than pretend to run.

use std::path::Path;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--version"] | ["-version"] | ["version"] => {
            println!("fleetd version {VERSION}");
        }
        ["shim", dir] => std::process::exit(shim(Path::new(dir))),
        _ => {
            eprintln!(
                "fleetd {VERSION}: the daemon is not implemented yet in this build \
                 (see the open issues); only --version works"
            );
            std::process::exit(2);
        }
    }
}

/// Runs one unit's shim until the unit is dead or failed; exit 0 unless the shim itself could
/// not work (its run directory unusable).
fn shim(dir: &Path) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetd shim: cannot start: {e}");
            return 1;
        }
    };
    match runtime.block_on(fleet_agent::native::shim::run(dir)) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("fleetd shim {}: {e}", dir.display());
            1
        }
    }
}
