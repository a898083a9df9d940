//! Following a part of the registry: [`Scope`] (what a reader follows), [`Feed`] (its
//! changes, re-listed after a compaction or a broken watch) and [`View`] (a snapshot kept
//! current by a feed, for one reader that awaits nothing else). Readers that await other
//! things too share a [`crate::Reflector`], whose task owns the feed.

use fleet_unit::MachineId;

use crate::error::{RegistryError, Result};
use crate::keys::{self, RegistryKey};
use crate::kv::{KeyRange, Revision, Watch, WatchBatch};
use crate::registry::Registry;
use crate::snapshot::Snapshot;

/// What part of the registry a reader follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// An agent: the units placed on its machine, global units, its dynamic metadata. Nothing
    /// another machine's scheduling touches.
    Agent(MachineId),
    /// The engine: jobs, the schedule and its reasons, machines, dynamic metadata, the leader.
    Engine,
    /// Everything but unit files (the API's listings).
    All,
}

impl Scope {
    /// What a view of the scope watches: one range where the scope's prefixes are adjacent in
    /// key order, so that its changes come in revision order and a revision seen means every
    /// change before it was seen (the engine's, `jobs/` to `schedule/`, which leaves agents'
    /// reports and unit files out; the whole registry's, `global/` to `units/`); the agent's
    /// three prefixes otherwise, which are not adjacent.
    fn watched(&self) -> Vec<KeyRange> {
        match self {
            Scope::Agent(_) => self
                .prefixes()
                .iter()
                .map(|p| KeyRange::prefix(p))
                .collect(),
            Scope::Engine => vec![KeyRange::spanning(keys::JOBS, keys::SCHEDULE)],
            // Unit files too, though a snapshot keeps none: every write but the format
            // version's falls in the range, so a view that has seen revision R has seen every
            // write up to R (the registry's own revision is a target it can reach).
            Scope::All => vec![KeyRange::spanning(keys::GLOBAL, keys::UNITS)],
        }
    }

    /// Whether the scope is watched as one stream, so that a revision seen means every change
    /// up to it was seen.
    pub fn is_ordered(&self) -> bool {
        self.watched().len() == 1
    }

    pub fn prefixes(&self) -> Vec<String> {
        match self {
            Scope::Agent(machine) => vec![
                keys::schedule_of(machine),
                keys::GLOBAL.into(),
                keys::metadata_of(machine),
                keys::failures_of(machine),
                keys::restarts_of(machine),
            ],
            Scope::Engine => [
                keys::JOBS,
                keys::SCHEDULE,
                keys::REASONS,
                keys::RESCHEDULE,
                keys::MOVES,
                keys::RESTARTS,
                keys::MACHINES,
                keys::METADATA,
                keys::LEADER,
            ]
            .map(String::from)
            .to_vec(),
            Scope::All => [
                keys::JOBS,
                keys::GLOBAL,
                keys::SCHEDULE,
                keys::REASONS,
                keys::RESCHEDULE,
                keys::MOVES,
                keys::RESTARTS,
                keys::STATES,
                keys::MACHINES,
                keys::METADATA,
                keys::LEADER,
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Registry {
    /// A snapshot of `scope` kept current by a watch; see [`View`].
    pub async fn view(&self, scope: Scope) -> Result<View> {
        let mut feed = self.feed(scope);
        let snapshot = feed.listing().await?;
        Ok(View { feed, snapshot })
    }

    /// The changes of `scope`, beginning with a listing of it.
    pub fn feed(&self, scope: Scope) -> Feed {
        Feed {
            registry: self.clone(),
            ordered: scope.is_ordered(),
            scope,
            watch: None,
        }
    }

    async fn watch(&self, scope: &Scope, from: Revision) -> Result<Watch> {
        let mut watches = Vec::new();
        for range in scope.watched() {
            watches.push(self.kv().watch_range(&range, from).await?);
        }
        Ok(Watch::merge(watches))
    }
}

/// The changes of one scope: a listing, then its watch's batches, and a listing again after a
/// compaction or a broken watch. One place does this, for a view and a reflector alike.
pub struct Feed {
    registry: Registry,
    scope: Scope,
    /// Whether the scope is watched as one stream, so that a batch's revision says every
    /// change up to it has been seen (see [`Scope::watched`]).
    ordered: bool,
    /// `None` until listed, and after the watch broke: the next update is a listing.
    watch: Option<Watch>,
}

/// What a [`Feed`] delivers.
pub enum Update {
    /// The scope as it is now, at its revision (the watch resumes after it).
    Relisted(Box<Snapshot>),
    /// Changes, in the order the watch gave them: what had arrived, taken at once, so that
    /// the reader applies them in one go.
    Batches(Vec<WatchBatch>),
}

impl Feed {
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The next update. An `Err` (registry unreachable) is reported once; the next call
    /// lists again. Cancelling a call loses nothing but the listing under way, which the next
    /// call makes again.
    pub async fn next(&mut self) -> Result<Update> {
        let Some(watch) = self.watch.as_mut() else {
            return self.relisted().await;
        };
        let first = match watch.next().await {
            Some(Ok(batch)) => batch,
            Some(Err(RegistryError::Compacted { .. })) | None => return self.relisted().await,
            Some(Err(e)) => {
                self.watch = None;
                return Err(e);
            }
        };
        // Whatever else has arrived too (a revision that touched several prefixes comes as
        // one batch per prefix), so the reader reconciles once.
        let mut batches = vec![first];
        while let Some(next) = self.watch.as_mut().and_then(Watch::try_next) {
            match next {
                Ok(batch) => batches.push(batch),
                // The next call re-lists.
                Err(_) => {
                    self.watch = None;
                    break;
                }
            }
        }
        Ok(Update::Batches(batches))
    }

    /// The scope as it is now; the watch resumes after it.
    pub async fn listing(&mut self) -> Result<Snapshot> {
        self.watch = None;
        let snapshot = self.registry.snapshot(&self.scope).await?;
        let watch = self
            .registry
            .watch(&self.scope, snapshot.revision + 1)
            .await?;
        self.watch = Some(watch);
        Ok(snapshot)
    }

    /// Makes the next update a fresh listing, so that it reflects every write made before
    /// this call (a watch may still be catching up after an outage).
    pub fn relist_next(&mut self) {
        self.watch = None;
    }

    async fn relisted(&mut self) -> Result<Update> {
        Ok(Update::Relisted(Box::new(self.listing().await?)))
    }

    /// Applies `batches` to `snapshot`: the keys that changed. The snapshot's revision moves
    /// only for an ordered scope (see [`Snapshot::revision`]).
    pub fn apply(&self, snapshot: &mut Snapshot, batches: &[WatchBatch]) -> Vec<RegistryKey> {
        let mut keys = Vec::new();
        for batch in batches {
            keys.extend(snapshot.apply(&batch.events));
            if self.ordered {
                snapshot.revision = snapshot.revision.max(batch.revision);
            }
        }
        keys
    }
}

/// A snapshot of one scope kept current by a [`Feed`], for a reader that awaits nothing but
/// its changes (a test, a tool): [`View::changed`] waits for the next change and applies it.
pub struct View {
    feed: Feed,
    snapshot: Snapshot,
}

/// What [`View::changed`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These keys changed.
    Keys(Vec<RegistryKey>),
    /// The view was re-listed: anything may have changed.
    Everything,
}

impl View {
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn scope(&self) -> &Scope {
        self.feed.scope()
    }

    /// Waits for the next change and applies it. An `Err` (registry unreachable) leaves the
    /// snapshot as it was; call again after a backoff and the view re-lists.
    pub async fn changed(&mut self) -> Result<Changed> {
        match self.feed.next().await? {
            Update::Relisted(snapshot) => {
                self.snapshot = *snapshot;
                Ok(Changed::Everything)
            }
            Update::Batches(batches) => {
                Ok(Changed::Keys(self.feed.apply(&mut self.snapshot, &batches)))
            }
        }
    }

    /// Reads the whole scope again now, so the snapshot reflects every write made before
    /// this call.
    pub async fn refresh(&mut self) -> Result<()> {
        self.feed.relist_next();
        self.changed().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_unit::{UnitFile, UnitName};

    /// A view's watched ranges hold its scope's keys and no other records, of every kind of
    /// key there is.
    #[test]
    fn views_watch_their_scope_and_nothing_else() {
        let (m1, m2) = (MachineId::new("m1").unwrap(), MachineId::new("m2").unwrap());
        let unit = UnitName::new("a.service").unwrap();
        let hash = UnitFile::parse("").unwrap().hash();
        let every_key = [
            RegistryKey::Version,
            RegistryKey::Identity,
            RegistryKey::Leader,
            RegistryKey::Unit(hash),
            RegistryKey::Job(unit.clone()),
            RegistryKey::Global(unit.clone()),
            RegistryKey::Schedule(m1.clone(), unit.clone()),
            RegistryKey::Schedule(m2.clone(), unit.clone()),
            RegistryKey::Reason(unit.clone()),
            RegistryKey::Failure(m1.clone(), unit.clone()),
            RegistryKey::Failure(m2.clone(), unit.clone()),
            RegistryKey::Moves(unit.clone()),
            RegistryKey::Restarts(m1.clone(), unit.clone()),
            RegistryKey::Restarts(m2.clone(), unit.clone()),
            RegistryKey::State(m1.clone(), unit.clone()),
            RegistryKey::Machine(m1.clone()),
            RegistryKey::Metadata(m1.clone(), "disk".into()),
            RegistryKey::Metadata(m2.clone(), "disk".into()),
        ];
        for scope in [Scope::Agent(m1.clone()), Scope::Engine, Scope::All] {
            for key in &every_key {
                let path = key.path();
                let in_scope = scope
                    .prefixes()
                    .iter()
                    .any(|p| path.starts_with(p.as_str()));
                let watched = scope.watched().iter().any(|r| r.contains(&path));
                // The whole registry's view watches unit files too (for their revisions);
                // the identity, written once, falls inside the ranges spanning several
                // prefixes (and a snapshot passes it over).
                let spanning = !matches!(scope, Scope::Agent(_));
                let expected = in_scope
                    || (scope == Scope::All && matches!(key, RegistryKey::Unit(_)))
                    || (spanning && *key == RegistryKey::Identity);
                assert_eq!(watched, expected, "{scope:?}: {path}");
            }
        }
    }
}
