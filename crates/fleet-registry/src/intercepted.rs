//! A store over another whose writes first pass a check that may refuse them: to count the
//! writes a component makes, or to fail a write where a test wants it failed (an etcd that
//! went away between two of them).

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::kv::{Compare, KeyRange, KeyValue, KvStore, LeaseId, Op, Revision, TxnOutcome, Watch};

/// A write to the store (each is a raft proposal in etcd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Txn,
    GrantLease,
    RevokeLease,
}

type Check = dyn Fn(Write) -> Result<()> + Send + Sync;

pub struct Intercepted {
    inner: Arc<dyn KvStore>,
    check: Box<Check>,
}

impl Intercepted {
    /// `inner`, every write of which is first shown to `check`; an error it returns is the
    /// write's, and the write is not made.
    pub fn new(
        inner: Arc<dyn KvStore>,
        check: impl Fn(Write) -> Result<()> + Send + Sync + 'static,
    ) -> Intercepted {
        Intercepted {
            inner,
            check: Box::new(check),
        }
    }
}

#[async_trait::async_trait]
impl KvStore for Intercepted {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn get_applied(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get_applied(key).await
    }
    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)> {
        self.inner.range(prefixes).await
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        (self.check)(Write::Txn)?;
        self.inner.txn(compares, ops).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        (self.check)(Write::GrantLease)?;
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Option<Duration>> {
        self.inner.keep_alive(lease, within).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        (self.check)(Write::RevokeLease)?;
        self.inner.revoke_lease(lease).await
    }
    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        self.inner.lease_ttl(lease).await
    }
    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }
    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch> {
        self.inner.watch_range(range, from).await
    }
}
