//! The self-healing keys of `[X-Fleet]`: a unit's health checks, what is done when it turns
//! unhealthy, and when the engine moves a unit that failed. Parsed and checked here (at
//! submit, by `validate_requirements`); the agent runs the checks, the engine moves units.
//!
//! fleet 1.0 warns about these keys as unknown and ignores them, so unit files that use them
//! still run there, only without the healing.

use std::fmt;
use std::time::Duration;

use crate::requirements::XFLEET_SECTION;
use crate::timespan::parse_timespan;
use crate::UnitFile;

pub const HEALTH_CHECK: &str = "HealthCheck";
pub const HEALTH_CHECK_INTERVAL: &str = "HealthCheckInterval";
pub const HEALTH_CHECK_TIMEOUT: &str = "HealthCheckTimeout";
pub const HEALTH_CHECK_START_PERIOD: &str = "HealthCheckStartPeriod";
pub const HEALTH_CHECK_FAILURES: &str = "HealthCheckFailures";
pub const ON_UNHEALTHY: &str = "OnUnhealthy";
pub const RESCHEDULE: &str = "Reschedule";
pub const RESCHEDULE_AFTER_RESTARTS: &str = "RescheduleAfterRestarts";
pub const RESCHEDULE_DELAY: &str = "RescheduleDelay";
pub const RESCHEDULE_MAX_DELAY: &str = "RescheduleMaxDelay";
pub const RESCHEDULE_ATTEMPTS: &str = "RescheduleAttempts";

/// Every key of this module: known to `Requirements::unknown_keys`.
pub const KEYS: [&str; 11] = [
    HEALTH_CHECK,
    HEALTH_CHECK_INTERVAL,
    HEALTH_CHECK_TIMEOUT,
    HEALTH_CHECK_START_PERIOD,
    HEALTH_CHECK_FAILURES,
    ON_UNHEALTHY,
    RESCHEDULE,
    RESCHEDULE_AFTER_RESTARTS,
    RESCHEDULE_DELAY,
    RESCHEDULE_MAX_DELAY,
    RESCHEDULE_ATTEMPTS,
];

/// The longest interval, timeout, start period or delay accepted.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// One health check, as written (specifiers such as `%H`, `%m` are expanded by the agent
/// where the check runs, so a port may still be a specifier here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `http://HOST:PORT/PATH`: healthy when answered 2xx or 3xx.
    Http {
        host: String,
        port: String,
        path: String,
    },
    /// `tcp://HOST:PORT`: healthy when a connection is made.
    Tcp { host: String, port: String },
    /// `exec:COMMAND ARGS...`: healthy when it exits 0.
    Exec { command: String },
}

impl Check {
    /// Parses one `HealthCheck=` value.
    pub fn parse(text: &str) -> Result<Check, String> {
        let text = text.trim();
        if let Some(command) = text.strip_prefix("exec:") {
            let command = command.trim();
            if command.is_empty() {
                return Err("exec: needs a command".into());
            }
            return Ok(Check::Exec {
                command: command.to_owned(),
            });
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            "unknown scheme: use http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND".to_owned()
        })?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{scheme}:// needs HOST:PORT"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("invalid host {host:?}"));
        }
        check_port(port)?;
        match scheme {
            "http" => Ok(Check::Http {
                host: host.to_owned(),
                port: port.to_owned(),
                path: path.to_owned(),
            }),
            "tcp" if path == "/" && !rest.contains('/') => Ok(Check::Tcp {
                host: host.to_owned(),
                port: port.to_owned(),
            }),
            "tcp" => Err("tcp:// takes no path".into()),
            other => Err(format!(
                "unknown scheme {other:?}: use http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND"
            )),
        }
    }

    /// The check with `expand` applied to what may hold specifiers, and its port made a
    /// number: what the agent runs.
    pub fn expanded(&self, expand: impl Fn(&str) -> String) -> Result<Check, String> {
        let port = |port: &str| {
            let port = expand(port);
            check_port(&port).map(|()| port)
        };
        Ok(match self {
            Check::Http {
                host,
                port: p,
                path,
            } => Check::Http {
                host: expand(host),
                port: port(p)?,
                path: expand(path),
            },
            Check::Tcp { host, port: p } => Check::Tcp {
                host: expand(host),
                port: port(p)?,
            },
            Check::Exec { command } => Check::Exec {
                command: expand(command),
            },
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Http { host, port, path } => write!(f, "http://{host}:{port}{path}"),
            Check::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Check::Exec { command } => write!(f, "exec:{command}"),
        }
    }
}

/// A port: 1 to 65535, or text holding a specifier (`%i`), checked once expanded.
fn check_port(port: &str) -> Result<(), String> {
    if port.contains('%') {
        return Ok(());
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(format!("port {port:?} out of range: use 1 to 65535")),
    }
}

/// What the agent does with a unit that turned unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnhealthy {
    /// Restart it where it is (counting against the restart budget).
    Restart,
    /// Have the engine move it to another machine.
    Reschedule,
    /// Only report it.
    Nothing,
}

/// A unit's health checks and what follows from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// All must pass for the unit to be healthy.
    pub checks: Vec<Check>,
    pub interval: Duration,
    pub timeout: Duration,
    /// After a start, failures during this long do not count.
    pub start_period: Duration,
    /// This many failures in a row make the unit unhealthy.
    pub failures: u32,
    pub on_unhealthy: OnUnhealthy,
}

/// When the engine moves a unit that failed, and how soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReschedulePolicy {
    /// `Reschedule=`; `None` leaves it to the cluster's default (`reschedule_failed_units`).
    pub on_failure: Option<bool>,
    /// Local restarts within [`RESTART_WINDOW`] after which an unhealthy unit is moved.
    pub after_restarts: u32,
    pub delay: Duration,
    pub max_delay: Duration,
    /// How many moves at most; 0: no limit.
    pub attempts: u32,
}

impl Default for ReschedulePolicy {
    /// What a unit that sets none of the keys gets.
    fn default() -> ReschedulePolicy {
        ReschedulePolicy {
            on_failure: None,
            after_restarts: 3,
            delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            attempts: 0,
        }
    }
}

/// The window in which local restarts count against `RescheduleAfterRestarts=`.
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// A self-healing key with a value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    pub key: &'static str,
    pub value: String,
    pub why: String,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}={}: {}", self.key, self.value, self.why)
    }
}

impl std::error::Error for InvalidKey {}

/// Every value of `key` in `[X-Fleet]`, each line whole (unlike fleet's own keys, which split
/// a line into words: a check's command has spaces).
fn values<'a>(unit: &'a UnitFile, key: &'a str) -> impl Iterator<Item = &'a str> {
    unit.options()
        .iter()
        .filter(move |o| o.section == XFLEET_SECTION && o.name == key)
        .map(|o| o.value.trim())
}

/// The last value of `key`, if it is set (a later line overrides an earlier one, as systemd
/// reads single-valued keys).
fn last<'a>(unit: &'a UnitFile, key: &'a str) -> Option<&'a str> {
    values(unit, key).last()
}

fn invalid(key: &'static str, value: &str, why: impl Into<String>) -> InvalidKey {
    InvalidKey {
        key,
        value: value.to_owned(),
        why: why.into(),
    }
}

/// A duration key: a systemd time span (a bare number is seconds) from `least` to 24 h.
fn span(
    unit: &UnitFile,
    key: &'static str,
    default: Duration,
    least: Duration,
) -> Result<Duration, InvalidKey> {
    let Some(value) = last(unit, key) else {
        return Ok(default);
    };
    let parsed = parse_timespan(value, Duration::from_secs(1))
        .map_err(|e| invalid(key, value, e.to_string()))?
        .ok_or_else(|| invalid(key, value, "must be finite"))?;
    if parsed < least || parsed > LONGEST {
        let least = match least.is_zero() {
            true => "0".to_owned(),
            false => format!("{least:?}"),
        };
        return Err(invalid(key, value, format!("use {least} to 24h")));
    }
    Ok(parsed)
}

/// A count key: a whole number from `least` on.
fn count(unit: &UnitFile, key: &'static str, default: u32, least: u32) -> Result<u32, InvalidKey> {
    let Some(value) = last(unit, key) else {
        return Ok(default);
    };
    match value.parse::<u32>() {
        Ok(n) if n >= least => Ok(n),
        _ => Err(invalid(
            key,
            value,
            format!("use a whole number from {least}"),
        )),
    }
}

/// The unit's health policy, `None` when it has no `HealthCheck=`.
pub fn health_policy(unit: &UnitFile) -> Result<Option<HealthPolicy>, InvalidKey> {
    let checks = values(unit, HEALTH_CHECK)
        .filter(|v| !v.is_empty())
        .map(|v| Check::parse(v).map_err(|why| invalid(HEALTH_CHECK, v, why)))
        .collect::<Result<Vec<_>, _>>()?;
    let tick = Duration::from_millis(1);
    let interval = span(unit, HEALTH_CHECK_INTERVAL, Duration::from_secs(10), tick)?;
    let timeout = span(unit, HEALTH_CHECK_TIMEOUT, Duration::from_secs(2), tick)?;
    let start_period = span(
        unit,
        HEALTH_CHECK_START_PERIOD,
        Duration::from_secs(5),
        Duration::ZERO,
    )?;
    let failures = count(unit, HEALTH_CHECK_FAILURES, 3, 1)?;
    let on_unhealthy = match last(unit, ON_UNHEALTHY) {
        None | Some("restart") => OnUnhealthy::Restart,
        Some("reschedule") => OnUnhealthy::Reschedule,
        Some("none") => OnUnhealthy::Nothing,
        Some(other) => {
            return Err(invalid(
                ON_UNHEALTHY,
                other,
                "use restart, reschedule or none",
            ))
        }
    };
    if checks.is_empty() {
        return Ok(None);
    }
    Ok(Some(HealthPolicy {
        checks,
        interval,
        timeout,
        start_period,
        failures,
        on_unhealthy,
    }))
}

/// The unit's reschedule policy (its defaults when it sets none of the keys).
pub fn reschedule_policy(unit: &UnitFile) -> Result<ReschedulePolicy, InvalidKey> {
    let on_failure = match last(unit, RESCHEDULE) {
        None => None,
        Some("on-failure") => Some(true),
        Some("no") => Some(false),
        Some(other) => return Err(invalid(RESCHEDULE, other, "use on-failure or no")),
    };
    let defaults = ReschedulePolicy::default();
    let delay = span(unit, RESCHEDULE_DELAY, defaults.delay, Duration::ZERO)?;
    let max_delay = span(
        unit,
        RESCHEDULE_MAX_DELAY,
        defaults.max_delay,
        Duration::ZERO,
    )?;
    if max_delay < delay {
        return Err(invalid(
            RESCHEDULE_MAX_DELAY,
            last(unit, RESCHEDULE_MAX_DELAY).unwrap_or_default(),
            format!("shorter than RescheduleDelay= ({delay:?})"),
        ));
    }
    Ok(ReschedulePolicy {
        on_failure,
        after_restarts: count(unit, RESCHEDULE_AFTER_RESTARTS, defaults.after_restarts, 1)?,
        delay,
        max_delay,
        attempts: count(unit, RESCHEDULE_ATTEMPTS, defaults.attempts, 0)?,
    })
}

/// How long after a failure a unit that has been moved `moves` times is moved again:
/// `RescheduleDelay=` doubled per move, at most `RescheduleMaxDelay=`.
pub fn reschedule_delay(policy: &ReschedulePolicy, moves: u32) -> Duration {
    let factor = 2u32.saturating_pow(moves.min(31));
    policy
        .delay
        .checked_mul(factor)
        .map_or(policy.max_delay, |d| d.min(policy.max_delay))
}

/// Checks every self-healing key of a unit (at submit and by `fleetctl verify`).
pub fn validate(unit: &UnitFile) -> Result<(), InvalidKey> {
    health_policy(unit)?;
    reschedule_policy(unit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirements(x_fleet: &str) -> UnitFile {
        UnitFile::parse(format!(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}"
        ))
        .unwrap()
    }

    /// `x_fleet`'s health policy printed as `checks | interval timeout start failures action`,
    /// or the error.
    fn check(x_fleet: &str, expected: &str) {
        let got = match health_policy(&requirements(x_fleet)) {
            Ok(None) => "none".to_owned(),
            Ok(Some(p)) => format!(
                "{} | {:?} {:?} {:?} {} {:?}",
                p.checks
                    .iter()
                    .map(Check::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                p.interval,
                p.timeout,
                p.start_period,
                p.failures,
                p.on_unhealthy
            ),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected, "{x_fleet:?}");
    }

    #[test]
    fn health_policies_parse_or_name_the_key() {
        let rows = [
            ("", "none"),
            ("HealthCheckInterval=5s\n", "none"),
            (
                "HealthCheck=http://localhost:8080/health\n",
                "http://localhost:8080/health | 10s 2s 5s 3 Restart",
            ),
            (
                "HealthCheck=http://%H:%i\nHealthCheck=tcp://127.0.0.1:5432\nHealthCheck=exec:/bin/test -f /run/ok\n",
                "http://%H:%i/ tcp://127.0.0.1:5432 exec:/bin/test -f /run/ok | 10s 2s 5s 3 Restart",
            ),
            (
                "HealthCheck=tcp://[::1]:80\nHealthCheckInterval=500ms\nHealthCheckTimeout=1\nHealthCheckStartPeriod=0\nHealthCheckFailures=1\nOnUnhealthy=none\n",
                "tcp://[::1]:80 | 500ms 1s 0ns 1 Nothing",
            ),
            (
                "HealthCheck=tcp://db:1\nOnUnhealthy=reschedule\nOnUnhealthy=restart\n",
                "tcp://db:1 | 10s 2s 5s 3 Restart",
            ),
            (
                "HealthCheck=ftp://host:21/\n",
                "invalid HealthCheck=ftp://host:21/: unknown scheme \"ftp\": use http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND",
            ),
            (
                "HealthCheck=localhost:80\n",
                "invalid HealthCheck=localhost:80: unknown scheme: use http://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND",
            ),
            (
                "HealthCheck=http://localhost:70000/\n",
                "invalid HealthCheck=http://localhost:70000/: port \"70000\" out of range: use 1 to 65535",
            ),
            (
                "HealthCheck=tcp://localhost\n",
                "invalid HealthCheck=tcp://localhost: tcp:// needs HOST:PORT",
            ),
            (
                "HealthCheck=tcp://localhost:1/x\n",
                "invalid HealthCheck=tcp://localhost:1/x: tcp:// takes no path",
            ),
            ("HealthCheck=exec:\n", "invalid HealthCheck=exec:: exec: needs a command"),
            (
                "HealthCheck=tcp://h:1\nHealthCheckInterval=0\n",
                "invalid HealthCheckInterval=0: use 1ms to 24h",
            ),
            (
                "HealthCheck=tcp://h:1\nHealthCheckInterval=-5s\n",
                "invalid HealthCheckInterval=-5s: invalid time span \"-5s\"",
            ),
            (
                "HealthCheck=tcp://h:1\nHealthCheckTimeout=infinity\n",
                "invalid HealthCheckTimeout=infinity: must be finite",
            ),
            (
                "HealthCheck=tcp://h:1\nHealthCheckFailures=0\n",
                "invalid HealthCheckFailures=0: use a whole number from 1",
            ),
            (
                "HealthCheck=tcp://h:1\nOnUnhealthy=reboot\n",
                "invalid OnUnhealthy=reboot: use restart, reschedule or none",
            ),
            // Checked with no check too: the key is wrong whatever else the file says.
            ("OnUnhealthy=reboot\n", "invalid OnUnhealthy=reboot: use restart, reschedule or none"),
        ];
        for (x_fleet, expected) in rows {
            check(x_fleet, expected);
        }
    }

    #[test]
    fn reschedule_policies_parse_or_name_the_key() {
        let rows = [
            ("", "None 3 30s 3600s 0"),
            (
                "Reschedule=no\nRescheduleAfterRestarts=1\nRescheduleDelay=1s\nRescheduleMaxDelay=1min\nRescheduleAttempts=5\n",
                "Some(false) 1 1s 60s 5",
            ),
            ("Reschedule=on-failure\nRescheduleDelay=0\n", "Some(true) 3 0ns 3600s 0"),
            ("Reschedule=always\n", "invalid Reschedule=always: use on-failure or no"),
            (
                "RescheduleDelay=2h\nRescheduleMaxDelay=1h\n",
                "invalid RescheduleMaxDelay=1h: shorter than RescheduleDelay= (7200s)",
            ),
            ("RescheduleAttempts=-1\n", "invalid RescheduleAttempts=-1: use a whole number from 0"),
            ("RescheduleDelay=2d\n", "invalid RescheduleDelay=2d: use 0 to 24h"),
        ];
        for (x_fleet, expected) in rows {
            let got = match reschedule_policy(&requirements(x_fleet)) {
                Ok(p) => format!(
                    "{:?} {} {:?} {:?} {}",
                    p.on_failure, p.after_restarts, p.delay, p.max_delay, p.attempts
                ),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, expected, "{x_fleet:?}");
        }
    }

    #[test]
    fn a_unit_without_the_keys_gets_the_default_policy() {
        assert_eq!(
            reschedule_policy(&requirements("")),
            Ok(ReschedulePolicy::default())
        );
    }

    #[test]
    fn the_delay_doubles_per_move_up_to_its_bound() {
        let policy = reschedule_policy(&requirements(
            "RescheduleDelay=1s\nRescheduleMaxDelay=10s\n",
        ))
        .unwrap();
        let delays: Vec<u64> = [0, 1, 2, 3, 4, 40]
            .iter()
            .map(|moves| reschedule_delay(&policy, *moves).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn checks_are_expanded_where_they_run() {
        let check = Check::parse("http://%H:%i/health/%n").unwrap();
        let expand = |text: &str| {
            text.replace("%H", "node1")
                .replace("%i", "8080")
                .replace("%n", "web@8080.service")
        };
        assert_eq!(
            check.expanded(expand).unwrap().to_string(),
            "http://node1:8080/health/web@8080.service"
        );
        let bad = Check::parse("tcp://h:%i").unwrap();
        assert_eq!(
            bad.expanded(|t| t.replace("%i", "x")),
            Err("port \"x\" out of range: use 1 to 65535".to_owned())
        );
    }
}
