//! The native supervisor: systemd's `[Service]` semantics without systemd.

pub mod command;
pub mod environment;
pub mod log;
pub mod plan;
pub mod process;
pub mod reaper;
pub mod runner;
pub mod service;
pub mod shim;
pub mod specifiers;
pub mod status;
pub mod supervisor;
pub mod timespan;
pub mod unit_environment;
pub mod watchers;
pub mod zygote;
