//! The agent's side of a machine: the reconciler that makes the machine's init system match
//! what the registry says for it (`agent`, with the lease keeper, the fence and the jobs), and
//! the one trait it drives an init system through (`manager`), over the native supervisor
//! (`fleet-native`) or systemd over D-Bus (`systemd`).

pub mod agent;
mod error;
pub mod fake;
pub mod fence;
mod healing;
pub mod health;
mod history;
pub mod jobs;
pub mod lease;
mod leave;
pub mod manager;
pub mod order;
pub mod plan;
mod reports;
pub mod started;
pub mod systemd;

pub use error::AgentError;
pub use leave::leave;
