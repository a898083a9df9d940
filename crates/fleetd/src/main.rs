//! fleetd: the daemon (`fleetd [--config PATH]`), its version (`fleetd --version`), and the
//! per-unit shim the native supervisor starts (`fleetd shim <run dir>`). Called as `fleetctl`
//! (a link to it), it is fleetctl: one binary can be all a machine needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use fleet_native::zygote::Zygote;
use fleetd::config::{Config, UnitManagerChoice};
use fleetd::daemon::{self, VERSION};

const DEFAULT_CONFIG: &str = "/etc/fleet/fleet.conf";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let called = std::env::args_os().next().unwrap_or_default();
    if Path::new(&called).file_name() == Some("fleetctl".as_ref()) {
        std::process::exit(fleetctl::run_on_terminal(&args));
    }
    let code = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--version"] | ["-version"] | ["version"] => {
            println!("fleetd version {VERSION}");
            0
        }
        ["shim", dir] => shim(Path::new(dir)),
        [] => serve(None),
        ["--config", path] | ["-config", path] => serve(Some(PathBuf::from(path))),
        [other, ..] if other.starts_with("--config=") => {
            serve(Some(PathBuf::from(&other["--config=".len()..])))
        }
        _ => {
            eprintln!("usage: fleetd [--config PATH] | fleetd --version");
            2
        }
    };
    std::process::exit(code);
}

/// Runs the daemon; exit 1 with the reason when it cannot start.
fn serve(config_path: Option<PathBuf>) -> i32 {
    let explicit = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!("fleetd: cannot read {}: {e}", path.display());
            return 1;
        }
    };
    let environment: BTreeMap<String, String> = std::env::vars().collect();
    let (config, warnings) = match Config::load(file.as_deref(), &environment) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("fleetd: {e}");
            return 1;
        }
    };
    let level = match config.verbosity {
        0 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    // Colours only for a person at a terminal, never into journald or a log file.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(terminal)
        .with_writer(std::io::stderr)
        .init();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    // Everything fleetd writes (the registry, unit files, run directories, logs) may hold
    // secrets: its owner's alone. Units get systemd's default back (the shim sets UMask=).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let zygote = match config.unit_manager {
        UnitManagerChoice::Systemd => None,
        UnitManagerChoice::Native | UnitManagerChoice::Auto => start_zygote(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetd: cannot start: {e}");
            return 1;
        }
    };
    let reload: daemon::Reload = Box::new(move || {
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(fleetd::config::ConfigError(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let environment: BTreeMap<String, String> = std::env::vars().collect();
        Config::load(file.as_deref(), &environment)
    });
    match runtime.block_on(daemon::run(config, reload, zygote)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("fleetd: {e}");
            1
        }
    }
}

/// The process the native supervisor forks its shims from; `None` (shims are executed) when
/// it cannot be made.
#[allow(unsafe_code)]
fn start_zygote() -> Option<Arc<Zygote>> {
    // SAFETY: called from `serve` before the runtime or any thread starts.
    match unsafe { Zygote::start(shim) } {
        Ok(zygote) => Some(Arc::new(zygote)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot fork the shims' zygote; shims will be executed");
            None
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
    match runtime.block_on(fleet_native::shim::run(dir)) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("fleetd shim {}: {e}", dir.display());
            1
        }
    }
}
