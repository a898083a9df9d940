//! The one interface the agent drives a machine's init system through. Two backends: the
//! native supervisor (the `fleet-native` crate) and systemd over D-Bus (`systemd`).

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use std::collections::BTreeMap;

use fleet_unit::{SystemdState, UnitFile, UnitHash, UnitName};

use tokio::sync::mpsc;

use fleet_native::log::{follow, tail};
use fleet_native::status::{Exit, SubState};
use fleet_native::supervisor::{Supervisor, SupervisorError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerError(pub String);

impl fmt::Display for ManagerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManagerError {}

impl From<SupervisorError> for ManagerError {
    fn from(e: SupervisorError) -> ManagerError {
        ManagerError(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, ManagerError>;

#[async_trait]
pub trait UnitManager: Send + Sync {
    /// `native` or `systemd`.
    fn kind(&self) -> ManagerKind;
    /// Makes the unit known to the init system (replacing an earlier version).
    async fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<()>;
    /// Stops the unit if it runs and removes it.
    async fn unload(&self, name: &UnitName) -> Result<()>;
    async fn start(&self, name: &UnitName) -> Result<()>;
    async fn stop(&self, name: &UnitName) -> Result<()>;
    /// The units loaded by fleet on this machine, with the hash of the file loaded.
    async fn loaded(&self) -> Result<BTreeMap<UnitName, UnitHash>>;
    /// The unit's state in systemd's words (`not-found` when it is not loaded).
    async fn state(&self, name: &UnitName) -> Result<SystemdState>;
    /// Every loaded unit with the hash of its file and its state: what the agent reports,
    /// read at once where the manager can (the agent asks at every change of any unit).
    async fn states(&self) -> Result<BTreeMap<UnitName, (UnitHash, SystemdState)>> {
        let mut states = BTreeMap::new();
        for (name, hash) in self.loaded().await? {
            if let Ok(state) = self.state(&name).await {
                states.insert(name, (hash, state));
            }
        }
        Ok(states)
    }
    /// The last `lines` lines of the unit's log, oldest first.
    async fn journal(&self, name: &UnitName, lines: usize) -> Result<Vec<String>>;
    /// The records the unit writes to its log from now on, until the receiver is dropped.
    async fn follow(&self, name: &UnitName) -> Result<mpsc::Receiver<String>>;
    /// What the init system itself says of the unit (`systemctl status`); `None` when it has
    /// no words of its own and the caller lays the state out.
    async fn status(&self, _name: &UnitName) -> Result<Option<UnitStatus>> {
        Ok(None)
    }
    /// The unit's `Description=` as this machine reads it (specifiers resolved), for a caller
    /// that lays the state out itself; `None` when the manager's status says it already.
    async fn description(&self, _name: &UnitName) -> Option<String> {
        None
    }
    /// The units whose processes were found gone since last asked although the unit had not
    /// ended (its supervising process was killed, or the machine crashed under a persistent
    /// data directory): they are reported as they are, and the agent starts them again where
    /// they are wanted launched.
    async fn take_lost(&self) -> Vec<UnitName> {
        Vec::new()
    }
    /// Why `name`, which the agent started and finds inactive, ended outside fleet since
    /// `since` (the agent's last start of it): stopped by a hand on the machine (`systemctl
    /// stop`) or its main process killed. `None` when it ended by itself (its main process
    /// exited, a oneshot finished), when the init system stopped it for one of its
    /// `relations`, or when the manager cannot tell.
    async fn ended_outside(
        &self,
        _name: &UnitName,
        _relations: &Relations,
        _since: std::time::Instant,
    ) -> Option<String> {
        None
    }
    /// Told whenever a unit's state may have changed, so the agent publishes it at once instead
    /// of polling; `None` when the manager cannot tell (the agent polls then).
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
}

/// A unit's relations to other units, as its file states them (specifiers resolved): what
/// the init system stops it for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    /// `Requires=`, `BindsTo=`, `Requisite=`, `PartOf=`: one of them not active means it went
    /// down with it.
    pub needs: Vec<String>,
    /// `Conflicts=`: one of them active means it was stopped for that one.
    pub conflicts: Vec<String>,
}

/// The words for a unit whose main process a signal killed outside fleet.
pub fn killed_outside(signal: i32) -> String {
    let name = nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signal}"));
    format!("its main process was killed by {name} outside fleet")
}

/// `systemctl status` of a unit: its text and its exit code (3: not active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    pub text: String,
    pub code: i32,
}

/// How often a followed native log is read for new records.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerKind {
    Native,
    Systemd,
}

impl ManagerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerKind::Native => "native",
            ManagerKind::Systemd => "systemd",
        }
    }

    /// The configured kind, or, unset: systemd when it runs this machine (as systemd itself
    /// tells: `/run/systemd/system` exists), else the native supervisor.
    pub fn select(configured: Option<ManagerKind>, root: &Path) -> ManagerKind {
        configured.unwrap_or_else(|| match root.join("run/systemd/system").is_dir() {
            true => ManagerKind::Systemd,
            false => ManagerKind::Native,
        })
    }
}

impl std::str::FromStr for ManagerKind {
    type Err = ManagerError;

    fn from_str(s: &str) -> Result<ManagerKind> {
        match s {
            "native" => Ok(ManagerKind::Native),
            "systemd" => Ok(ManagerKind::Systemd),
            other => Err(ManagerError(format!(
                "unknown unit manager {other:?} (expected native or systemd)"
            ))),
        }
    }
}

#[async_trait]
impl UnitManager for Supervisor {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Native
    }

    async fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<()> {
        Ok(Supervisor::load(self, name, unit)?)
    }

    async fn unload(&self, name: &UnitName) -> Result<()> {
        Ok(Supervisor::unload(self, name).await?)
    }

    async fn start(&self, name: &UnitName) -> Result<()> {
        Ok(Supervisor::start(self, name).await?)
    }

    async fn stop(&self, name: &UnitName) -> Result<()> {
        Ok(Supervisor::stop(self, name).await?)
    }

    async fn description(&self, name: &UnitName) -> Option<String> {
        Supervisor::description(self, name)
    }

    async fn loaded(&self) -> Result<BTreeMap<UnitName, UnitHash>> {
        Ok(self.loaded_hashes())
    }

    async fn state(&self, name: &UnitName) -> Result<SystemdState> {
        let state = Supervisor::state(self, name).await;
        // Why it does not run, where its last run says (a failed dependency, a timeout); not
        // of a live unit, whose last word is history.
        let reason = state
            .status
            .as_ref()
            .filter(|status| !status.sub.is_live())
            .and_then(|status| status.reason.clone())
            .unwrap_or_default();
        let restarts = state.status.as_ref().map_or(0, |status| status.restarts);
        Ok(SystemdState {
            restarts,
            ..SystemdState::new(state.load, state.active, state.sub).with_reason(&reason)
        })
    }

    async fn journal(&self, name: &UnitName, lines: usize) -> Result<Vec<String>> {
        tail(&self.log_files(name), lines).map_err(|e| ManagerError(format!("log of {name}: {e}")))
    }

    async fn follow(&self, name: &UnitName) -> Result<mpsc::Receiver<String>> {
        let (records, receiver) = mpsc::channel(256);
        tokio::spawn(follow(self.log_files(name), records, FOLLOW_POLL));
        Ok(receiver)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(Supervisor::changes(self))
    }

    async fn take_lost(&self) -> Vec<UnitName> {
        Supervisor::take_lost(self)
    }

    /// A start returns once the unit runs, so the state it has is never older than `since`.
    async fn ended_outside(
        &self,
        name: &UnitName,
        relations: &Relations,
        _since: std::time::Instant,
    ) -> Option<String> {
        for other in relations.needs.iter().chain(&relations.conflicts) {
            let Ok(other_name) = UnitName::new(other) else {
                continue;
            };
            let state = Supervisor::state(self, &other_name).await;
            let needed = relations.needs.contains(other);
            let active = state.active == "active";
            if (needed && state.load == "loaded" && !active) || (!needed && active) {
                return None;
            }
        }
        let status = Supervisor::state(self, name).await.status?;
        match (status.sub, status.exit) {
            (SubState::Dead, Some(Exit::Signal(signal))) => Some(killed_outside(signal)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(ManagerKind::select(None, root.path()), ManagerKind::Native);
        let configured = Some(ManagerKind::Native);
        std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
        assert_eq!(ManagerKind::select(None, root.path()), ManagerKind::Systemd);
        assert_eq!(
            ManagerKind::select(configured, root.path()),
            ManagerKind::Native
        );
        assert_eq!(
            "native".parse::<ManagerKind>().unwrap(),
            ManagerKind::Native
        );
        let err = "upstart".parse::<ManagerKind>().unwrap_err();
        assert_eq!(
            err.0,
            "unknown unit manager \"upstart\" (expected native or systemd)"
        );
    }
}
