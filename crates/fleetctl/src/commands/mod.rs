//! One file per fleetctl command.

pub mod help;
pub mod list_machines;
pub mod list_unit_files;
pub mod list_units;
pub mod start;
pub mod table;
pub mod verify;
pub mod version;
