//! fleetd's library: configuration and wiring, kept out of `main.rs` so tests can use them.

mod audit_log;
pub mod config;
pub mod daemon;
mod listeners;
pub mod start_error;
