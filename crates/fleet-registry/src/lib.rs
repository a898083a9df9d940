//! The cluster's state store.
//!
//! [`kv::KvStore`] is the contract a backend implements (etcd v3, the embedded single-node
//! store, memory). Everything fleet-specific (key layout, record encoding, leases per machine,
//! watch scopes) is written once on top of it.

pub mod continuity;
mod decisions;
mod disk;
pub mod error;
pub mod etcd;
mod garbage;
pub mod intercepted;
pub mod keys;
pub mod kv;
mod leadership;
pub mod local;
mod machines;
mod pacing;
pub mod records;
mod reflector;
pub mod registry;
pub mod snapshot;
pub mod view;

pub use continuity::Continuity;
pub use decisions::EngineWrite;
pub use error::{RegistryError, Result};
pub use garbage::Garbage;
pub use kv::{KvStore, LeaseId, Revision};
pub use leadership::Leadership;
pub use machines::{renewal_interval, MachineLease, RENEWALS_PER_TTL};
pub use pacing::Pacing;
pub use reflector::{Changes, Reflector};
pub use registry::Registry;
pub use snapshot::Snapshot;
pub use view::{Changed, Feed, Scope, View};
