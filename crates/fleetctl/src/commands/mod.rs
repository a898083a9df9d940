//! One file per fleetctl command.

pub mod help;
pub mod verify;
pub mod version;
