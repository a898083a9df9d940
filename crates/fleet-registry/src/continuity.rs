//! Continuity: whether the registry a fleetd talks to is still the one it knew. A registry
//! wiped (etcd started again on an empty data directory), restored from an older backup or
//! swapped for another cluster's would otherwise read as "nothing is wanted anywhere", and
//! every machine would stop all its units within seconds.
//!
//! Each registry carries an identity (`registry-id`, written once when it is created), and
//! each fleetd remembers in a file of its data directory the identity it knows and the highest
//! revision it has seen. A store that answers with another identity, with none, or at a lower
//! revision is a fault: from then on every call fails with [`RegistryError::WentBackwards`],
//! so the engine places nothing, agents leave their units as they run and nothing is written
//! (every transaction is also conditional on the identity, so not even the write that finds
//! the fault lands), until an operator removes the file, which accepts the registry as it now
//! is.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::keys::{IDENTITY, VERSION};
use crate::kv::{
    Compare, KeyRange, KeyValue, KvStore, LeaseId, Op, Revision, TxnOutcome, Watch, MAX_TXN_OPS,
};

/// The highest revision seen is written down this long after it moved (once for all the moves
/// meanwhile), and when fleetd stops ([`Continuity::flush`]): a copy of the registry older
/// than that is told from the registry it was taken of.
const SAVE_DELAY: Duration = Duration::from_secs(1);
/// While the fault lasts it is logged again this often (every call fails with it meanwhile).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What a fleetd remembers of its registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    registry_id: String,
    revision: Revision,
}

struct State {
    known: Known,
    saved: Revision,
    /// A save of the revision is scheduled.
    saving: bool,
    fault: Option<String>,
    warned_at: Option<Instant>,
}

/// A store checked for continuity (see the module's documentation).
pub struct Continuity {
    inner: Arc<dyn KvStore>,
    file: PathBuf,
    state: Arc<Mutex<State>>,
}

/// What the store holds of its own identity, at one revision.
struct Identity {
    version: bool,
    id: Option<String>,
    revision: Revision,
}

async fn identity(store: &dyn KvStore) -> Result<Identity> {
    let (ranges, revision) = store.range(&[VERSION, IDENTITY]).await?;
    Ok(identity_in(&ranges, revision))
}

fn identity_in(ranges: &[Vec<KeyValue>], revision: Revision) -> Identity {
    let exact = |range: Option<&Vec<KeyValue>>, key: &str| {
        range.and_then(|kvs| kvs.iter().find(|kv| kv.key == key).cloned())
    };
    Identity {
        version: exact(ranges.first(), VERSION).is_some(),
        id: exact(ranges.get(1), IDENTITY).map(|kv| String::from_utf8_lossy(&kv.value).into()),
        revision,
    }
}

impl Continuity {
    /// `inner`, checked against what `file` remembers of it. A store never seen before (no
    /// file) is adopted, and given an identity if it has none; one that is not what the file
    /// remembers is refused with the fault.
    pub async fn open(inner: Arc<dyn KvStore>, file: &Path) -> Result<Continuity> {
        let known = read_known(file)?;
        let found = identity(inner.as_ref()).await?;
        let known = match known {
            Some(known) => {
                if let Some(fault) = fault(&known, known.revision, &found) {
                    return Err(RegistryError::WentBackwards(explain(&fault, file)));
                }
                Known {
                    revision: found.revision,
                    ..known
                }
            }
            None => adopt(inner.as_ref(), found).await?,
        };
        save_known(file, &known)?;
        Ok(Continuity {
            inner,
            file: file.to_owned(),
            state: Arc::new(Mutex::new(State {
                saved: known.revision,
                known,
                saving: false,
                fault: None,
                warned_at: None,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Writes down the highest revision seen, if it moved since it last was: when fleetd stops.
    pub fn flush(&self) {
        save_revision(&self.file, &self.state);
    }

    /// The fault found, if any, logged now and then. A fault ends when the operator has
    /// removed the file: the registry is then adopted as it is.
    async fn refused(&self) -> Result<()> {
        let fault = {
            let mut state = self.lock();
            let Some(fault) = state.fault.clone() else {
                return Ok(());
            };
            if self.file.exists() {
                if state.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::error!(file = %self.file.display(), "registry: {fault}");
                    state.warned_at = Some(Instant::now());
                }
                return Err(RegistryError::WentBackwards(fault));
            }
            fault
        };
        let found = identity(self.inner.as_ref()).await?;
        let known = adopt(self.inner.as_ref(), found).await?;
        save_known(&self.file, &known)?;
        tracing::warn!(registry_id = %known.registry_id, revision = known.revision, was = %fault, "registry: accepted as it now is (the operator removed the file)");
        let mut state = self.lock();
        state.saved = known.revision;
        state.known = known;
        state.fault = None;
        Ok(())
    }

    /// Records a fault found now (the first one stays) and answers with it.
    fn fail(&self, fault: String) -> RegistryError {
        let mut state = self.lock();
        let fault = state
            .fault
            .get_or_insert_with(|| {
                let fault = explain(&fault, &self.file);
                tracing::error!(file = %self.file.display(), "registry: {fault}");
                fault
            })
            .clone();
        state.warned_at = Some(Instant::now());
        RegistryError::WentBackwards(fault)
    }

    /// The highest revision seen so far: a request sent now must be answered at this revision
    /// or a later one. (One sent earlier may be answered lower, after a later one was: the
    /// floor is taken before each request, not when its answer comes.)
    fn floor(&self) -> Revision {
        self.lock().known.revision
    }

    /// Checks what the store answered (with its identity, when it was read too) to a request
    /// sent when the highest revision seen was `floor`, and writes the revision down now and
    /// then.
    fn observe(&self, found: &Identity, floor: Revision) -> Result<()> {
        let save = {
            let mut state = self.lock();
            if let Some(fault) = fault(&state.known, floor, found) {
                drop(state);
                return Err(self.fail(fault));
            }
            state.known.revision = state.known.revision.max(found.revision);
            let due = state.known.revision > state.saved && !state.saving;
            state.saving |= due;
            due
        };
        if save {
            let (file, state) = (self.file.clone(), Arc::clone(&self.state));
            let later = async move {
                tokio::time::sleep(SAVE_DELAY).await;
                save_revision(&file, &state);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(later)),
                Err(_) => save_revision(&self.file, &self.state),
            }
        }
        Ok(())
    }

    /// A revision the store answered at, without its identity.
    fn observe_revision(&self, revision: Revision, floor: Revision) -> Result<()> {
        let id = Some(self.lock().known.registry_id.clone());
        let found = Identity {
            version: true,
            id,
            revision,
        };
        self.observe(&found, floor)
    }

    /// Reads the store's identity and checks it (before a write that cannot carry the check
    /// itself).
    async fn verify(&self) -> Result<()> {
        self.refused().await?;
        let floor = self.floor();
        let found = identity(self.inner.as_ref()).await?;
        self.observe(&found, floor)
    }
}

/// What is wrong with `found`, for a fleetd that knew `known` and had seen revision `seen`
/// when it asked.
fn fault(known: &Known, seen: Revision, found: &Identity) -> Option<String> {
    match &found.id {
        None if !found.version => Some(format!(
            "the registry is empty (no format version, no registry-id), but this machine knew registry {} at revision {seen}: it was wiped, or fleetd now points at another one",
            known.registry_id
        )),
        None => Some(format!(
            "the registry holds no registry-id, but this machine knew registry {} at revision {seen}: it was replaced or restored from a copy older than that",
            known.registry_id
        )),
        Some(id) if *id != known.registry_id => Some(format!(
            "the registry is {id}, but this machine knew registry {}: it was wiped and created again, or fleetd now points at another cluster's",
            known.registry_id
        )),
        Some(_) if !found.version => Some(format!(
            "the registry's format version is missing (registry {} at revision {}): its keys were deleted or it was partly restored",
            known.registry_id, found.revision
        )),
        Some(_) if found.revision < seen => Some(format!(
            "the registry is at revision {}, lower than revision {seen} this machine saw: it went backwards (restored from an older backup?)",
            found.revision
        )),
        Some(_) => None,
    }
}

fn explain(fault: &str, file: &Path) -> String {
    format!(
        "{fault}. fleetd writes nothing to it and leaves its units as they run; if this registry is meant (restored on purpose, or a new one), remove {} to accept it",
        file.display()
    )
}

/// Takes the store as this fleetd's registry, giving it an identity if it has none.
async fn adopt(store: &dyn KvStore, found: Identity) -> Result<Known> {
    if let Some(registry_id) = found.id {
        return Ok(Known {
            registry_id,
            revision: found.revision,
        });
    }
    let created = new_id();
    let outcome = store
        .txn(
            vec![Compare::Absent(IDENTITY.into())],
            vec![Op::put(IDENTITY, created.as_bytes())],
        )
        .await?;
    if outcome.succeeded {
        tracing::info!(registry_id = %created, "registry: identity written");
        return Ok(Known {
            registry_id: created,
            revision: outcome.revision,
        });
    }
    // Another fleetd gave it one first.
    let found = identity(store).await?;
    let registry_id = found
        .id
        .ok_or_else(|| RegistryError::Unavailable("registry-id vanished as it was read".into()))?;
    Ok(Known {
        registry_id,
        revision: found.revision,
    })
}

/// 128 random bits, in hex.
fn new_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (a bare container): the time and process are unique enough for an
        // identity that only has to differ from the registry it replaces.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (now ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes down the highest revision seen in `state`, if it moved since it last was.
fn save_revision(file: &Path, state: &Mutex<State>) {
    let known = {
        let mut state = lock(state);
        state.saving = false;
        if state.known.revision <= state.saved || state.fault.is_some() {
            return;
        }
        state.saved = state.known.revision;
        state.known.clone()
    };
    if let Err(error) = save_known(file, &known) {
        tracing::warn!(%error, "registry: cannot write down the revision seen");
    }
}

fn storage(file: &Path, reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::Storage {
        path: file.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_known(file: &Path) -> Result<Option<Known>> {
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(file, e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        storage(
            file,
            format!(
                "not what fleetd writes there ({e}); remove it to accept the registry as it is"
            ),
        )
    })
}

/// Replaces the file whole (a new file renamed over it), readable by its owner only.
fn save_known(file: &Path, known: &Known) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let json = serde_json::to_vec(known).expect("plain fields serialize");
    let fresh = file.with_extension("new");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&fresh)
        .and_then(|mut f| f.write_all(&json))
        .and_then(|()| std::fs::rename(&fresh, file));
    written.map_err(|e| storage(file, e))
}

#[async_trait]
impl KvStore for Continuity {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.refused().await?;
        self.inner.get(key).await
    }

    async fn get_applied(&self, key: &str) -> Result<Option<KeyValue>> {
        self.refused().await?;
        self.inner.get_applied(key).await
    }

    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)> {
        self.refused().await?;
        let mut asked = prefixes.to_vec();
        asked.extend([VERSION, IDENTITY]);
        let floor = self.floor();
        let (mut ranges, revision) = self.inner.range(&asked).await?;
        let own = ranges.split_off(prefixes.len());
        self.observe(&identity_in(&own, revision), floor)?;
        Ok((ranges, revision))
    }

    async fn txn(&self, mut compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        self.refused().await?;
        let id = self.lock().known.registry_id.clone();
        if compares.len() >= MAX_TXN_OPS {
            self.verify().await?;
        } else {
            compares.push(Compare::Value(IDENTITY.into(), id.clone().into_bytes()));
        }
        let floor = self.floor();
        let outcome = self.inner.txn(compares, ops).await?;
        if !outcome.succeeded {
            // Whether it was the identity that did not hold.
            let found = identity(self.inner.as_ref()).await?;
            self.observe(&found, floor)?;
        }
        self.observe_revision(outcome.revision, floor)?;
        Ok(outcome)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.verify().await?;
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Option<Duration>> {
        self.refused().await?;
        self.inner.keep_alive(lease, within).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.verify().await?;
        self.inner.revoke_lease(lease).await
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.refused().await?;
        self.inner.lease_ttl(lease).await
    }

    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }

    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch> {
        self.refused().await?;
        self.inner.watch_range(range, from).await
    }
}
