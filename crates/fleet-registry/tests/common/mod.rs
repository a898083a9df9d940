//! Test support shared by the suites that run against every backend.

#![allow(dead_code)] // each test crate uses part of it

use std::sync::Arc;

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::kv::{KvStore, Op};
use fleet_registry::local::LocalStore;
use fleet_testkit::EtcdServer;

/// A backend under test, with whatever keeps it alive and a way to compact its history.
pub struct Backend {
    pub store: Arc<dyn KvStore>,
    pub etcd: Option<EtcdServer>,
    pub embedded: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn memory() -> Backend {
        Backend {
            store: Arc::new(LocalStore::with_history(64)),
            etcd: None,
            embedded: None,
        }
    }

    pub async fn embedded() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(&dir.path().join("registry.redb")).expect("open store");
        Backend {
            store: Arc::new(store),
            etcd: None,
            embedded: Some(dir),
        }
    }

    pub async fn etcd() -> Backend {
        let server = EtcdServer::start();
        let config = EtcdConfig::new(vec![server.endpoint()], "/fleet-test/");
        let store = EtcdStore::connect(&config).await.expect("connect to etcd");
        Backend {
            store: Arc::new(store),
            etcd: Some(server),
            embedded: None,
        }
    }

    /// Makes history before `revision` unavailable to watches.
    pub async fn compact(&mut self, revision: i64) {
        match (&self.etcd, &self.embedded) {
            (Some(server), _) => server.compact(revision),
            // The embedded store keeps no history across a restart: reopen it.
            (None, Some(dir)) => {
                let path = dir.path().join("registry.redb");
                // The file is locked while open: close it first.
                self.store = Arc::new(LocalStore::with_history(0));
                self.store = Arc::new(LocalStore::open(&path).expect("reopen store"));
            }
            // The memory store keeps 64 revisions: push the old ones out.
            (None, None) => {
                for i in 0..70 {
                    put(&*self.store, "filler", &i.to_string()).await;
                }
            }
        }
    }
}

pub async fn put(store: &dyn KvStore, key: &str, value: &str) -> i64 {
    let outcome = store.txn(vec![], vec![Op::put(key, value)]).await.unwrap();
    assert!(outcome.succeeded);
    outcome.revision
}

/// Defines `mod memory`, `mod embedded` and `mod etcd`, each running every listed
/// `async fn(Backend)` of the including file against that backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::common::Backend::memory().await).await }
            )*
        }
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::common::Backend::embedded().await).await }
            )*
        }
        mod etcd {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test(super::common::Backend::etcd().await).await }
            )*
        }
    };
}
