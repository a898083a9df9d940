//! fleet's HTTP API v1 served over the registry (the wire format itself is `fleet-wire`'s).

mod listed;
pub mod server;
