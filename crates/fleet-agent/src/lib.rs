//! The agent's side of a machine.
//!
//! [`native`] runs systemd service units without systemd: the unit-file semantics (command
//! lines, environment, time spans, specifiers) as pure functions, and the supervisor that runs
//! them.

pub mod agent;
pub mod fake;
pub mod fence;
pub mod jobs;
pub mod lease;
mod leave;
pub mod manager;
pub mod native;
pub mod order;
mod replace_file;
pub mod started;
pub mod systemd;

pub use leave::leave;
pub use replace_file::replace_file;
