//! API v1 as fleet 1.0 served it, over the registry: `units` (list, get, put, delete), `state`,
//! `machines`, under `/fleet/v1/` and `/v1-alpha/`. Routing is by hand so that every path,
//! method and error answers as fleet answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use fleet_registry::registry::JobWrite;
use fleet_registry::{Reflector, Registry, RegistryError, Scope, Snapshot};
use fleet_unit::{validate_options, JobState, MachineId, NameInfo, UnitFile, UnitHash, UnitName};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::listed::Listed;

use fleet_wire::paths::{JOURNAL, JOURNAL_HEARTBEAT, JOURNAL_MACHINE_HEADER, STATUS};
use fleet_wire::schema::{
    wire_options, ErrorBody, Journal, Machine, MachinePage, MetadataOp, Unit, UnitPage, UnitState,
    UnitStatePage, UnitStatusText,
};
use fleet_wire::token::PageToken;

mod access;
mod audit;
mod local;
mod machines;
mod metrics;
mod related;
mod snapshots;
mod states;
mod units;

use local::*;
use machines::*;
use metrics::*;
use related::*;
use snapshots::*;
use states::*;
use units::*;

pub use access::{Caller, Peer, Role, Token, Tokens};
use audit::{audited, method_text, Change};
pub use audit::{AuditRecord, AuditSink};

/// The discovery document: this API's schema in Google's discovery format, as fleet served its
/// own (written for this implementation).
const DISCOVERY: &str = include_str!("discovery.json");

/// The largest request body accepted (a unit file is at most a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// A request's body must have arrived within this long (a client that trickles or stops
/// half-way must not hold a connection and its buffer).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct ApiState {
    pub registry: Registry,
    pub token_limit: u16,
    pub version: String,
    /// Unit files by hash: immutable, so never stale (see `unit_file` for how it is bounded).
    units: Mutex<BTreeMap<UnitHash, UnitFile>>,
    /// Requests answered, by method and status (for /metrics).
    requests: std::sync::Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// The registry as a background watch keeps it, started by the first request that reads:
    /// what the API answers from, so that a request does not read the whole registry (fleetctl
    /// reads a unit after every write it makes; a registry read each time made starting 1,000
    /// units quadratic).
    reflector: tokio::sync::OnceCell<Reflector>,
    /// The last snapshot listed and when it was last known current. It is reused while the
    /// registry's revision has not moved: fleetctl reads a listing of 10,000 units as 100
    /// pages, and each page would otherwise sort every unit again.
    last_snapshot: std::sync::Mutex<Option<(Arc<Listed>, Instant)>>,
    /// This machine's units, for `GET /fleet-rs/v1/journal/<name>` and `.../status/<name>`
    /// (ours).
    local: Option<Arc<dyn LocalUnits>>,
    /// Turns true when fleetd stops: followed journals end then, rather than holding up the
    /// listeners' graceful shutdown for as long as a client follows.
    stopping: tokio::sync::watch::Receiver<bool>,
}

/// What the fleetd serving the API can tell of the units its own machine runs.
#[async_trait::async_trait]
pub trait LocalUnits: Send + Sync {
    /// The machine whose units these are.
    fn machine(&self) -> String;
    /// The last `lines` lines of `unit`'s log, oldest first; `None` if it has none here.
    async fn lines(&self, unit: &UnitName, lines: usize) -> Option<Vec<String>>;
    /// The records `unit` writes from now on, until the receiver is dropped.
    async fn follow(&self, unit: &UnitName) -> Option<tokio::sync::mpsc::Receiver<String>>;
    /// What the init system says of `unit` (`systemctl status`) and its exit code; `Ok(None)`
    /// when it has no words of its own (the native supervisor).
    async fn status(&self, unit: &UnitName) -> Result<Option<(String, i32)>, String>;
    /// The unit's description as this machine reads it, when `status` has no words of its own.
    async fn description(&self, _unit: &UnitName) -> Option<String> {
        None
    }
    /// This machine's own metrics (Prometheus text: its health checks), appended to
    /// `/metrics`.
    fn metrics(&self) -> String {
        String::new()
    }
}

impl ApiState {
    pub fn new(registry: Registry, token_limit: u16, version: &str) -> Arc<ApiState> {
        // Never stopping: the sender goes at once, and a closed channel keeps its `false`.
        let (_, stopping) = tokio::sync::watch::channel(false);
        ApiState::serving(registry, token_limit, version, None, stopping)
    }

    /// The same, serving the logs and status of this machine's units too, until `stopping`
    /// turns true.
    pub fn with_local_units(
        registry: Registry,
        token_limit: u16,
        version: &str,
        local: Arc<dyn LocalUnits>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<ApiState> {
        ApiState::serving(registry, token_limit, version, Some(local), stopping)
    }

    fn serving(
        registry: Registry,
        token_limit: u16,
        version: &str,
        local: Option<Arc<dyn LocalUnits>>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            registry,
            token_limit,
            version: version.to_owned(),
            units: Mutex::new(BTreeMap::new()),
            requests: std::sync::Mutex::new(BTreeMap::new()),
            reflector: tokio::sync::OnceCell::new(),
            last_snapshot: std::sync::Mutex::new(None),
            local,
            stopping,
        })
    }
}

/// The router serving API v1 with `state`, to anyone who can reach it (a unix socket, whose
/// file mode is the access control), unaudited.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    router_with_access(state, Access::default())
}

/// Who a listener lets in, and where what they do is recorded.
#[derive(Clone, Default)]
pub struct Access {
    /// When set, only bearers of one of these tokens, each with its role.
    pub tokens: Option<Arc<Tokens>>,
    pub audit: Option<Arc<dyn AuditSink>>,
}

/// The router serving API v1 with `state` to the callers `access` lets in.
pub fn router_with_access(state: Arc<ApiState>, access: Access) -> axum::Router {
    let served = Served { api: state, access };
    axum::Router::new().fallback(handle).with_state(served)
}

#[derive(Clone)]
struct Served {
    api: Arc<ApiState>,
    access: Access,
}

/// An answer: status and, for errors and documents, a body (JSON unless `content_type` says).
struct Answer {
    status: StatusCode,
    body: Option<Vec<u8>>,
    content_type: &'static str,
    /// What the request changed, for the audit.
    change: Option<String>,
    /// What it did to related units: a `fleet-related` header each.
    related: Vec<String>,
}

impl Answer {
    fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
        Answer {
            status,
            body: Some(serde_json::to_vec(value).expect("schema types serialize")),
            content_type: "application/json",
            change: None,
            related: Vec::new(),
        }
    }

    fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer::json(status, &ErrorBody::new(status.as_u16(), message))
    }

    fn empty(status: StatusCode) -> Answer {
        Answer {
            status,
            body: None,
            content_type: "application/json",
            change: None,
            related: Vec::new(),
        }
    }

    /// A 200 answer of `body`, of type `content_type`.
    fn document(content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: Some(body),
            content_type,
            change: None,
            related: Vec::new(),
        }
    }

    /// The same answer, telling the audit what the request changed.
    fn changed(mut self, change: String) -> Answer {
        self.change = Some(change);
        self
    }

    /// The same answer, telling what the change did to related units (in the audit too).
    fn related(mut self, related: Vec<String>) -> Answer {
        if !related.is_empty() {
            let said = related.join("; ");
            self.change = Some(match self.change.take() {
                Some(change) => format!("{change}; {said}"),
                None => said,
            });
        }
        self.related = related;
        self
    }

    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone().unwrap_or_default()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if self.body.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        for line in &self.related {
            if let Ok(value) = HeaderValue::from_str(line) {
                headers.append(fleet_wire::paths::RELATED_HEADER, value);
            }
        }
        if let Some(change) = self.change {
            response.extensions_mut().insert(Change(change));
        }
        response
    }

    fn unavailable(error: &RegistryError) -> Answer {
        tracing::warn!(%error, "api: registry unreachable");
        // fleet's words for a registry it cannot reach; a local file that cannot be written
        // (a full disk) says so, with the file and the reason.
        let message = match error {
            RegistryError::WriteFailed { .. } => {
                format!("fleet server unable to write its registry: {error}")
            }
            RegistryError::WentBackwards(why) => {
                format!("fleet server refuses its registry: {why}")
            }
            _ => "fleet server unable to communicate with etcd".to_owned(),
        };
        Answer::error(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

async fn handle(State(served): State<Served>, request: Request) -> Response {
    let state = served.api;
    let method = metric_method(request.method());
    let peer = request.extensions().get::<Peer>().cloned();
    let caller = access::caller(&request, served.access.tokens.as_deref(), peer.as_ref());
    let (verb, path) = (request.method().clone(), request.uri().path().to_owned());
    let mut response = match path.as_str() {
        _ if caller.is_none() => {
            Answer::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
        }
        _ if caller.as_ref().is_some_and(|c| !c.role.allows(&verb)) => {
            let who = caller.as_ref().map_or("", |c| c.who.as_str());
            let message = format!(
                "{who} has the role read: it may list, get, watch and read logs, not change anything"
            );
            Answer::error(StatusCode::FORBIDDEN, message).into_response()
        }
        other
            if (other == "/metrics" || other.starts_with(JOURNAL) || other.starts_with(STATUS))
                && !(verb == Method::GET || verb == Method::HEAD) =>
        {
            Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET supported against this resource",
            )
            .into_response()
        }
        "/metrics" => metrics(&state).await.into_response(),
        other if other.starts_with(JOURNAL) => {
            let query = request.uri().query().unwrap_or("");
            journal(&state, &other[JOURNAL.len()..], query)
                .await
                .unwrap_or_else(Answer::into_response)
        }
        other if other.starts_with(STATUS) => {
            let query = request.uri().query().unwrap_or("");
            status(&state, &other[STATUS.len()..], query)
                .await
                .unwrap_or_else(|refused| refused)
                .into_response()
        }
        _ => route(&state, request)
            .await
            .unwrap_or_else(|refused| refused)
            .into_response(),
    };
    let status = response.status().as_u16();
    if let Ok(mut requests) = state.requests.lock() {
        *requests.entry((method, status)).or_default() += 1;
    }
    let change = response.extensions_mut().remove::<Change>().map(|c| c.0);
    if let Some(audit) = served
        .access
        .audit
        .as_ref()
        .filter(|_| audited(&verb, status))
    {
        audit.record(&AuditRecord {
            who: caller
                .as_ref()
                .map_or("unauthenticated".into(), |c| c.who.clone()),
            role: caller.as_ref().map(|c| c.role.as_str()),
            peer: peer.map(|p| p.to_string()),
            method: method_text(&verb),
            path,
            status,
            change,
        });
    }
    if let Ok(server) = HeaderValue::from_str(&format!("fleetd/{}", state.version)) {
        response.headers_mut().insert(header::SERVER, server);
    }
    response
}

/// What a handler answers: `Err` carries an error answer so handlers can use `?`; both sides
/// go out the same way.
type Reply = Result<Answer, Answer>;

impl From<RegistryError> for Answer {
    fn from(error: RegistryError) -> Answer {
        Answer::unavailable(&error)
    }
}

fn not_allowed(message: &str) -> Reply {
    Err(Answer::error(StatusCode::METHOD_NOT_ALLOWED, message))
}

fn not_found() -> Reply {
    Err(Answer::error(StatusCode::NOT_FOUND, ""))
}

async fn route(state: &ApiState, request: Request) -> Reply {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(rest) = path
        .strip_prefix("/fleet/v1/")
        .or_else(|| path.strip_prefix("/v1-alpha/"))
    else {
        return not_found();
    };
    let method = request.method().clone();
    let only_get = "only GET supported against this resource";
    match rest.split_once('/') {
        None => match (rest, method) {
            ("units", Method::GET) => list_units(state, &query).await,
            ("units", _) => not_allowed(only_get),
            ("state", Method::GET) => list_states(state, &query).await,
            ("state", _) => not_allowed(only_get),
            ("discovery", Method::GET) => Ok(Answer::document(
                "application/json",
                DISCOVERY.as_bytes().to_vec(),
            )),
            ("discovery", _) => Err(bad_request("only HTTP GET supported against this resource")),
            ("machines", Method::GET) => list_machines(state, &query).await,
            ("machines", Method::PATCH) => patch_machines(state, request).await,
            ("machines", _) => not_allowed("only GET and PATCH supported against this resource"),
            _ => not_found(),
        },
        Some((collection, item)) => {
            let Some(name) = percent_decode(item).filter(|n| !n.is_empty() && !n.contains('/'))
            else {
                return not_found();
            };
            match (collection, method) {
                ("units", Method::GET) => get_unit(state, &name).await,
                ("units", Method::PUT) => put_unit(state, &name, request).await,
                ("units", Method::DELETE) => delete_unit(state, &name).await,
                ("units", _) => {
                    not_allowed("only GET, PUT and DELETE supported against this resource")
                }
                ("state", Method::GET) => get_state(state, &name).await,
                ("state", _) => not_allowed(only_get),
                _ => not_found(),
            }
        }
    }
}

/// `%XX` decoding of one path segment; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The values of one query parameter.
fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| *key == name)
        .filter_map(|(_, value)| percent_decode(&value.replace('+', " ")))
        .collect()
}

/// A request's method as a metrics label: the methods HTTP defines, and `other` for any
/// other name, so that a client inventing methods cannot add series without end.
fn metric_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::PUT, "PUT"),
        (Method::POST, "POST"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

fn bad_request(message: impl Into<String>) -> Answer {
    Answer::error(StatusCode::BAD_REQUEST, message)
}
