//! The cluster's state store.
//!
//! [`kv::KvStore`] is the contract a backend implements (etcd v3, the embedded single-node
//! store, memory). Everything fleet-specific (key layout, record encoding, leases per machine,
//! watch scopes) is written once on top of it.

mod disk;
pub mod error;
pub mod etcd;
pub mod intercepted;
pub mod keys;
pub mod kv;
pub mod local;
mod pacing;
pub mod records;
mod reflector;
pub mod registry;
pub mod snapshot;

pub use error::{RegistryError, Result};
pub use kv::{KvStore, LeaseId, Revision};
pub use pacing::Pacing;
pub use reflector::Reflector;
pub use registry::{renewal_interval, Changed, Leadership, MachineLease, Registry, Scope, View};
pub use snapshot::Snapshot;
