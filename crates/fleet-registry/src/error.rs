use std::fmt;

use crate::kv::Revision;

/// What can go wrong talking to the registry. Absence is never an error (`Ok(None)`), so
/// "not found" and "unreachable" cannot be confused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// The backend could not be reached or did not answer in time. Retry with backoff.
    Unavailable(String),
    /// A watch asked for history that was compacted away: re-list, then watch again.
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// A value larger than the registry accepts.
    TooLarge {
        key: String,
        size: usize,
        max: usize,
    },
    /// A stored record that cannot be decoded, or a key this format does not know.
    Corrupt { key: String, reason: String },
    /// A write named a lease that has expired or was revoked: grant a new one.
    LeaseNotFound(i64),
    /// The request itself is wrong (too many operations in one transaction, a bad TTL, ...).
    Invalid(String),
    /// Another party holds what this request claims (a machine ID in use by a live fleetd).
    Conflict(String),
    /// The embedded store's file cannot be opened (held by another process, unreadable, not a
    /// store of ours).
    Storage { path: String, reason: String },
    /// The embedded store could not write its file (a full disk): nothing of the write
    /// happened, and a later one may succeed.
    WriteFailed { path: String, reason: String },
    /// The registry is not the one this fleetd knew (wiped, restored from an older backup,
    /// another cluster's): nothing is read from it or written to it until an operator accepts
    /// it (see `continuity`). Says what was found and what to do.
    WentBackwards(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RegistryError::Unavailable(_)
                | RegistryError::WriteFailed { .. }
                | RegistryError::WentBackwards(_)
        )
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Unavailable(why) => write!(f, "registry unreachable: {why}"),
            RegistryError::Compacted {
                requested,
                compacted,
            } => write!(
                f,
                "registry history at revision {requested} was compacted (oldest kept: {compacted})"
            ),
            RegistryError::TooLarge { key, size, max } => write!(
                f,
                "value for {key} is {size} bytes, more than the registry accepts ({max} bytes)"
            ),
            RegistryError::Corrupt { key, reason } => {
                write!(f, "corrupt registry record at {key}: {reason}")
            }
            RegistryError::LeaseNotFound(lease) => {
                write!(f, "lease {lease:x} not found (expired or revoked)")
            }
            RegistryError::Invalid(why) => write!(f, "invalid registry request: {why}"),
            RegistryError::Conflict(why) => f.write_str(why),
            RegistryError::Storage { path, reason } => {
                write!(f, "cannot open the embedded registry at {path}: {reason}")
            }
            RegistryError::WriteFailed { path, reason } => {
                write!(f, "the embedded registry cannot write {path}: {reason}")
            }
            RegistryError::WentBackwards(why) => write!(f, "registry refused: {why}"),
        }
    }
}

impl std::error::Error for RegistryError {}
