//! A service's state in systemd's words: the sub-state the supervisor is in, the active state
//! that follows from it, and the result of the last run. Written to `state.json` by the shim.

use serde::{Deserialize, Serialize};

/// systemd's service sub-states (those the supervisor can be in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubState {
    Dead,
    StartPre,
    Start,
    StartPost,
    Running,
    Exited,
    Reload,
    Stop,
    StopSigterm,
    StopSigkill,
    StopPost,
    FinalSigterm,
    FinalSigkill,
    Failed,
    AutoRestart,
}

impl SubState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubState::Dead => "dead",
            SubState::StartPre => "start-pre",
            SubState::Start => "start",
            SubState::StartPost => "start-post",
            SubState::Running => "running",
            SubState::Exited => "exited",
            SubState::Reload => "reload",
            SubState::Stop => "stop",
            SubState::StopSigterm => "stop-sigterm",
            SubState::StopSigkill => "stop-sigkill",
            SubState::StopPost => "stop-post",
            SubState::FinalSigterm => "final-sigterm",
            SubState::FinalSigkill => "final-sigkill",
            SubState::Failed => "failed",
            SubState::AutoRestart => "auto-restart",
        }
    }

    /// The active state systemd reports for this sub-state.
    pub fn active(self) -> &'static str {
        match self {
            SubState::Dead => "inactive",
            SubState::Failed => "failed",
            SubState::StartPre | SubState::Start | SubState::StartPost | SubState::AutoRestart => {
                "activating"
            }
            SubState::Running | SubState::Exited => "active",
            SubState::Reload => "reloading",
            SubState::Stop
            | SubState::StopSigterm
            | SubState::StopSigkill
            | SubState::StopPost
            | SubState::FinalSigterm
            | SubState::FinalSigkill => "deactivating",
        }
    }

    /// Whether the unit has processes or is about to (anything but dead and failed).
    pub fn is_live(self) -> bool {
        !matches!(self, SubState::Dead | SubState::Failed)
    }
}

/// systemd's `Result=` of a service run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    Success,
    Resources,
    Timeout,
    ExitCode,
    Signal,
    CoreDump,
    StartLimitHit,
    /// A unit it requires or is bound to failed or stopped.
    Dependency,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Resources => "resources",
            RunResult::Timeout => "timeout",
            RunResult::ExitCode => "exit-code",
            RunResult::Signal => "signal",
            RunResult::CoreDump => "core-dump",
            RunResult::StartLimitHit => "start-limit-hit",
            RunResult::Dependency => "dependency",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Everything a reader of a unit's state needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub sub: SubState,
    pub result: RunResult,
    pub main_pid: Option<u32>,
    /// How the main (or last) process ended, when one has.
    pub exit: Option<Exit>,
    /// What went wrong, in words, when something did.
    pub reason: Option<String>,
    /// How many times the unit was restarted automatically since it was last started.
    pub restarts: u32,
    /// When `sub` last changed (RFC 3339).
    pub since: String,
}

impl UnitStatus {
    /// A unit that has not run yet.
    pub fn initial(since: String) -> UnitStatus {
        UnitStatus {
            sub: SubState::Dead,
            result: RunResult::Success,
            main_pid: None,
            exit: None,
            reason: None,
            restarts: 0,
            since,
        }
    }

    pub fn active(&self) -> &'static str {
        self.sub.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_systemd_and_serde() {
        for (sub, name, active) in [
            (SubState::Dead, "dead", "inactive"),
            (SubState::StartPre, "start-pre", "activating"),
            (SubState::Running, "running", "active"),
            (SubState::Exited, "exited", "active"),
            (SubState::StopSigterm, "stop-sigterm", "deactivating"),
            (SubState::AutoRestart, "auto-restart", "activating"),
            (SubState::Failed, "failed", "failed"),
        ] {
            assert_eq!((sub.as_str(), sub.active()), (name, active));
            assert_eq!(serde_json::to_string(&sub).unwrap(), format!("\"{name}\""));
        }
        for result in [RunResult::ExitCode, RunResult::StartLimitHit] {
            let json = serde_json::to_string(&result).unwrap();
            assert_eq!(json, format!("\"{}\"", result.as_str()));
        }
    }
}
