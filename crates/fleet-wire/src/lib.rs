//! fleet's HTTP API v1 (and fleet-rs's additions beside it) on the wire. Everything that knows
//! a JSON field name, a path or an error text of the API lives here, so the server and
//! fleetctl cannot disagree; and nothing else does, so fleetctl builds without the server side.

pub mod client;
pub mod paths;
pub mod schema;
pub mod tls;
pub mod token;
