//! fleet's HTTP API v1 on the wire. Everything that knows a JSON field name or an HTTP error
//! text of the API lives here, so the server and fleetctl cannot disagree.

pub mod client;
mod listed;
pub mod schema;
pub mod server;
pub mod tls;
pub mod token;
