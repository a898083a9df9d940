//! One file per fleetctl command.

pub mod help;
pub mod list_units;
pub mod start;
pub mod verify;
pub mod version;
