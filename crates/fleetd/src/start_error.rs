//! Why fleetd could not start, or stopped on its own: what it was setting up, and the problem.
//! `main` prints it and exits 1.

use std::fmt;

use fleet_agent::AgentError;
use fleet_registry::RegistryError;

#[derive(Debug)]
pub enum StartError {
    /// A setting (or the file it names) cannot be used: `machine_id`, `/etc/machine-id`,
    /// `data_dir PATH`, `api_listen URL`, `api_token_file PATH`.
    Setting { setting: String, problem: String },
    /// The registry cannot be opened (the embedded file, etcd's configuration) or read.
    Registry(RegistryError),
    /// Neither the configured unit manager nor a fallback can be had.
    UnitManager(String),
    /// What the process is handed cannot be taken over: signals, sockets passed by systemd.
    Process(String),
    /// The agent gave up for good (another live fleetd holds this machine's ID).
    Agent(AgentError),
    /// The agent's task ended when it never should (a panic, say).
    AgentEnded(String),
}

impl StartError {
    pub fn setting(setting: impl Into<String>, problem: impl fmt::Display) -> StartError {
        StartError::Setting {
            setting: setting.into(),
            problem: problem.to_string(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Setting { setting, problem } => write!(f, "{setting}: {problem}"),
            StartError::Registry(e) => write!(f, "{e}"),
            StartError::UnitManager(why)
            | StartError::Process(why)
            | StartError::AgentEnded(why) => f.write_str(why),
            StartError::Agent(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<RegistryError> for StartError {
    fn from(e: RegistryError) -> StartError {
        StartError::Registry(e)
    }
}

impl From<AgentError> for StartError {
    fn from(e: AgentError) -> StartError {
        StartError::Agent(e)
    }
}
