//! fleetctl as a library: `run(args, io) -> exit code`, so that every command can be tested
//! in-process. `main.rs` only connects it to the process's arguments and streams.

pub mod commands;
pub mod ssh;
pub mod tabwriter;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use commands::lifecycle::Target;
use fleet_wire::client::{Client, Endpoint};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a command writes. Tests pass buffers; the binary passes stdout and stderr.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// `err` is a terminal: what fleetctl waits for is drawn in place there.
    pub terminal: bool,
}

/// The global flags (also `FLEETCTL_<FLAG>` in the environment).
pub struct Globals {
    pub endpoint: Endpoint,
    pub request_timeout: Duration,
    /// For an `https://` endpoint: `--ca-file`, and `--cert-file`/`--key-file` if given.
    pub tls: Option<std::sync::Arc<fleet_wire::tls::ClientConfig>>,
    /// The bearer token a TCP API may require (ours): `FLEETCTL_API_TOKEN`, or the file
    /// `--api-token-file` names; never a command-line argument, which every local user sees.
    pub token: Option<String>,
    /// How machines (and the `--tunnel` bastion) are reached.
    pub ssh: ssh::Ssh,
    /// With `--tunnel`: the command every API request runs to reach the endpoint.
    pub tunnel: Option<Vec<String>>,
}

impl Globals {
    pub fn client(&self) -> Client {
        let mut client =
            Client::new(self.endpoint.clone(), self.request_timeout).with_token(self.token.clone());
        if let Some(tls) = &self.tls {
            client = client.with_tls(tls.clone());
        }
        if let Some(argv) = &self.tunnel {
            client = client.through(argv.clone());
        }
        client
    }
}

const DEFAULT_ENDPOINT: &str = "unix:///var/run/fleet.sock";

/// fleetctl 1.0's global flags that take a value, with their defaults (each also
/// `FLEETCTL_<NAME>` in the environment, `-` read as `_`).
const VALUE_FLAGS: &[(&str, &str)] = &[
    ("endpoint", DEFAULT_ENDPOINT),
    ("request-timeout", "3"),
    ("driver", "api"),
    ("tunnel", ""),
    ("ca-file", ""),
    ("cert-file", ""),
    ("key-file", ""),
    ("key-prefix", "/_coreos.com/fleet/"),
    ("known-hosts-file", "~/.fleetctl/known_hosts"),
    ("ssh-timeout", "10"),
    ("ssh-username", "core"),
    ("experimental-api", "true"),
    ("api-token", ""),
    ("api-token-file", ""),
];

/// fleetctl 1.0's boolean global flags, with their defaults (`--flag` alone means true).
const BOOL_FLAGS: &[(&str, bool)] = &[("debug", false), ("strict-host-key-checking", true)];

fn parse_bool(flag: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "invalid argument {value:?} for --{flag}: expected true or false"
        )),
    }
}

/// `~/x` with the user's home directory.
fn expand_home(path: &str, env: &dyn Fn(&str) -> Option<String>) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => path.into(),
    }
}

/// Splits leading global flags off `args`; the environment supplies defaults.
fn globals<'a>(
    args: &'a [String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Globals, &'a [String]), String> {
    let env_name = |flag: &str| format!("FLEETCTL_{}", flag.to_uppercase().replace('-', "_"));
    let mut values: std::collections::BTreeMap<&str, String> = VALUE_FLAGS
        .iter()
        .map(|(name, default)| {
            (
                *name,
                env(&env_name(name)).unwrap_or_else(|| default.to_string()),
            )
        })
        .collect();
    let mut bools: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for (name, default) in BOOL_FLAGS {
        let value = match env(&env_name(name)) {
            Some(value) => parse_bool(name, &value)?,
            None => *default,
        };
        bools.insert(name, value);
    }
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        if !first.starts_with('-') {
            break;
        }
        let flag = first.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (flag, None),
        };
        if let Some((slot, _)) = BOOL_FLAGS.iter().find(|(n, _)| *n == name) {
            let value = match inline {
                Some(value) => parse_bool(name, &value)?,
                None => true,
            };
            bools.insert(slot, value);
            rest = tail;
            continue;
        }
        let Some(slot) = VALUE_FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, _)| *n)
        else {
            break;
        };
        if slot == "api-token" {
            return Err(
                "--api-token on the command line is visible to every local user (ps, /proc); \
                 set FLEETCTL_API_TOKEN or --api-token-file=PATH instead"
                    .into(),
            );
        }
        let value = match inline {
            Some(value) => {
                rest = tail;
                value
            }
            None => {
                let (value, tail) = tail
                    .split_first()
                    .ok_or(format!("flag needs an argument: --{name}"))?;
                rest = tail;
                value.clone()
            }
        };
        values.insert(slot, value);
    }
    if values["driver"] != "api" {
        return Err(format!(
            "driver {:?} is not supported: fleetctl talks to fleetd's API only (--driver=api); \
             there is no direct etcd access",
            values["driver"]
        ));
    }
    let timeout = &values["request-timeout"];
    let seconds: f64 = timeout
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or(format!("invalid --request-timeout {timeout:?}"))?;
    let endpoint = Endpoint::parse(&values["endpoint"])
        .map_err(|e| format!("Unable to initialize client: {e}"))?;
    let tls = match (&endpoint, values["ca-file"].as_str()) {
        (Endpoint::Https { .. }, "") => None,
        (Endpoint::Https { .. }, ca) => {
            let cert_key = match (values["cert-file"].as_str(), values["key-file"].as_str()) {
                ("", "") => None,
                (cert, key) if !cert.is_empty() && !key.is_empty() => {
                    Some((Path::new(cert), Path::new(key)))
                }
                _ => return Err("--cert-file and --key-file go together".into()),
            };
            let config = fleet_wire::tls::client_config(Path::new(ca), cert_key)
                .map_err(|e| format!("Unable to initialize client: {e}"))?;
            Some(config)
        }
        _ => None,
    };
    let token = match values["api-token-file"].as_str() {
        "" => Some(values["api-token"].clone()).filter(|t| !t.is_empty()),
        path => Some(read_token(Path::new(path))?),
    };
    let ssh_timeout = &values["ssh-timeout"];
    let ssh_seconds: f64 = ssh_timeout
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or(format!("invalid --ssh-timeout {ssh_timeout:?}"))?;
    let ssh = ssh::Ssh {
        user: values["ssh-username"].clone(),
        known_hosts: expand_home(&values["known-hosts-file"], env),
        strict: bools["strict-host-key-checking"],
        timeout: Duration::from_secs_f64(ssh_seconds),
        tunnel: Some(values["tunnel"].clone()).filter(|t| !t.is_empty()),
    };
    let tunnel = ssh
        .tunnel(&endpoint)
        .map_err(|e| format!("--tunnel: {e}"))?;
    Ok((
        Globals {
            endpoint,
            request_timeout: Duration::from_secs_f64(seconds),
            tls,
            token,
            ssh,
            tunnel,
        },
        rest,
    ))
}

/// The bearer token in `path` (its first line, trimmed).
fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?;
    match text.lines().next().map(str::trim) {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(format!(
            "--api-token-file {}: the file is empty",
            path.display()
        )),
    }
}

/// Runs fleetctl with `args` (without the program name) on the process's stdout and stderr;
/// the exit code. (fleetd runs this too when it is called as `fleetctl`.)
pub fn run_on_terminal(args: &[String]) -> i32 {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    run(
        args,
        &mut Io {
            out: &mut out,
            err: &mut err,
            terminal,
        },
    )
}

/// Runs fleetctl with `args` (without the program name) and returns the exit code.
pub fn run(args: &[String], io: &mut Io<'_>) -> i32 {
    run_with_env(args, &|name| std::env::var(name).ok(), io)
}

/// Runs fleetctl with `args` and exactly the environment `env` (name, value), capturing its
/// output: (exit code, stdout, stderr). For tests and embedding.
pub fn run_captured(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with_env(
        &args,
        &lookup,
        &mut Io {
            out: &mut out,
            err: &mut err,
            terminal: false,
        },
    );
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Whether `rest` asks for the command's help instead of running it.
fn asks_help(command: &str, rest: &[String]) -> bool {
    let is_help = |a: &String| a == "--help" || a == "-h";
    match command {
        "ssh" => rest.iter().take_while(|a| a.starts_with('-')).any(is_help),
        _ => rest.iter().any(is_help),
    }
}

/// Runs the command called `name`.
fn dispatch(
    name: &str,
    rest: &[String],
    globals: &Globals,
    io: &mut Io<'_>,
) -> std::io::Result<i32> {
    match name {
        "version" => commands::version::run(io),
        "verify" => commands::verify::run(rest, io),
        "list-units" => commands::list_units::run(rest, globals, io),
        "list-machines" => commands::list_machines::run(rest, globals, io),
        "list-unit-files" => commands::list_unit_files::run(rest, globals, io),
        "list-dependencies" => commands::list_dependencies::run(rest, globals, io),
        "submit" => commands::lifecycle::run(Target::Submit, rest, globals, io),
        "load" => commands::lifecycle::run(Target::Load, rest, globals, io),
        "start" => commands::lifecycle::run(Target::Start, rest, globals, io),
        "stop" => commands::lifecycle::run_down(false, rest, globals, io),
        "unload" => commands::lifecycle::run_down(true, rest, globals, io),
        "restart" => commands::lifecycle::run_restart(rest, globals, io),
        "destroy" => commands::destroy::run(rest, globals, io),
        "cat" => commands::cat::run(rest, globals, io),
        "journal" => commands::journal::run(rest, globals, io),
        "status" => commands::status::run(rest, globals, io),
        "ssh" => commands::ssh::run(rest, globals, io),
        "fd-forward" => commands::fd_forward::run(rest, io),
        _ => commands::help::run(rest, io),
    }
}

/// `run`, with the environment given (tests).
pub fn run_with_env(args: &[String], env: &dyn Fn(&str) -> Option<String>, io: &mut Io<'_>) -> i32 {
    let (globals, args) = match globals(args, env) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = writeln!(io.err, "{e}");
            return 1;
        }
    };
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "--version" | "-v" => commands::version::run(io),
        "--help" | "-h" => commands::help::run(&[], io),
        word => match commands::help::resolve(word) {
            None => {
                let _ = writeln!(
                    io.err,
                    "Unknown command {word:?}. Run 'fleetctl help' for usage."
                );
                Ok(2)
            }
            // After `ssh MACHINE`, a --help belongs to the remote command.
            Some(found) if asks_help(found.name, rest) => io
                .out
                .write_all(commands::help::command_usage(found).as_bytes())
                .map(|_| 0),
            Some(found) => dispatch(found.name, rest, &globals, io),
        },
    };
    result.unwrap_or_else(|e| {
        // Writing to a closed pipe (fleetctl ... | head) is not worth a second error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(io.err, "fleetctl: {e}");
        }
        1
    })
}
