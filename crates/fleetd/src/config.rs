//! fleetd's configuration, read as fleet 1.0 read it: a section-less INI file
//! (`/etc/fleet/fleet.conf` or `--config`), overridden by `FLEET_<KEY>` environment variables,
//! with fleet's options, types and defaults, plus ours (`api_listen`, `machine_id`,
//! `data_dir`, `runtime_dir`, `unit_manager`). Pure: the caller reads the file and the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where an option's value came from, for messages that name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    File,
    Environment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub verbosity: u32,
    /// Empty: the embedded registry in `data_dir` (fleet 1.0 defaulted to a local etcd).
    pub etcd_servers: Vec<String>,
    pub etcd_username: String,
    pub etcd_password: Secret,
    pub etcd_keyfile: Option<PathBuf>,
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_cafile: Option<PathBuf>,
    pub etcd_key_prefix: String,
    pub etcd_request_timeout: Duration,
    pub engine_reconcile_interval: Duration,
    /// How long a dead engine leader holds up its successor, when set (see
    /// [`Config::engine_lease`]). Ours: fleet 1.0 used 5 × engine_reconcile_interval (10 s);
    /// an event-driven engine needs no such coupling.
    pub engine_lease_ttl: Option<Duration>,
    /// Empty: detected from the default route.
    pub public_ip: String,
    pub metadata: BTreeMap<String, String>,
    pub agent_ttl: Duration,
    pub units_directory: PathBuf,
    pub systemd_user: bool,
    pub token_limit: u16,
    pub disable_engine: bool,
    /// `unix:///path` and `http(s)://host:port` URLs.
    pub api_listen: Vec<String>,
    /// TLS for `https://` listeners: certificate and key, and a CA whose client certificates
    /// are then required.
    pub api_tls_cert_file: Option<PathBuf>,
    pub api_tls_key_file: Option<PathBuf>,
    pub api_tls_client_ca_file: Option<PathBuf>,
    /// A file holding the bearer tokens TCP clients must present (one bare token, or lines of
    /// `ROLE NAME TOKEN`).
    pub api_token_file: Option<PathBuf>,
    /// Where every change made through the API is recorded as a JSON line: `None` for
    /// `data_dir/audit.log`, an empty path for nowhere.
    pub api_audit_log: Option<PathBuf>,
    /// Whether a unit that failed is moved to another machine when its own `Reschedule=`
    /// says nothing.
    pub reschedule_failed_units: bool,
    /// Units of this machine outside fleet that the native supervisor takes as active when a
    /// unit requires them (`docker.service`, `network-online.target`): any other required unit
    /// that is not loaded refuses the start, naming it, as systemd would.
    pub native_host_units: Vec<String>,
    /// Allow `http://` (no TLS) on addresses other than loopback.
    pub api_allow_plain_tcp: bool,
    /// Serve `http://` on loopback without a token (a warning at start: any local user can
    /// then run units as root).
    pub api_allow_unauthenticated_loopback: bool,
    /// Empty: `/etc/machine-id`.
    pub machine_id: String,
    pub data_dir: PathBuf,
    /// What lives no longer than the machine's processes (the native supervisor's run
    /// directories): memory on most machines, as systemd keeps its own in /run.
    pub runtime_dir: PathBuf,
    pub unit_manager: UnitManagerChoice,
}

/// A value that must never reach a log: `Debug` shows only whether it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("<unset>"),
            false => f.write_str("<redacted>"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitManagerChoice {
    Auto,
    Systemd,
    Native,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            verbosity: 0,
            etcd_servers: Vec::new(),
            etcd_username: String::new(),
            etcd_password: Secret::default(),
            etcd_keyfile: None,
            etcd_certfile: None,
            etcd_cafile: None,
            etcd_key_prefix: "/_coreos.com/fleet/".into(),
            etcd_request_timeout: Duration::from_secs(1),
            engine_reconcile_interval: Duration::from_secs(2),
            engine_lease_ttl: None,
            public_ip: String::new(),
            metadata: BTreeMap::new(),
            agent_ttl: Duration::from_secs(30),
            units_directory: "/run/fleet/units/".into(),
            systemd_user: false,
            token_limit: 100,
            disable_engine: false,
            api_listen: vec!["unix:///var/run/fleet.sock".into()],
            api_tls_cert_file: None,
            api_tls_key_file: None,
            api_tls_client_ca_file: None,
            api_token_file: None,
            api_audit_log: None,
            reschedule_failed_units: true,
            native_host_units: Vec::new(),
            api_allow_plain_tcp: false,
            api_allow_unauthenticated_loopback: false,
            machine_id: String::new(),
            data_dir: "/var/lib/fleet".into(),
            runtime_dir: "/run/fleet".into(),
            unit_manager: UnitManagerChoice::Auto,
        }
    }
}

/// A value fleetd refuses to start with, naming the option and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Options fleet 1.0 had and we accept without acting on them.
const IGNORED: &[(&str, &str)] = &[
    (
        "enable_grpc",
        "fleet-rs agents and engine talk only through the registry",
    ),
    ("verify_units", "deprecated in fleet 1.0"),
    (
        "disable_watches",
        "fleetd always follows the registry through its watches (and reads it again on a timer besides)",
    ),
    ("authorized_keys_file", "deprecated in fleet 1.0"),
];

const DEFAULT_ENGINE_LEASE: Duration = Duration::from_secs(3);

/// What each number may be (docs/compatibility.md lists them): outside, fleetd refuses to
/// start, and a reload keeps the configuration in force.
const VERBOSITY_MAX: u32 = 10;
/// `agent_ttl` and `engine_lease_ttl`: etcd's leases count whole seconds, and a lease of
/// more than a day would keep a dead machine's units for that long.
const LEASE_TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));
const ETCD_REQUEST_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(300));
const RECONCILE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3_600));

impl Config {
    /// The audit log's file, unless it is turned off (`api_audit_log=`).
    pub fn audit_log(&self) -> Option<PathBuf> {
        match &self.api_audit_log {
            None => Some(self.data_dir.join("audit.log")),
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
        }
    }

    /// The engine leader's lease TTL: as set, else 3 s, or agent_ttl when that is shorter
    /// (at least 1 s), so that the death of the leader's machine moves its units as soon as
    /// any other machine's death would.
    pub fn engine_lease(&self) -> Duration {
        self.engine_lease_ttl.unwrap_or_else(|| {
            DEFAULT_ENGINE_LEASE
                .min(self.agent_ttl)
                .max(Duration::from_secs(1))
        })
    }

    /// Reads `file` (the text of fleet.conf, if any) and then the `FLEET_*` variables of
    /// `environment` over it. Returns the configuration and warnings (unknown or ignored
    /// options); a bad value is an error.
    pub fn load(
        file: Option<&str>,
        environment: &BTreeMap<String, String>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        if let Some(text) = file {
            for (line, key, value) in parse_ini(text)? {
                config
                    .set(&key, &value, Source::File, &mut warnings)
                    .map_err(|e| ConfigError(format!("fleet.conf line {line}: {}", e.0)))?;
            }
        }
        for (name, value) in environment {
            let Some(key) = name.strip_prefix("FLEET_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            config.set(&key, value, Source::Environment, &mut warnings)?;
        }
        Ok((config, warnings))
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        source: Source,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let shown = match source {
            Source::File => key.to_owned(),
            Source::Environment => format!("FLEET_{}", key.to_ascii_uppercase()),
        };
        let invalid =
            |why: String| ConfigError(format!("invalid value {value:?} for {shown}: {why}"));
        let path = |v: &str| (!v.is_empty()).then(|| PathBuf::from(v));
        match key {
            "verbosity" => {
                self.verbosity = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| (0..=VERBOSITY_MAX).contains(v))
                    .ok_or_else(|| invalid(format!("not a number from 0 to {VERBOSITY_MAX}")))?
            }
            "etcd_servers" => {
                let urls = list(value);
                for url in &urls {
                    etcd_url(url).map_err(invalid)?;
                }
                self.etcd_servers = urls;
            }
            "etcd_username" => self.etcd_username = value.to_owned(),
            "etcd_password" => self.etcd_password = Secret(value.to_owned()),
            "etcd_keyfile" => self.etcd_keyfile = path(value),
            "etcd_certfile" => self.etcd_certfile = path(value),
            "etcd_cafile" => self.etcd_cafile = path(value),
            "etcd_key_prefix" => self.etcd_key_prefix = value.to_owned(),
            "etcd_request_timeout" => {
                self.etcd_request_timeout =
                    seconds(value, ETCD_REQUEST_TIMEOUT_RANGE).map_err(invalid)?
            }
            "engine_reconcile_interval" => {
                self.engine_reconcile_interval =
                    seconds(value, RECONCILE_INTERVAL_RANGE).map_err(invalid)?
            }
            "engine_lease_ttl" => {
                self.engine_lease_ttl = Some(go_duration(value, LEASE_TTL_RANGE).map_err(invalid)?)
            }
            "public_ip" => self.public_ip = value.trim().to_owned(),
            "metadata" => self.metadata = metadata(value).map_err(invalid)?,
            "agent_ttl" => self.agent_ttl = go_duration(value, LEASE_TTL_RANGE).map_err(invalid)?,
            "units_directory" => self.units_directory = PathBuf::from(value),
            "systemd_user" => self.systemd_user = go_bool(value).map_err(invalid)?,
            "token_limit" => {
                self.token_limit = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("not a number from 1 to 65535".into()))?
            }
            "disable_engine" => self.disable_engine = go_bool(value).map_err(invalid)?,
            "api_listen" => {
                let urls = list(value);
                for url in &urls {
                    listen_url(url).map_err(invalid)?;
                }
                self.api_listen = urls;
            }
            "machine_id" => {
                let id = value.trim();
                if !id.is_empty() {
                    fleet_unit::MachineId::new(id).map_err(|e| invalid(e.to_string()))?;
                }
                self.machine_id = id.to_owned();
            }
            "data_dir" => self.data_dir = PathBuf::from(value),
            "runtime_dir" => self.runtime_dir = PathBuf::from(value),
            "api_tls_cert_file" => self.api_tls_cert_file = path(value),
            "api_tls_key_file" => self.api_tls_key_file = path(value),
            "api_tls_client_ca_file" => self.api_tls_client_ca_file = path(value),
            "api_token_file" => self.api_token_file = path(value),
            "api_audit_log" => self.api_audit_log = Some(PathBuf::from(value.trim())),
            "reschedule_failed_units" => {
                self.reschedule_failed_units = go_bool(value).map_err(invalid)?
            }
            "native_host_units" => {
                let mut units = Vec::new();
                for unit in value.split([',', ' ']).filter(|u| !u.is_empty()) {
                    fleet_unit::UnitName::new(unit).map_err(|e| invalid(e.to_string()))?;
                    units.push(unit.to_owned());
                }
                self.native_host_units = units;
            }
            "api_allow_plain_tcp" => self.api_allow_plain_tcp = go_bool(value).map_err(invalid)?,
            "api_allow_unauthenticated_loopback" => {
                self.api_allow_unauthenticated_loopback = go_bool(value).map_err(invalid)?
            }
            "unit_manager" => {
                self.unit_manager = match value.trim() {
                    "auto" => UnitManagerChoice::Auto,
                    "systemd" => UnitManagerChoice::Systemd,
                    "native" => UnitManagerChoice::Native,
                    _ => return Err(invalid("expected auto, systemd or native".into())),
                }
            }
            _ => match IGNORED.iter().find(|(name, _)| *name == key) {
                Some((_, why)) => warnings.push(format!("{shown} is ignored: {why}")),
                // Other FLEET_* variables may belong to someone else: only the file's unknown
                // keys are certainly mistakes.
                None if source == Source::File => {
                    warnings.push(format!("unknown option {shown} in fleet.conf"))
                }
                None => {}
            },
        }
        Ok(())
    }
}

/// An etcd member's client URL: `http://` or `https://`, a host, and a port if any
/// (`http://10.0.0.1:2379`).
pub fn etcd_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: an etcd URL starts with http:// or https://"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!("{url}: expected http(s)://HOST:PORT"));
    }
    // A bracketed IPv6 address has colons of its own.
    let port = match authority.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') && !host.is_empty() => Some(port),
        _ => None,
    };
    if let Some(port) = port {
        port.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{url}: bad port {port:?}"))?;
    }
    Ok(())
}

/// A listener URL: `unix:///absolute/path`, or `http://` / `https://` with a host and port.
pub fn listen_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("unix://") {
        return match path.starts_with('/') {
            true => Ok(()),
            false => Err(format!(
                "{url}: a unix socket needs an absolute path (unix:///path)"
            )),
        };
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url}: expected unix://, http:// or https://"))?;
    let (_, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: needs a port"))?;
    port.trim_end_matches('/')
        .parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("{url}: bad port {port:?}"))
}

/// The section-less INI of fleet.conf: `key = value` lines, `#` and `;` comments, values
/// optionally in double quotes. Returns (line number, key, value).
fn parse_ini(text: &str) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let mut options = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError(format!(
                "fleet.conf line {}: expected key = value, found {line:?}",
                index + 1
            )));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        options.push((index + 1, key.trim().to_owned(), value.to_owned()));
    }
    Ok(options)
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `k=v,k2=v2`: spaces trimmed, later keys win.
fn metadata(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut pairs = BTreeMap::new();
    for pair in list(value) {
        let (key, val) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        pairs.insert(key.to_owned(), val.trim().to_owned());
    }
    Ok(pairs)
}

/// A float number of seconds, as fleet's `etcd_request_timeout` and
/// `engine_reconcile_interval`, within `range`.
fn seconds(value: &str, range: (Duration, Duration)) -> Result<Duration, String> {
    let number: f64 = value
        .trim()
        .parse()
        .map_err(|_| "not a number of seconds".to_string())?;
    within(number, range, |d| format!("{}", d.as_secs_f64()))
}

/// `seconds` as a duration if it lies in `range` (each end shown by `show`).
fn within(
    seconds: f64,
    (min, max): (Duration, Duration),
    show: impl Fn(Duration) -> String,
) -> Result<Duration, String> {
    let out_of_range = || format!("must be from {} to {}", show(min), show(max));
    let duration = Duration::try_from_secs_f64(seconds).map_err(|_| out_of_range())?;
    match (min..=max).contains(&duration) {
        true => Ok(duration),
        false => Err(out_of_range()),
    }
}

/// A duration as Go prints it, for the ranges: `1s`, `24h0m0s`.
fn go_format(duration: Duration) -> String {
    let total = duration.as_secs();
    match (total / 3600, total % 3600 / 60, total % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(value: &str) -> Result<bool, String> {
    match value.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("not a boolean (true or false)".into()),
    }
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `2h45m`; a bare `0` is zero), within `range`.
fn go_duration(value: &str, range: (Duration, Duration)) -> Result<Duration, String> {
    let text = value.trim();
    let bad = || "not a duration like \"30s\" or \"1m30s\"".to_string();
    if text == "0" {
        return within(0.0, range, go_format);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    within(total, range, go_format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_fleets_except_the_registry() {
        let (config, warnings) = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(config, Config::default());
        assert!(warnings.is_empty());
        assert_eq!(config.agent_ttl, Duration::from_secs(30));
        assert_eq!(config.etcd_key_prefix, "/_coreos.com/fleet/");
        assert_eq!(config.runtime_dir, PathBuf::from("/run/fleet"));
        assert!(
            config.etcd_servers.is_empty(),
            "no etcd configured: embedded registry"
        );
    }

    #[test]
    fn native_host_units_are_unit_names() {
        let load = |value: &str| {
            Config::load(None, &env(&[("FLEET_NATIVE_HOST_UNITS", value)]))
                .map(|(config, _)| config.native_host_units)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            load("docker.service, network-online.target").unwrap(),
            ["docker.service", "network-online.target"]
        );
        assert_eq!(load("").unwrap(), Vec::<String>::new());
        let refused = load("docker.service ../etc").unwrap_err();
        assert!(refused.contains("FLEET_NATIVE_HOST_UNITS"), "{refused}");
    }

    #[test]
    fn the_engine_lease_is_never_longer_than_a_machines_unless_set() {
        let lease =
            |pairs: &[(&str, &str)]| Config::load(None, &env(pairs)).unwrap().0.engine_lease();
        assert_eq!(lease(&[]), Duration::from_secs(3));
        assert_eq!(lease(&[("FLEET_AGENT_TTL", "2s")]), Duration::from_secs(2));
        assert_eq!(lease(&[("FLEET_AGENT_TTL", "1s")]), Duration::from_secs(1));
        let set = [("FLEET_AGENT_TTL", "2s"), ("FLEET_ENGINE_LEASE_TTL", "5s")];
        assert_eq!(lease(&set), Duration::from_secs(5));
    }

    #[test]
    fn file_then_environment() {
        let file = "# fleet.conf\n\
                    etcd_servers = \"http://10.0.0.1:2379,http://10.0.0.2:2379\"\n\
                    metadata = region=us-east, disk=ssd ,region=eu\n\
                    agent_ttl = 1m30s\n\
                    engine_reconcile_interval = 0.5\n\
                    public_ip = 10.0.0.5\n\
                    disable_engine = true\n\
                    runtime_dir = /run/fleet-b\n\
                    verify_units = false\n\
                    disable_watches = true\n\
                    typo_option = 1\n";
        let environment = env(&[
            ("FLEET_PUBLIC_IP", "192.0.2.7"),
            ("FLEET_MACHINE_ID", "node-1"),
            ("FLEET_UNIT_MANAGER", "native"),
            (
                "FLEET_API_LISTEN",
                "unix:///tmp/f.sock, http://127.0.0.1:54728",
            ),
            ("HOME", "/root"),
            ("FLEET_SOMETHING_ELSE", "x"),
        ]);
        let (config, warnings) = Config::load(Some(file), &environment).unwrap();
        assert_eq!(
            config.etcd_servers,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            config.metadata,
            BTreeMap::from([
                ("disk".into(), "ssd".into()),
                ("region".into(), "eu".into())
            ])
        );
        assert_eq!(config.agent_ttl, Duration::from_secs(90));
        assert_eq!(config.engine_reconcile_interval, Duration::from_millis(500));
        assert_eq!(config.public_ip, "192.0.2.7", "the environment wins");
        assert!(config.disable_engine);
        assert_eq!(config.runtime_dir, PathBuf::from("/run/fleet-b"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/fleet"));
        assert_eq!(config.machine_id, "node-1");
        assert_eq!(config.unit_manager, UnitManagerChoice::Native);
        assert_eq!(config.api_listen.len(), 2);
        assert_eq!(
            warnings,
            vec![
                "verify_units is ignored: deprecated in fleet 1.0",
                "disable_watches is ignored: fleetd always follows the registry through its watches (and reads it again on a timer besides)",
                "unknown option typo_option in fleet.conf"
            ]
        );
    }

    fn check_error(file: Option<&str>, environment: &[(&str, &str)], expected: &str) {
        let err = Config::load(file, &env(environment)).unwrap_err();
        assert_eq!(err.0, expected);
    }

    #[test]
    fn bad_values_name_the_option() {
        check_error(Some("agent_ttl = 30\n"), &[], "fleet.conf line 1: invalid value \"30\" for agent_ttl: not a duration like \"30s\" or \"1m30s\"");
        check_error(
            None,
            &[("FLEET_AGENT_TTL", "soon")],
            "invalid value \"soon\" for FLEET_AGENT_TTL: not a duration like \"30s\" or \"1m30s\"",
        );
        check_error(
            None,
            &[("FLEET_DISABLE_ENGINE", "yes")],
            "invalid value \"yes\" for FLEET_DISABLE_ENGINE: not a boolean (true or false)",
        );
        check_error(
            None,
            &[("FLEET_ENGINE_RECONCILE_INTERVAL", "0")],
            "invalid value \"0\" for FLEET_ENGINE_RECONCILE_INTERVAL: must be from 0.01 to 3600",
        );
        // What the adversarial run found panicking at start (and, by SIGHUP, when running).
        let out_of_range = [
            (
                "FLEET_AGENT_TTL",
                "99999999999999999999999h",
                "must be from 1s to 24h0m0s",
            ),
            ("FLEET_AGENT_TTL", "0", "must be from 1s to 24h0m0s"),
            ("FLEET_AGENT_TTL", "1ns", "must be from 1s to 24h0m0s"),
            (
                "FLEET_ENGINE_LEASE_TTL",
                "9999999999999999h",
                "must be from 1s to 24h0m0s",
            ),
            (
                "FLEET_ETCD_REQUEST_TIMEOUT",
                "1e300",
                "must be from 0.01 to 300",
            ),
            (
                "FLEET_ETCD_REQUEST_TIMEOUT",
                "NaN",
                "must be from 0.01 to 300",
            ),
            (
                "FLEET_ETCD_REQUEST_TIMEOUT",
                "-1",
                "must be from 0.01 to 300",
            ),
            (
                "FLEET_ENGINE_RECONCILE_INTERVAL",
                "1e20",
                "must be from 0.01 to 3600",
            ),
            (
                "FLEET_ENGINE_RECONCILE_INTERVAL",
                "1e-12",
                "must be from 0.01 to 3600",
            ),
            (
                "FLEET_ENGINE_RECONCILE_INTERVAL",
                "inf",
                "must be from 0.01 to 3600",
            ),
            ("FLEET_VERBOSITY", "300", "not a number from 0 to 10"),
        ];
        for (name, value, why) in out_of_range {
            check_error(
                None,
                &[(name, value)],
                &format!("invalid value {value:?} for {name}: {why}"),
            );
        }
        check_error(
            None,
            &[("FLEET_METADATA", "region")],
            "invalid value \"region\" for FLEET_METADATA: \"region\" is not key=value",
        );
        for (url, why) in [
            (
                "notaurl",
                "notaurl: an etcd URL starts with http:// or https://",
            ),
            ("http://", "http://: expected http(s)://HOST:PORT"),
            (
                "http://10.0.0.1:23x9",
                "http://10.0.0.1:23x9: bad port \"23x9\"",
            ),
            ("http://a/b", "http://a/b: expected http(s)://HOST:PORT"),
        ] {
            check_error(
                None,
                &[("FLEET_ETCD_SERVERS", url)],
                &format!("invalid value {url:?} for FLEET_ETCD_SERVERS: {why}"),
            );
        }
        let (config, _) = Config::load(
            None,
            &env(&[(
                "FLEET_ETCD_SERVERS",
                "http://127.0.0.1:2379, https://[::1]:2379,http://etcd",
            )]),
        )
        .unwrap();
        assert_eq!(config.etcd_servers.len(), 3);
        check_error(None, &[("FLEET_API_LISTEN", "tcp://x:1")], "invalid value \"tcp://x:1\" for FLEET_API_LISTEN: tcp://x:1: expected unix://, http:// or https://");
        check_error(None, &[("FLEET_API_LISTEN", "unix://rel.sock")], "invalid value \"unix://rel.sock\" for FLEET_API_LISTEN: unix://rel.sock: a unix socket needs an absolute path (unix:///path)");
        check_error(None, &[("FLEET_MACHINE_ID", "a b")], "invalid value \"a b\" for FLEET_MACHINE_ID: invalid machine ID \"a b\": use 1 to 64 characters from [A-Za-z0-9_-]");
        check_error(
            None,
            &[("FLEET_UNIT_MANAGER", "upstart")],
            "invalid value \"upstart\" for FLEET_UNIT_MANAGER: expected auto, systemd or native",
        );
        check_error(
            None,
            &[("FLEET_ENGINE_LEASE_TTL", "500ms")],
            "invalid value \"500ms\" for FLEET_ENGINE_LEASE_TTL: must be from 1s to 24h0m0s",
        );
        check_error(
            None,
            &[("FLEET_TOKEN_LIMIT", "0")],
            "invalid value \"0\" for FLEET_TOKEN_LIMIT: not a number from 1 to 65535",
        );
        // It was narrowed to 65535 in silence.
        check_error(
            None,
            &[("FLEET_TOKEN_LIMIT", "70000")],
            "invalid value \"70000\" for FLEET_TOKEN_LIMIT: not a number from 1 to 65535",
        );
        check_error(
            Some("\n\njust words\n"),
            &[],
            "fleet.conf line 3: expected key = value, found \"just words\"",
        );
    }

    #[test]
    fn the_etcd_password_never_shows() {
        let (config, _) =
            Config::load(None, &env(&[("FLEET_ETCD_PASSWORD", "s3cret-pa55")])).unwrap();
        assert_eq!(config.etcd_password.0, "s3cret-pa55");
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret-pa55") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn go_durations() {
        for (text, millis) in [
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("300ms", 300),
            ("0", 0),
            ("2h45m", 9_900_000),
        ] {
            let any = (Duration::ZERO, Duration::from_secs(86_400));
            assert_eq!(
                go_duration(text, any).unwrap(),
                Duration::from_millis(millis),
                "{text}"
            );
        }
        for text in ["", "30", "s", "1x", "-1s", "1e9h"] {
            assert!(go_duration(text, LEASE_TTL_RANGE).is_err(), "{text}");
        }
    }
}
