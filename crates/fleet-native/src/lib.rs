//! The native supervisor: systemd's `[Service]` semantics without systemd, for machines that
//! have none. A shim process per unit (`shim`, forked by a `zygote`) runs it and outlives
//! fleetd; the `supervisor` drives the shims, orders starts and stops by the units' relations
//! (`plan`) and reads their state back after a restart. Nothing here knows the registry: the
//! agent drives it through its unit-manager trait.

pub mod command;
pub mod environment;
pub mod host;
pub mod log;
pub mod plan;
pub mod process;
pub mod reaper;
mod replace_file;
pub mod runner;
pub mod service;
pub mod shim;
pub mod specifiers;
pub mod status;
pub mod supervisor;
pub use fleet_unit::timespan;
pub mod unit_environment;
pub mod unit_files;
pub mod watchers;
pub mod zygote;

pub use replace_file::replace_file;
