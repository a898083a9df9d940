//! Continuity: a registry that is not the one a fleetd knew (wiped, restored from an older
//! copy, another cluster's) is refused at open and the moment it is noticed later, with
//! nothing written to it, until the file that remembers the old one is removed.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleet_registry::error::{RegistryError, Result};
use fleet_registry::kv::{
    Compare, KeyRange, KeyValue, KvStore, LeaseId, Op, Revision, TxnOutcome, Watch,
};
use fleet_registry::local::LocalStore;
use fleet_registry::{Continuity, Registry};

/// A store that can be swapped for another under a running fleetd: an etcd wiped and started
/// again at the same address.
struct Swappable(Mutex<Arc<dyn KvStore>>);

impl Swappable {
    fn new(store: Arc<dyn KvStore>) -> Arc<Swappable> {
        Arc::new(Swappable(Mutex::new(store)))
    }
    fn swap(&self, store: Arc<dyn KvStore>) {
        *self.0.lock().unwrap() = store;
    }
    fn now(&self) -> Arc<dyn KvStore> {
        Arc::clone(&self.0.lock().unwrap())
    }
}

#[async_trait]
impl KvStore for Swappable {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.now().get(key).await
    }
    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)> {
        self.now().range(prefixes).await
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        self.now().txn(compares, ops).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.now().grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Option<Duration>> {
        self.now().keep_alive(lease, within).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.now().revoke_lease(lease).await
    }
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.now().lease_ttl(lease).await
    }
    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch> {
        self.now().watch_range(range, from).await
    }
}

/// The fault `result` carries, which must say `expected` and what to do about it.
fn check<T: std::fmt::Debug>(result: Result<T>, expected: &str, file: &Path) {
    match result {
        Err(RegistryError::WentBackwards(why)) => {
            assert!(why.contains(expected), "{why}\nshould say: {expected}");
            let remedy = format!("remove {} to accept it", file.display());
            assert!(why.contains(&remedy), "{why}\nshould say: {remedy}");
            assert!(why.contains("leaves its units as they run"), "{why}");
        }
        other => panic!("expected the fault {expected:?}, got {other:?}"),
    }
}

/// Opening `store` against what `file` remembers is refused with the fault `expected`.
async fn refused_at_open(store: &Arc<dyn KvStore>, file: &Path, expected: &str) {
    check(
        Continuity::open(Arc::clone(store), file).await.map(|_| ()),
        expected,
        file,
    );
}

async fn keys(store: &dyn KvStore) -> Vec<String> {
    let (ranges, _) = store.range(&[""]).await.unwrap();
    ranges.concat().into_iter().map(|kv| kv.key).collect()
}

async fn put(store: &dyn KvStore, key: &str) -> TxnOutcome {
    store.txn(vec![], vec![Op::put(key, "x")]).await.unwrap()
}

#[tokio::test]
async fn a_new_registry_is_given_an_identity_that_is_remembered_privately() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry-known.json");
    let store: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    let checked = Continuity::open(Arc::clone(&store), &file).await.unwrap();
    let id = store
        .get("registry-id")
        .await
        .unwrap()
        .expect("an identity");
    let remembered = std::fs::read_to_string(&file).unwrap();
    assert!(remembered.contains(&String::from_utf8(id.value.clone()).unwrap()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Usable, and opened again as the same registry.
    Registry::open(Arc::new(checked)).await.unwrap();
    put(store.as_ref(), "jobs/a.service").await;
    Continuity::open(Arc::clone(&store), &file).await.unwrap();
    let again = store.get("registry-id").await.unwrap().unwrap();
    assert_eq!(again.value, id.value, "the identity is written once");
}

#[tokio::test]
async fn a_registry_not_the_one_known_is_refused_at_open_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry-known.json");
    let known: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    Continuity::open(Arc::clone(&known), &file).await.unwrap();
    put(known.as_ref(), "version").await;
    for _ in 0..4 {
        put(known.as_ref(), "jobs/a.service").await;
    }
    // The highest revision seen is written down when the registry is opened again.
    Continuity::open(Arc::clone(&known), &file).await.unwrap();

    let wiped: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    refused_at_open(
        &wiped,
        &file,
        "the registry is empty (no format version, no registry-id)",
    )
    .await;
    assert_eq!(
        keys(wiped.as_ref()).await,
        Vec::<String>::new(),
        "nothing written"
    );

    let other: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    let elsewhere = dir.path().join("elsewhere.json");
    Continuity::open(Arc::clone(&other), &elsewhere)
        .await
        .unwrap();
    refused_at_open(&other, &file, "fleetd now points at another cluster's").await;

    // The same registry as a copy older than what was seen: same identity, lower revision.
    let copy: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    let id = known.get("registry-id").await.unwrap().unwrap().value;
    copy.txn(vec![], vec![Op::put("registry-id", id)])
        .await
        .unwrap();
    put(copy.as_ref(), "version").await;
    refused_at_open(
        &copy,
        &file,
        "lower than revision 7 this machine saw: it went backwards",
    )
    .await;

    // A registry of an older fleet-rs (a format version, no identity) under a known one.
    let older: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    put(older.as_ref(), "version").await;
    refused_at_open(&older, &file, "the registry holds no registry-id").await;

    // The known registry with its format version deleted.
    known
        .txn(vec![], vec![Op::delete("version")])
        .await
        .unwrap();
    refused_at_open(&known, &file, "the registry's format version is missing").await;

    std::fs::write(&file, "not json").unwrap();
    match Continuity::open(Arc::clone(&known), &file).await {
        Err(RegistryError::Storage { reason, .. }) => {
            assert!(
                reason.contains("remove it to accept the registry"),
                "{reason}"
            )
        }
        other => panic!("expected a storage error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_registry_wiped_under_a_running_fleetd_is_refused_until_the_operator_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry-known.json");
    let store = Swappable::new(Arc::new(LocalStore::in_memory()));
    let checked = Arc::new(Continuity::open(store.clone(), &file).await.unwrap());
    let registry = Registry::open(checked.clone()).await.unwrap();
    put(checked.as_ref(), "jobs/a.service").await;
    let lease = checked.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert!(registry.revision().await.unwrap() > 0);

    let wiped: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    store.swap(Arc::clone(&wiped));
    // The first write finds it, and does not land: it was conditional on the identity.
    check(
        checked
            .txn(vec![], vec![Op::put("jobs/b.service", "x")])
            .await,
        "the registry is empty",
        &file,
    );
    // Then every call is refused, reads and lease renewals too.
    check(registry.revision().await, "the registry is empty", &file);
    check(
        checked.get("jobs/a.service").await,
        "the registry is empty",
        &file,
    );
    check(
        checked.keep_alive(lease, Duration::from_secs(1)).await,
        "the registry is empty",
        &file,
    );
    check(
        checked.grant_lease(Duration::from_secs(30)).await,
        "the registry is empty",
        &file,
    );
    check(
        checked.watch("jobs/", 0).await.map(|_| ()),
        "the registry is empty",
        &file,
    );
    assert_eq!(
        keys(wiped.as_ref()).await,
        Vec::<String>::new(),
        "nothing written"
    );

    // The operator accepts it: the registry is taken as it now is, and given an identity.
    std::fs::remove_file(&file).unwrap();
    let outcome = checked
        .txn(vec![], vec![Op::put("jobs/b.service", "x")])
        .await
        .unwrap();
    assert!(outcome.succeeded);
    assert_eq!(
        keys(wiped.as_ref()).await,
        ["jobs/b.service", "registry-id"]
    );
    assert!(file.exists(), "the new registry is remembered");
}

#[tokio::test]
async fn a_registry_replaced_by_another_under_a_running_fleetd_is_noticed_by_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry-known.json");
    let store = Swappable::new(Arc::new(LocalStore::in_memory()));
    let checked = Arc::new(Continuity::open(store.clone(), &file).await.unwrap());
    let registry = Registry::open(checked.clone()).await.unwrap();
    let other: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    Continuity::open(Arc::clone(&other), &dir.path().join("other.json"))
        .await
        .unwrap();
    for _ in 0..10 {
        put(other.as_ref(), "jobs/x.service").await;
    }
    store.swap(Arc::clone(&other));
    let scope = fleet_registry::Scope::All;
    check(
        registry.snapshot(&scope).await.map(|_| ()),
        "fleetd now points at another cluster's",
        &dir.path().join("registry-known.json"),
    );
}
