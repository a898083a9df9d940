//! One file per fleetctl command.

pub mod cat;
pub mod destroy;
pub mod help;
pub mod lifecycle;
pub mod list_machines;
pub mod list_unit_files;
pub mod list_units;
pub mod table;
pub mod verify;
pub mod version;
