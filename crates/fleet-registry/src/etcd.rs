//! The etcd v3 backend, through `etcd-client`. Every key is stored under the configured
//! prefix; every request is bounded by the request timeout; connection failures surface as
//! [`RegistryError::Unavailable`] so callers retry with backoff (the channel reconnects by
//! itself).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, Mutex};

use crate::error::{RegistryError, Result};
use crate::kv::{
    check_txn, prefix_end, Compare, Event, EventKind, KeyRange, KeyValue, KvStore, LeaseId, Op,
    Revision, TxnOutcome, Watch, WatchBatch,
};

#[derive(Clone)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port` URLs.
    pub endpoints: Vec<String>,
    /// Prepended to every key, e.g. `/fleet-rs/`.
    pub key_prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The bound on every request.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>, key_prefix: impl Into<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            key_prefix: key_prefix.into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(3),
        }
    }
}

/// Secrets never reach logs: the password is shown as set or not.
impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.key_prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

pub struct EtcdStore {
    /// Replaced by a fresh connection when a keep-alive goes unanswered (see `reconnect`).
    client: Arc<RwLock<Client>>,
    /// A fresh connection is being opened.
    reconnecting: Arc<AtomicBool>,
    config: EtcdConfig,
    prefix: String,
    timeout: Duration,
    /// One keep-alive stream per lease, each behind a lock of its own, so that renewing one
    /// lease (a machine's) never waits for another's (the engine leader's).
    keepers: std::sync::Mutex<HashMap<LeaseId, Arc<Mutex<Option<LeaseStream>>>>>,
}

struct LeaseStream {
    keeper: etcd_client::LeaseKeeper,
    responses: etcd_client::LeaseKeepAliveStream,
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

/// Maps etcd's errors onto ours, so that callers can tell an outage from a refusal.
/// A missing lease maps to `LeaseNotFound(0)`: the caller knows which lease it asked about.
fn map_error(e: etcd_client::Error) -> RegistryError {
    classify(&e)
}

fn classify(e: &etcd_client::Error) -> RegistryError {
    let text = e.to_string();
    if text.contains("lease not found") {
        return RegistryError::LeaseNotFound(0);
    }
    if let etcd_client::Error::GRpcStatus(status) = e {
        let message = status.message();
        if message.contains("too many operations in txn")
            || message.contains("duplicate key given in txn")
        {
            return RegistryError::Invalid(message.to_owned());
        }
        if message.contains("request is too large") {
            return RegistryError::Invalid(message.to_owned());
        }
        use tonic_code::*;
        if matches!(
            status.code() as i32,
            UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED | UNKNOWN
        ) {
            return unavailable(text);
        }
        return RegistryError::Invalid(text);
    }
    unavailable(text)
}

/// gRPC status codes we look at (as numbers, to avoid depending on tonic directly).
mod tonic_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const UNAVAILABLE: i32 = 14;
}

fn read_file(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        RegistryError::Invalid(format!("cannot read etcd {what} {}: {e}", path.display()))
    })
}

/// An etcd entry as ours, with the prefix removed. A key outside the prefix (or not UTF-8) is
/// a corrupt record, named by its key.
fn convert(prefix: &str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .ok()
        .and_then(|k| k.strip_prefix(prefix))
        .ok_or_else(|| RegistryError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            reason: "key outside the registry's prefix or not UTF-8".into(),
        })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}

impl EtcdStore {
    /// One key, read as `options` say (linearizably without them).
    async fn get_with(&self, key: &str, options: Option<GetOptions>) -> Result<Option<KeyValue>> {
        let key = self.full_key(key);
        let response = self
            .bounded("get", Resend::Idempotent, |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.get(key, options).await }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| self.convert(kv))
            .transpose()
    }

    /// Connects to etcd. Fails with `Unavailable` when no endpoint answers within the request
    /// timeout; callers that must wait for etcd retry with backoff.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore> {
        let store = EtcdStore {
            client: Arc::new(RwLock::new(open(config).await?)),
            reconnecting: Arc::new(AtomicBool::new(false)),
            config: config.clone(),
            prefix: config.key_prefix.clone(),
            timeout: config.request_timeout,
            keepers: std::sync::Mutex::new(HashMap::new()),
        };
        // A cheap request, so that a wrong endpoint or bad credentials fail here, not later.
        store.get("\u{0}probe").await?;
        Ok(store)
    }

    /// Drops the keep-alive stream of a lease that is gone.
    fn forget(&self, lease: LeaseId) {
        self.keepers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&lease);
    }

    /// The keep-alive stream slot of `lease` (made empty on first use).
    fn keeper_slot(&self, lease: LeaseId) -> Arc<Mutex<Option<LeaseStream>>> {
        self.keepers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(lease)
            .or_default()
            .clone()
    }

    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Opens a new connection for the requests to come, in the background (so that a lease
    /// holder can go on trying to renew meanwhile). After a network outage the old one can sit
    /// in TCP's retransmission backoff for seconds after etcd is reachable again: longer than
    /// a machine lease lives. Requests under way finish on the old one.
    fn reconnect(&self) {
        if self.reconnecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (slot, reconnecting, config) = (
            self.client.clone(),
            self.reconnecting.clone(),
            self.config.clone(),
        );
        tokio::spawn(async move {
            match open(&config).await {
                Ok(client) => {
                    *slot
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = client;
                    tracing::debug!("etcd: connected afresh");
                }
                Err(error) => tracing::debug!(%error, "etcd: no fresh connection yet"),
            }
            reconnecting.store(false, Ordering::SeqCst);
        });
    }
}

/// A client of `config`'s endpoints: `Unavailable` when none answers within the request timeout.
async fn open(config: &EtcdConfig) -> Result<Client> {
    if config.endpoints.is_empty() {
        return Err(RegistryError::Invalid(
            "no etcd endpoints configured".into(),
        ));
    }
    let mut options = ConnectOptions::new()
        .with_timeout(config.request_timeout)
        .with_connect_timeout(config.request_timeout)
        .with_keep_alive(Duration::from_secs(5), config.request_timeout);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if config.ca_file.is_some() || config.cert_file.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read_file(ca, "CA file")?));
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read_file(cert, "certificate file")?,
                    read_file(key, "key file")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(RegistryError::Invalid(
                    "etcd TLS needs both a certificate file and a key file".into(),
                ))
            }
        }
        options = options.with_tls(tls);
    }
    let connect = Client::connect(&config.endpoints, Some(options));
    tokio::time::timeout(config.request_timeout, connect)
        .await
        .map_err(|_| {
            unavailable(format!(
                "no answer from {} within {:?}",
                config.endpoints.join(","),
                config.request_timeout
            ))
        })?
        .map_err(map_error)
}

impl EtcdStore {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        convert(&self.prefix, kv)
    }

    /// Runs a request under the request timeout. A request that never reached a member (its
    /// connection was refused: that member is down) is sent again, so the balancer can pick
    /// another member; so is a request that failed on the way (a member killed under it) if
    /// sending it twice is harmless (`Resend::Idempotent`). A transaction or a lease grant is
    /// not sent twice, since it may have been applied.
    async fn bounded<T, Fut>(
        &self,
        what: &str,
        resend: Resend,
        request: impl FnMut(Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.bounded_by(what, self.timeout, resend, request).await
    }

    /// [`EtcdStore::bounded`], given up after `within`.
    async fn bounded_by<T, Fut>(
        &self,
        what: &str,
        within: Duration,
        resend: Resend,
        mut request: impl FnMut(Client) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, request(self.client())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e))
                    if resend.allows(&e)
                        && tokio::time::Instant::now() + RESEND_PAUSE < deadline =>
                {
                    tracing::debug!(what, error = %e, "etcd member unreachable; resending");
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                Ok(Err(e)) => return Err(map_error(e)),
                Err(_) => return Err(unavailable(format!("{what}: no answer within {within:?}"))),
            }
        }
    }
}

/// Which failed requests [`EtcdStore::bounded`] sends again.
#[derive(Clone, Copy)]
enum Resend {
    /// Only one that never reached a member.
    NeverSent,
    /// Also one that failed on the way: reads, and writes whose repetition changes nothing.
    Idempotent,
}

impl Resend {
    fn allows(self, e: &etcd_client::Error) -> bool {
        match self {
            Resend::NeverSent => never_sent(e),
            Resend::Idempotent => {
                never_sent(e) || matches!(classify(e), RegistryError::Unavailable(_))
            }
        }
    }
}

/// The largest listing read in one answer: every key of a scope (states, schedule, jobs) of a
/// cluster of 100,000+ units is tens of megabytes; etcd itself sends any size.
const MAX_LISTING_BYTES: usize = 1 << 30;

/// Between sends of a request whose member refused the connection.
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// Whether the request failed before it could reach a member (connection refused or reset
/// while connecting), so it was certainly not applied.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
        etcd_client::Error::TransportError(e) => format!("{e:?}"),
        _ => return false,
    };
    text.contains("tcp connect error") || text.contains("ConnectError")
}

#[async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get_with(key, None).await
    }

    async fn get_applied(&self, key: &str) -> Result<Option<KeyValue>> {
        let serializable = GetOptions::new().with_serializable();
        self.get_with(key, Some(serializable)).await
    }

    async fn range(&self, prefixes: &[&str]) -> Result<(Vec<Vec<KeyValue>>, Revision)> {
        // One transaction of ranges: every range is read at the same revision.
        let ops: Vec<TxnOp> = prefixes
            .iter()
            .map(|p| TxnOp::get(self.full_key(p), Some(GetOptions::new().with_prefix())))
            .collect();
        let txn = Txn::new().and_then(ops);
        let response = self
            .bounded("range", Resend::Idempotent, |c| {
                let txn = txn.clone();
                // A scope of 10,000 units is more than gRPC's default 4 MB answer.
                let mut kv = c.kv_client().max_decoding_message_size(MAX_LISTING_BYTES);
                async move { kv.txn(txn).await }
            })
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut ranges = Vec::with_capacity(prefixes.len());
        for op in response.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                return Err(unavailable("etcd answered a range with another operation"));
            };
            let kvs = get
                .kvs()
                .iter()
                .map(|kv| self.convert(kv))
                .collect::<Result<Vec<_>>>()?;
            ranges.push(kvs);
        }
        Ok((ranges, revision))
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        check_txn(&compares, &ops)?;
        let compares: Vec<etcd_client::Compare> = compares
            .iter()
            .map(|c| {
                let key = self.full_key(c.key());
                match c {
                    Compare::Absent(_) => etcd_client::Compare::version(key, CompareOp::Equal, 0),
                    Compare::ModRevision(_, rev) => {
                        etcd_client::Compare::mod_revision(key, CompareOp::Equal, *rev)
                    }
                    Compare::CreateRevision(_, rev) => {
                        etcd_client::Compare::create_revision(key, CompareOp::Equal, *rev)
                    }
                    Compare::Value(_, value) => {
                        etcd_client::Compare::value(key, CompareOp::Equal, value.clone())
                    }
                }
            })
            .collect();
        let leases: Vec<LeaseId> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put {
                    lease: Some(lease), ..
                } => Some(*lease),
                _ => None,
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = lease.map(|l| PutOptions::new().with_lease(l));
                    TxnOp::put(self.full_key(&key), value, options)
                }
                Op::Delete { key } => TxnOp::delete(self.full_key(&key), None),
                Op::DeletePrefix { prefix } => TxnOp::delete(
                    self.full_key(&prefix),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                ),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(ops);
        let result = self
            .bounded("txn", Resend::NeverSent, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let response = match result {
            Err(RegistryError::LeaseNotFound(_)) => {
                return Err(RegistryError::LeaseNotFound(
                    leases.first().copied().unwrap_or(0),
                ));
            }
            other => other?,
        };
        Ok(TxnOutcome {
            succeeded: response.succeeded(),
            revision: response.header().map_or(0, |h| h.revision()),
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let seconds = ttl.as_secs_f64().ceil() as i64;
        if seconds <= 0 {
            return Err(RegistryError::Invalid(
                "a lease needs a TTL above zero".into(),
            ));
        }
        let response = self
            .bounded("lease grant", Resend::NeverSent, |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?;
        Ok(response.id())
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Option<Duration>> {
        let within = within.min(self.timeout);
        let deadline = tokio::time::Instant::now() + within;
        let late = || unavailable(format!("lease keep-alive: no answer within {within:?}"));
        let slot = self.keeper_slot(lease);
        // The whole renewal, waiting for an earlier one of the same lease included, keeps to
        // `within`: the caller's timing depends on it.
        let Ok(mut stream) = tokio::time::timeout_at(deadline, slot.lock()).await else {
            return Err(late());
        };
        let open = match stream.as_mut() {
            Some(open) => open,
            None => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let opened = self
                    .bounded_by(
                        "lease keep-alive",
                        left,
                        Resend::Idempotent,
                        |mut c| async move { c.lease_keep_alive(lease).await },
                    )
                    .await;
                match opened {
                    Ok((keeper, responses)) => stream.insert(LeaseStream { keeper, responses }),
                    Err(RegistryError::LeaseNotFound(_)) => {
                        self.forget(lease);
                        return Ok(None);
                    }
                    Err(error @ RegistryError::Unavailable(_)) => {
                        self.reconnect();
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let renewal = async {
            open.keeper.keep_alive().await?;
            open.responses.message().await
        };
        match tokio::time::timeout_at(deadline, renewal).await {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                Ok(Some(Duration::from_secs(response.ttl() as u64)))
            }
            Ok(Ok(_)) => {
                *stream = None;
                self.forget(lease);
                Ok(None)
            }
            Ok(Err(e)) => {
                *stream = None;
                match map_error(e) {
                    RegistryError::LeaseNotFound(_) => {
                        self.forget(lease);
                        Ok(None)
                    }
                    other => Err(other),
                }
            }
            Err(_) => {
                // The stream may still deliver this answer later, out of step: start afresh.
                *stream = None;
                self.reconnect();
                Err(late())
            }
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.forget(lease);
        match self
            .bounded("lease revoke", Resend::Idempotent, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
        {
            Err(RegistryError::LeaseNotFound(_)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn lease_ttl(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let response = self
            .bounded("lease ttl", Resend::Idempotent, |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok((response.ttl() > 0).then(|| Duration::from_secs(response.ttl() as u64)))
    }

    async fn watch_range(&self, range: &KeyRange, from: Revision) -> Result<Watch> {
        // The range within this store's key prefix: its end, or the end of the prefix (etcd's
        // "\0" end is "every key from the start on", for a store without a prefix).
        let end = match &range.end {
            Some(end) => self.full_key(end),
            None => prefix_end(&self.prefix).unwrap_or_else(|| "\0".to_owned()),
        };
        let mut options = WatchOptions::new().with_range(end);
        if from > 0 {
            options = options.with_start_revision(from);
        }
        let key = self.full_key(&range.start);
        let mut stream = self
            .bounded("watch", Resend::Idempotent, |mut c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
        let (sender, receiver) = mpsc::channel(1024);
        let key_prefix = self.prefix.clone();
        let task = tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => {
                        let _ = sender.send(Err(unavailable("etcd ended the watch"))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = sender.send(Err(map_error(e))).await;
                        return;
                    }
                };
                if message.canceled() {
                    let error = if message.compact_revision() > 0 {
                        RegistryError::Compacted {
                            requested: from,
                            compacted: message.compact_revision(),
                        }
                    } else {
                        unavailable(format!(
                            "etcd cancelled the watch: {}",
                            message.cancel_reason()
                        ))
                    };
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                let mut batches: Vec<WatchBatch> = Vec::new();
                for event in message.events() {
                    let Some(kv) = event.kv() else { continue };
                    let kind = match event.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    };
                    let kv = match convert(&key_prefix, kv) {
                        Ok(kv) => kv,
                        Err(e) => {
                            let _ = sender.send(Err(e)).await;
                            return;
                        }
                    };
                    let revision = kv.mod_revision;
                    match batches.last_mut() {
                        Some(batch) if batch.revision == revision => {
                            batch.events.push(Event { kind, kv })
                        }
                        _ => batches.push(WatchBatch {
                            revision,
                            events: vec![Event { kind, kv }],
                        }),
                    }
                }
                for batch in batches {
                    if sender.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watch::new(receiver, Box::new(AbortOnDrop(task))))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
