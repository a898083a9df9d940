//! The embedded store's durable half: one redb file that [`crate::local::LocalStore`] writes
//! through on every commit, before the commit becomes visible, and reads back on open.
//!
//! Layout (format 1):
//! - table `keys`: key → record = create_revision (i64 LE) ‖ mod_revision (i64 LE) ‖ lease
//!   (i64 LE) ‖ value bytes;
//! - table `leases`: lease id → TTL in milliseconds. Deadlines are not stored: a reopened store
//!   gives every lease a full TTL, as etcd does after a restart;
//! - table `meta`: `format`, `revision`, `next_lease`.
//!
//! Watch history is not stored: a reopened store reports every earlier revision as compacted,
//! so watchers re-list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{RegistryError, Result};
use crate::kv::{KeyValue, LeaseId, Revision};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const FORMAT: u64 = 1;
const HEADER: usize = 24;

/// One key's new state in a commit.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Put(KeyValue),
    Delete(String),
}

/// Everything one commit writes, in one redb transaction.
pub(crate) struct DiskWrite<'a> {
    pub revision: Revision,
    pub next_lease: LeaseId,
    pub changes: &'a [Change],
    pub granted: Option<(LeaseId, Duration)>,
    pub revoked: Option<LeaseId>,
}

/// What an existing file held.
#[derive(Default)]
pub(crate) struct Restored {
    pub revision: Revision,
    pub next_lease: LeaseId,
    pub data: BTreeMap<String, KeyValue>,
    pub leases: Vec<(LeaseId, Duration)>,
}

pub(crate) struct Disk {
    /// `None` after a failed reopen: the next write tries again.
    db: std::sync::Mutex<Option<Database>>,
    path: PathBuf,
}

impl Disk {
    /// Opens (or creates) the store at `path`, refusing a file another process holds, a file
    /// that is empty or damaged, or a record this format cannot read.
    pub fn open(path: &Path) -> Result<(Disk, Restored)> {
        let storage = |e: redb::Error| {
            RegistryError::Storage {
            path: path.display().to_string(),
            reason: format!(
                "{e}; if the file is damaged, restore it from a backup, or move it away to start with an empty registry"
            ),
        }
        };
        // A file of no bytes is a truncated registry (fleetd's own file is never empty once
        // made), not a new one: opening it as empty would forget every unit in silence.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(RegistryError::Storage {
                path: path.display().to_string(),
                reason: "the file is empty (0 bytes): it was truncated and holds none of the registry; restore it from a backup, or remove it to start with an empty registry".into(),
            });
        }
        let db = open_database(path).map_err(storage)?;
        let disk = Disk {
            db: std::sync::Mutex::new(Some(db)),
            path: path.to_owned(),
        };
        let restored = disk.restore().map_err(|e| match e {
            Loaded::Storage(e) => storage(e),
            Loaded::Corrupt(e) => e,
        })?;
        Ok((disk, restored))
    }

    fn restore(&self) -> Result<Restored, Loaded> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let db = db.as_ref().expect("a disk just opened has its database");
        let tx = db.begin_read().map_err(redb::Error::from)?;
        let mut restored = Restored {
            revision: 1,
            next_lease: 1,
            ..Restored::default()
        };
        let meta = match tx.open_table(META) {
            Ok(table) => table,
            // A new file: nothing written yet.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(restored),
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let format = meta.get("format")?.map(|v| v.value());
        if format != Some(FORMAT) {
            return Err(Loaded::Corrupt(RegistryError::Corrupt {
                key: "meta/format".into(),
                reason: format!(
                    "{} is format {format:?}; this fleetd reads format {FORMAT}",
                    self.path.display()
                ),
            }));
        }
        restored.revision = meta_i64(&meta, "revision")?;
        restored.next_lease = meta_i64(&meta, "next_lease")?;
        for entry in tx.open_table(KEYS).map_err(redb::Error::from)?.iter()? {
            let (key, record) = entry?;
            let kv = decode(key.value(), record.value()).map_err(Loaded::Corrupt)?;
            restored.data.insert(kv.key.clone(), kv);
        }
        for entry in tx.open_table(LEASES).map_err(redb::Error::from)?.iter()? {
            let (id, ttl) = entry?;
            let ttl = Duration::from_millis(ttl.value());
            restored.leases.push((id.value(), ttl));
        }
        Ok(restored)
    }

    /// Writes one commit durably: when this returns `Ok`, a crash cannot lose it. After a
    /// failed write (a full disk) redb refuses every later one until the file is opened
    /// again: it is reopened (which repairs it) and the write tried once more, so a disk that
    /// has room again is used again without a restart. A failed write is never applied.
    pub fn write(&self, write: DiskWrite<'_>) -> Result<()> {
        let unavailable = |e: redb::Error| RegistryError::WriteFailed {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = db.as_ref() {
            match try_write(open, &write) {
                Err(redb::Error::PreviousIo) => {}
                done => return done.map_err(unavailable),
            }
        }
        // Closed first: the file allows one database at a time.
        *db = None;
        let reopened = open_database(&self.path).map_err(unavailable)?;
        tracing::info!(path = %self.path.display(), "the registry file was opened again after a failed write");
        let done = try_write(&reopened, &write);
        *db = Some(reopened);
        done.map_err(unavailable)
    }
}

/// Opens the redb file, checking it whole: a torn or foreign file is reported, not trusted (a
/// plain open may panic on one), and one left by a failed write is repaired.
fn open_database(path: &Path) -> Result<Database, redb::Error> {
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .create(path)?;
    Ok(db)
}

fn try_write(db: &Database, write: &DiskWrite<'_>) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut keys = tx.open_table(KEYS)?;
        for change in write.changes {
            match change {
                Change::Put(kv) => {
                    keys.insert(kv.key.as_str(), encode(kv).as_slice())?;
                }
                Change::Delete(key) => {
                    keys.remove(key.as_str())?;
                }
            }
        }
        let mut leases = tx.open_table(LEASES)?;
        if let Some((id, ttl)) = write.granted {
            leases.insert(id, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))?;
        }
        if let Some(id) = write.revoked {
            leases.remove(id)?;
        }
        let mut meta = tx.open_table(META)?;
        meta.insert("format", FORMAT)?;
        meta.insert("revision", write.revision as u64)?;
        meta.insert("next_lease", write.next_lease as u64)?;
    }
    tx.commit()?;
    Ok(())
}

/// Why restoring failed: the file could not be read, or a record in it is not ours.
enum Loaded {
    Storage(redb::Error),
    Corrupt(RegistryError),
}

impl<E: Into<redb::Error>> From<E> for Loaded {
    fn from(e: E) -> Loaded {
        Loaded::Storage(e.into())
    }
}

fn meta_i64(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<i64, Loaded> {
    let value = meta.get(name)?.map(|v| v.value());
    value.and_then(|v| i64::try_from(v).ok()).ok_or_else(|| {
        Loaded::Corrupt(RegistryError::Corrupt {
            key: format!("meta/{name}"),
            reason: format!("missing or out of range ({value:?})"),
        })
    })
}

fn encode(kv: &KeyValue) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + kv.value.len());
    record.extend_from_slice(&kv.create_revision.to_le_bytes());
    record.extend_from_slice(&kv.mod_revision.to_le_bytes());
    record.extend_from_slice(&kv.lease.to_le_bytes());
    record.extend_from_slice(&kv.value);
    record
}

fn decode(key: &str, record: &[u8]) -> Result<KeyValue> {
    if record.len() < HEADER {
        return Err(RegistryError::Corrupt {
            key: key.to_owned(),
            reason: format!(
                "stored record is {} bytes, shorter than its {HEADER}-byte header",
                record.len()
            ),
        });
    }
    let field = |i: usize| {
        let bytes: [u8; 8] = record[i * 8..i * 8 + 8].try_into().expect("8-byte slice");
        i64::from_le_bytes(bytes)
    };
    Ok(KeyValue {
        key: key.to_owned(),
        create_revision: field(0),
        mod_revision: field(1),
        lease: field(2),
        value: record[HEADER..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(record: &[u8], expected: Result<KeyValue>) {
        assert_eq!(decode("k", record), expected);
    }

    #[test]
    fn records_round_trip_and_short_ones_are_named() {
        let kv = KeyValue {
            key: "k".into(),
            value: b"v\0x".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            lease: -1,
        };
        check(&encode(&kv), Ok(kv.clone()));
        check(
            &encode(&kv)[..HEADER - 1],
            Err(RegistryError::Corrupt {
                key: "k".into(),
                reason: "stored record is 23 bytes, shorter than its 24-byte header".into(),
            }),
        );
    }
}
