//! What goes wrong in the agent, by where it went wrong.

use std::fmt;

use fleet_registry::RegistryError;

use crate::manager::ManagerError;

#[derive(Debug)]
pub enum AgentError {
    /// The registry did not answer or refused (a round is retried).
    Registry(RegistryError),
    /// The unit manager did (a round is retried).
    Manager(ManagerError),
    /// Another live fleetd holds this machine's ID: nothing a retry fixes.
    MachineTaken(String),
    /// The lease keeper's task ended by a panic or was cancelled.
    KeeperFailed(String),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Registry(e) => write!(f, "{e}"),
            AgentError::Manager(e) => write!(f, "{e}"),
            AgentError::MachineTaken(why) => f.write_str(why),
            AgentError::KeeperFailed(why) => write!(f, "the lease keeper failed: {why}"),
        }
    }
}

impl std::error::Error for AgentError {}

impl From<RegistryError> for AgentError {
    fn from(e: RegistryError) -> AgentError {
        AgentError::Registry(e)
    }
}

impl From<ManagerError> for AgentError {
    fn from(e: ManagerError) -> AgentError {
        AgentError::Manager(e)
    }
}
