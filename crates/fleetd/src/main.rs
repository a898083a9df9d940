//! fleetd: the daemon. The engine, agent, registry and API arrive with their issues; until
//! then the binary only reports its version, and refuses to start rather than pretend to run.

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-version") | Some("version") => {
            println!("fleetd version {VERSION}");
        }
        _ => {
            eprintln!(
                "fleetd {VERSION}: the daemon is not implemented yet in this build \
                 (see the open issues); only --version works"
            );
            std::process::exit(2);
        }
    }
}
