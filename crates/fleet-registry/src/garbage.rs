//! Unit files no job refers to any more, collected (fleet never did: a long-lived cluster grew
//! without bound). Safe against a concurrent submit of the same contents: every submit writes
//! its unit file again in the transaction that creates the job (`create_job`, `replace_job`),
//! which moves the file's mod revision, and a file is deleted only if its mod revision is still
//! the one seen when no job referred to it.
//!
//! It reads the files' text too, to learn their keys and mod revisions (the KV contract has no
//! keys-only range yet). Should the read ever be split, the unit keys must be read before the
//! jobs: a job created in between then rewrites its file after the revision seen, and the
//! compare spares it.

use fleet_unit::UnitHash;

use crate::error::Result;
use crate::keys::{self, RegistryKey};
use crate::kv::{Compare, Op, Revision, MAX_TXN_OPS};
use crate::leadership::Leadership;
use crate::registry::Registry;
use crate::snapshot::Snapshot;

/// A unit file that no job referred to at the revision it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub hash: UnitHash,
    /// The file's mod revision then: deleted only if still so.
    mod_revision: Revision,
}

impl Registry {
    /// The unit files no job (global or not) refers to, read at one revision. Nothing at all
    /// while a job record cannot be read: its hash is unknown, and its file may be the one.
    pub async fn unit_file_garbage(&self) -> Result<Vec<Garbage>> {
        let (ranges, revision) = self
            .kv()
            .range(&[keys::JOBS, keys::GLOBAL, keys::UNITS])
            .await?;
        let [jobs, global, units] = [&ranges[0], &ranges[1], &ranges[2]];
        let listed = Snapshot::from_listing(revision, jobs.iter().chain(global.iter()));
        if !listed.problems.is_empty() {
            tracing::warn!(
                unreadable = listed.problems.len(),
                "unit files are not collected while job records cannot be read"
            );
            return Ok(Vec::new());
        }
        let referenced: std::collections::HashSet<UnitHash> = listed
            .jobs
            .values()
            .chain(listed.global.values())
            .map(|job| job.hash)
            .collect();
        Ok(units
            .iter()
            .filter_map(|kv| match RegistryKey::parse(&kv.key) {
                Ok(RegistryKey::Unit(hash)) if !referenced.contains(&hash) => Some(Garbage {
                    hash,
                    mod_revision: kv.mod_revision,
                }),
                _ => None,
            })
            .collect())
    }

    /// Deletes `garbage`, fenced on `leadership`; how many files went. A file submitted again
    /// since it was found stays (and so does the rest of its transaction's share: found again
    /// next time).
    pub async fn collect_garbage(
        &self,
        leadership: &Leadership,
        garbage: &[Garbage],
    ) -> Result<usize> {
        let mut deleted = 0;
        // The fence is one of a transaction's compares.
        for chunk in garbage.chunks(MAX_TXN_OPS - 1) {
            let mut compares = vec![leadership.fence()];
            let mut ops = Vec::with_capacity(chunk.len());
            for file in chunk {
                let key = RegistryKey::Unit(file.hash).path();
                compares.push(Compare::ModRevision(key.clone(), file.mod_revision));
                ops.push(Op::delete(key));
            }
            if self.txn(compares, ops).await?.succeeded {
                deleted += chunk.len();
            }
        }
        Ok(deleted)
    }
}
