//! The typed registry: fleet's records over any [`KvStore`], in the layout of [`crate::keys`].
//!
//! Who writes what: the API writes `units/`, `jobs/`, `global/` and `metadata/`; the engine
//! leader writes `schedule/` and `reasons/`, every write fenced on its leadership; each agent
//! writes its own `machines/<id>` and `states/<id>/` on its one machine lease, and only when
//! something changed. Nothing is rewritten on a timer: an idle cluster sends only keep-alives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use fleet_unit::{JobState, MachineId, Requirements, UnitFile, UnitHash, UnitName};

use crate::error::{RegistryError, Result};
use crate::keys::{self, RegistryKey};
use crate::kv::{Compare, KvStore, Op, Revision, TxnOutcome};
use crate::records::{decode, decode_text, encode, JobRecord, FORMAT};
use crate::snapshot::Snapshot;
use crate::view::Scope;

/// How many times a read-modify-write retries when another writer got there first.
pub(crate) const CAS_ATTEMPTS: usize = 5;

/// What became of a job write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobWrite {
    Done,
    /// `create_job` found a job of that name already.
    Exists,
    /// The job does not exist.
    NotFound,
}

#[derive(Clone)]
pub struct Registry {
    kv: Arc<dyn KvStore>,
    /// The revision of the latest write made through this registry (and its clones): what a
    /// reader in the same process waits for to see its own writes.
    written: Arc<AtomicI64>,
}

impl Registry {
    pub(crate) fn kv(&self) -> &dyn KvStore {
        self.kv.as_ref()
    }

    /// Opens the registry in `kv`, writing the format version into an empty one and refusing
    /// one written in a format this code does not read.
    pub async fn open(kv: Arc<dyn KvStore>) -> Result<Registry> {
        let create = Op::put(keys::VERSION, FORMAT);
        let absent = Compare::Absent(keys::VERSION.into());
        if !kv.txn(vec![absent], vec![create]).await?.succeeded {
            let stored = kv.get(keys::VERSION).await?.map(|kv| kv.value);
            let stored = stored.unwrap_or_default();
            if stored != FORMAT.as_bytes() {
                return Err(RegistryError::Corrupt {
                    key: keys::VERSION.into(),
                    reason: format!(
                        "the registry is in format {:?}; this fleetd reads format {FORMAT}",
                        String::from_utf8_lossy(&stored)
                    ),
                });
            }
        }
        Ok(Registry {
            kv,
            written: Arc::new(AtomicI64::new(0)),
        })
    }

    /// The revision of the latest write made through this registry or a clone of it.
    pub fn written(&self) -> Revision {
        self.written.load(Ordering::Acquire)
    }

    /// Every transaction goes through here, so that [`Registry::written`] knows of it.
    pub(crate) async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let outcome = self.kv.txn(compares, ops).await?;
        if outcome.succeeded {
            self.written.fetch_max(outcome.revision, Ordering::AcqRel);
        }
        Ok(outcome)
    }

    // ----- reading -----

    /// Everything in `scope`, decoded, at one revision.
    pub async fn snapshot(&self, scope: &Scope) -> Result<Snapshot> {
        let prefixes = scope.prefixes();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let (ranges, revision) = self.kv.range(&prefixes).await?;
        Ok(Snapshot::from_listing(revision, ranges.iter().flatten()))
    }

    /// The registry's current revision: whether anything was written since a snapshot, for
    /// the price of one small read (a range that holds no key).
    pub async fn revision(&self) -> Result<Revision> {
        let (_, revision) = self.kv.range(&["\u{0}revision"]).await?;
        Ok(revision)
    }

    /// The unit file stored under `hash`, checked against it.
    pub async fn unit_file(&self, hash: &UnitHash) -> Result<Option<UnitFile>> {
        let key = RegistryKey::Unit(*hash).path();
        // A file never changes once written (its key is its hash), so what the member has
        // applied will do, and it answers at once when etcd is busy; a file written a moment
        // ago may not be applied there yet, so a miss is asked again, linearizably.
        let found = match self.kv.get_applied(&key).await? {
            Some(kv) => Some(kv),
            None => self.kv.get(&key).await?,
        };
        found
            .map(|kv| decode_unit(&key, hash, &kv.value))
            .transpose()
    }

    /// The job named `name` (global or not), with whether it is global.
    pub async fn job(&self, name: &UnitName) -> Result<Option<(JobRecord, bool)>> {
        for (key, global) in [
            (RegistryKey::Job(name.clone()), false),
            (RegistryKey::Global(name.clone()), true),
        ] {
            let path = key.path();
            if let Some(kv) = self.kv.get(&path).await? {
                return Ok(Some((decode(&path, &kv.value)?, global)));
            }
        }
        Ok(None)
    }

    // ----- the API's writes -----

    /// Stores `unit` and a job for it, unless a job of that name exists. Global units (with
    /// `Global=true`) go under `global/`.
    pub async fn create_job(
        &self,
        name: &UnitName,
        unit: &UnitFile,
        desired: JobState,
    ) -> Result<JobWrite> {
        let compares = vec![
            Compare::Absent(RegistryKey::Job(name.clone()).path()),
            Compare::Absent(RegistryKey::Global(name.clone()).path()),
        ];
        let ops = vec![
            Op::put(RegistryKey::Unit(unit.hash()).path(), unit.serialize()),
            submissions::job(name, unit, desired),
        ];
        Ok(match self.txn(compares, ops).await?.succeeded {
            true => JobWrite::Done,
            false => JobWrite::Exists,
        })
    }

    /// Sets what the user wants of a job.
    pub async fn set_desired(&self, name: &UnitName, desired: JobState) -> Result<JobWrite> {
        for _ in 0..CAS_ATTEMPTS {
            let mut found = None;
            for key in [
                RegistryKey::Job(name.clone()),
                RegistryKey::Global(name.clone()),
            ] {
                let path = key.path();
                if let Some(kv) = self.kv.get(&path).await? {
                    found = Some((path, kv));
                    break;
                }
            }
            let Some((path, kv)) = found else {
                return Ok(JobWrite::NotFound);
            };
            let mut record: JobRecord = decode(&path, &kv.value)?;
            if record.desired == desired {
                return Ok(JobWrite::Done);
            }
            record.desired = desired;
            let unchanged = Compare::ModRevision(path.clone(), kv.mod_revision);
            let put = Op::put(path, encode(&record));
            if self.txn(vec![unchanged], vec![put]).await?.succeeded {
                return Ok(JobWrite::Done);
            }
        }
        Err(busy(&RegistryKey::Job(name.clone()).path()))
    }

    /// Removes a job. Its unit file stays until the engine collects unreferenced ones.
    pub async fn destroy_job(&self, name: &UnitName) -> Result<JobWrite> {
        let ops = vec![
            Op::delete(RegistryKey::Job(name.clone()).path()),
            Op::delete(RegistryKey::Global(name.clone()).path()),
        ];
        let before = self.job(name).await?;
        self.txn(vec![], ops).await?;
        Ok(match before {
            Some(_) => JobWrite::Done,
            None => JobWrite::NotFound,
        })
    }

    /// Replaces a job's unit with new contents and desired state, in one transaction: the
    /// job is never missing in between (a destroy then a create could lose it when the second
    /// write failed). A unit that changes between global and placed moves to the other key.
    pub async fn replace_job(
        &self,
        name: &UnitName,
        unit: &UnitFile,
        desired: JobState,
    ) -> Result<()> {
        let other = match Requirements::for_unit(unit, name.as_str()).is_global() {
            true => RegistryKey::Job(name.clone()),
            false => RegistryKey::Global(name.clone()),
        };
        let ops = vec![
            Op::put(RegistryKey::Unit(unit.hash()).path(), unit.serialize()),
            Op::delete(other.path()),
            submissions::job(name, unit, desired),
        ];
        self.txn(vec![], ops).await?;
        Ok(())
    }

    /// Sets (or with `None` removes) one dynamic metadata value of a machine.
    pub async fn set_metadata(
        &self,
        machine: &MachineId,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        self.set_metadata_all(&[(machine.clone(), key.to_owned(), value.map(str::to_owned))])
            .await
    }

    /// Sets (or with `None` removes) several dynamic metadata values, all in one transaction
    /// or none; of several changes to one value, the last counts.
    pub async fn set_metadata_all(
        &self,
        changes: &[(MachineId, String, Option<String>)],
    ) -> Result<()> {
        let mut last: BTreeMap<String, Option<&str>> = BTreeMap::new();
        for (machine, key, value) in changes {
            keys::validate_metadata_key(key)?;
            let path = RegistryKey::Metadata(machine.clone(), key.to_owned()).path();
            last.insert(path, value.as_deref());
        }
        let ops = last
            .into_iter()
            .map(|(path, value)| match value {
                Some(value) => Op::put(path, value),
                None => Op::delete(path),
            })
            .collect::<Vec<Op>>();
        if !ops.is_empty() {
            self.txn(vec![], ops).await?;
        }
        Ok(())
    }
}

/// Operations that submit units, for writers that batch them (a bulk submission, a benchmark).
pub mod submissions {
    use super::*;

    /// Writes the job of `name` (under `global/` for a global unit) with its file's hash and
    /// `desired`; the unit file itself goes under `units/<hash>`.
    pub fn job(name: &UnitName, unit: &UnitFile, desired: JobState) -> Op {
        let key = match Requirements::for_unit(unit, name.as_str()).is_global() {
            true => RegistryKey::Global(name.clone()),
            false => RegistryKey::Job(name.clone()),
        };
        let record = JobRecord {
            hash: unit.hash(),
            desired,
        };
        Op::put(key.path(), encode(&record))
    }
}

fn decode_unit(key: &str, hash: &UnitHash, value: &[u8]) -> Result<UnitFile> {
    let corrupt = |reason: String| RegistryError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let text = decode_text(key, value)?;
    let unit = UnitFile::parse(&text).map_err(|e| corrupt(e.message()))?;
    if unit.hash() != *hash {
        return Err(corrupt(format!("content hashes to {}", unit.hash())));
    }
    Ok(unit)
}

pub(crate) fn busy(key: &str) -> RegistryError {
    RegistryError::Unavailable(format!(
        "{key} kept changing under {CAS_ATTEMPTS} attempts to update it; try again"
    ))
}
