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

/// The discovery document: this API's schema in Google's discovery format, as fleet served its
/// own (written for this implementation).
const DISCOVERY: &str = include_str!("discovery.json");

/// The largest request body accepted (a unit file is at most a few KiB).
const MAX_BODY: usize = 1024 * 1024;

pub struct ApiState {
    pub registry: Registry,
    pub token_limit: u16,
    pub version: String,
    /// Unit files by hash: immutable, so never stale (see `unit_file` for how it is bounded).
    units: Mutex<BTreeMap<UnitHash, UnitFile>>,
    /// Requests answered, by method and status (for /metrics).
    requests: std::sync::Mutex<BTreeMap<(String, u16), u64>>,
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
/// file mode is the access control).
pub fn router(state: Arc<ApiState>) -> axum::Router {
    router_with_token(state, None)
}

/// The router serving API v1 to clients presenting `Authorization: Bearer <token>` when a token
/// is given.
pub fn router_with_token(state: Arc<ApiState>, token: Option<String>) -> axum::Router {
    let served = Served {
        api: state,
        token: token.map(Arc::new),
    };
    axum::Router::new().fallback(handle).with_state(served)
}

#[derive(Clone)]
struct Served {
    api: Arc<ApiState>,
    token: Option<Arc<String>>,
}

/// Whether `request` carries the bearer token (compared in constant time).
fn authorized(request: &Request, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// An answer: status and, for errors and documents, a body (JSON unless `content_type` says).
struct Answer {
    status: StatusCode,
    body: Option<Vec<u8>>,
    content_type: &'static str,
}

impl Answer {
    fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
        Answer {
            status,
            body: Some(serde_json::to_vec(value).expect("schema types serialize")),
            content_type: "application/json",
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
        }
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
        response
    }

    fn unavailable(error: &RegistryError) -> Answer {
        tracing::warn!(%error, "api: registry unreachable");
        Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet server unable to communicate with etcd",
        )
    }
}

async fn handle(State(served): State<Served>, request: Request) -> Response {
    let state = served.api;
    let method = request.method().to_string();
    let refused = served
        .token
        .as_ref()
        .is_some_and(|t| !authorized(&request, t));
    let path = request.uri().path().to_owned();
    let mut response = match path.as_str() {
        _ if refused => {
            Answer::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
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
    if let Ok(mut requests) = state.requests.lock() {
        *requests
            .entry((method, response.status().as_u16()))
            .or_default() += 1;
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
            ("discovery", Method::GET) => Ok(Answer {
                status: StatusCode::OK,
                body: Some(DISCOVERY.as_bytes().to_vec()),
                content_type: "application/json",
            }),
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

/// The page a list call asks for, or fleet's 400.
fn page(state: &ApiState, query: &str) -> Result<PageToken, Answer> {
    let tokens = query_values(query, "nextPageToken");
    match tokens.as_slice() {
        [] => Ok(PageToken::first(state.token_limit)),
        [token] => PageToken::decode(token, state.token_limit).map_err(bad_request),
        _ => Err(bad_request("too many values for page token")),
    }
}

/// The items of `page`, and the token of the next page if there is one.
fn slice<T: Clone>(items: &[T], page: PageToken) -> (Vec<T>, String) {
    let limit = usize::from(page.limit);
    let start = (usize::from(page.page) - 1).saturating_mul(limit);
    let end = start.saturating_add(limit).min(items.len());
    let chosen = items.get(start..end).map(<[T]>::to_vec).unwrap_or_default();
    let next = match end < items.len() {
        true => page.next().encode(),
        false => String::new(),
    };
    (chosen, next)
}

/// How long after a listing's first page its next pages are cut from the same snapshot.
const PAGES_OF_ONE_SNAPSHOT: Duration = Duration::from_secs(1);

/// What every list call starts with: the page asked for, and the registry's snapshot. The
/// first page reads the registry as it is now; the pages after it, asked for right after,
/// come from the same snapshot without asking the registry again, so a listing read page by
/// page is one consistent view (fleet read each page afresh and could skip or repeat items).
async fn listing(state: &ApiState, query: &str) -> Result<(PageToken, Arc<Listed>), Answer> {
    let page = page(state, query)?;
    if page.page > 1 {
        let recent = last_snapshot(state).filter(|(_, at)| at.elapsed() < PAGES_OF_ONE_SNAPSHOT);
        if let Some((listed, _)) = recent {
            return Ok((page, listed));
        }
    }
    Ok((page, snapshot(state).await?))
}

fn last_snapshot(state: &ApiState) -> Option<(Arc<Listed>, Instant)> {
    state
        .last_snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// How long a read waits for the writes this fleetd made (its API, engine and agent) to reach
/// its reflector before it reads the registry itself instead: a read always sees them.
const OWN_WRITES: Duration = Duration::from_secs(2);

/// How long a read waits for the reflector to reach the registry's revision, for writes made
/// elsewhere (other machines' fleetds, which arrive within the watch's latency). In an etcd
/// shared with other programs their writes move the revision too and never arrive: then the
/// read is answered after this wait from what the watch has delivered.
const OTHER_WRITES: Duration = Duration::from_millis(20);

/// The reflector, once it has caught up with what a read must see; `None` when it cannot be
/// had or lags (the caller reads the registry itself). Asks the registry its revision first,
/// so that an unreachable registry is the error it is for every read, never a stale answer.
async fn reflected(state: &ApiState) -> Result<Option<&Reflector>, Answer> {
    let now = state.registry.revision().await?;
    let started = state
        .reflector
        .get_or_try_init(|| state.registry.reflect(Scope::All))
        .await;
    let reflector = match started {
        Ok(reflector) => reflector,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the registry; reading it for each request");
            return Ok(None);
        }
    };
    // Re-listing after a broken watch: the registry answers again (it just did), so it is
    // read directly rather than waited for.
    if !reflector.is_following() {
        return Ok(None);
    }
    let written = state.registry.written();
    if !reflector.caught_up(written, OWN_WRITES).await {
        tracing::warn!(
            written,
            reflected = reflector.revision(),
            "the registry watch lags this fleetd's own writes; reading the registry"
        );
        return Ok(None);
    }
    reflector.caught_up(now, OTHER_WRITES).await;
    Ok(Some(reflector))
}

/// `read` of the registry now: in place in the reflector (no snapshot held, no listing built),
/// or of the registry's own snapshot when the reflector cannot serve.
async fn read_now<T>(state: &ApiState, read: impl FnOnce(&Snapshot) -> T) -> Result<T, Answer> {
    Ok(match reflected(state).await? {
        Some(reflector) => reflector.read(read),
        None => read(&state.registry.snapshot(&Scope::All).await?),
    })
}

/// The registry now, with its listings: the last listed snapshot if nothing was written
/// since, else the reflector's (or the registry's own when the reflector cannot serve).
async fn snapshot(state: &ApiState) -> Result<Arc<Listed>, Answer> {
    let current = match reflected(state).await? {
        Some(reflector) => reflector.snapshot(),
        None => Arc::new(state.registry.snapshot(&Scope::All).await?),
    };
    let listed =
        match last_snapshot(state).filter(|(cached, _)| cached.revision == current.revision) {
            Some((cached, _)) => cached,
            None => Arc::new(Listed::new(current)),
        };
    *state
        .last_snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((listed.clone(), Instant::now()));
    Ok(listed)
}

/// The unit file of `hash`, from the cache or the registry. Files are immutable, so a cached one
/// is never stale; the cache only has to forget files no unit uses any more: it starts over
/// whenever it holds twice as many as the registry's `units`.
async fn unit_file(
    state: &ApiState,
    hash: &UnitHash,
    units: usize,
) -> Result<Option<UnitFile>, RegistryError> {
    if let Some(unit) = state.units.lock().await.get(hash) {
        return Ok(Some(unit.clone()));
    }
    let unit = state.registry.unit_file(hash).await?;
    if let Some(unit) = &unit {
        let mut cache = state.units.lock().await;
        if cache.len() >= 2 * units + 64 {
            cache.clear();
        }
        cache.insert(*hash, unit.clone());
    }
    Ok(unit)
}

/// A unit as the API shows it but for its options, with the hash of its file; `None` when it
/// does not exist. `placed` is where the schedule has it.
fn unit_fields(
    snapshot: &Snapshot,
    name: &UnitName,
    placed: Option<&MachineId>,
) -> Option<(Unit, UnitHash)> {
    let (record, global) = match (snapshot.jobs.get(name), snapshot.global.get(name)) {
        (Some(record), _) => (record, false),
        (None, Some(record)) => (record, true),
        (None, None) => return None,
    };
    let mut unit = Unit {
        desired_state: record.desired.as_str().to_owned(),
        name: name.to_string(),
        ..Unit::default()
    };
    if !global {
        unit.current_state = current_state(snapshot, name, &record.hash, placed)
            .as_str()
            .to_owned();
        unit.machine_id = placed.map(|m| m.to_string()).unwrap_or_default();
        if placed.is_none() {
            if let Some(reason) = snapshot.reasons.get(name) {
                unit.unplaceable_reason = reason.reason.clone();
            }
        }
    }
    Some((unit, record.hash))
}

/// `unit` with the options of its file `hash`, in a registry of `units` units.
async fn with_options(
    state: &ApiState,
    (mut unit, hash): (Unit, UnitHash),
    units: usize,
) -> Result<Unit, RegistryError> {
    unit.options = unit_file(state, &hash, units)
        .await?
        .map(|file| wire_options(&file))
        .unwrap_or_default();
    Ok(unit)
}

/// A unit of a listing as the API shows it; `None` when it does not exist.
async fn unit_view(
    state: &ApiState,
    listed: &Listed,
    name: &UnitName,
) -> Result<Option<Unit>, RegistryError> {
    let Some(fields) = unit_fields(listed, name, listed.placed_on(name).next()) else {
        return Ok(None);
    };
    let units = listed.jobs.len() + listed.global.len();
    with_options(state, fields, units).await.map(Some)
}

/// fleet's currentState (`determineJobState`): inactive until placed and reported by the
/// machine it is placed on (`placed`); loaded once that machine's agent reports it (it has
/// loaded it, or says why it could not); launched once the agent has started the current
/// version of it (whatever became of it since: failed, exited).
fn current_state(
    snapshot: &Snapshot,
    name: &UnitName,
    hash: &UnitHash,
    placed: Option<&MachineId>,
) -> JobState {
    let Some(machine) = placed else {
        return JobState::Inactive;
    };
    let (Some(placed), Some(reported)) = (
        snapshot.placed(name, machine),
        snapshot.state(name, machine),
    ) else {
        return JobState::Inactive;
    };
    let launched = reported.hash.as_ref() == Some(hash) && reported.launched;
    match placed.desired == JobState::Launched && launched {
        true => JobState::Launched,
        false => JobState::Loaded,
    }
}

fn bad_request(message: impl Into<String>) -> Answer {
    Answer::error(StatusCode::BAD_REQUEST, message)
}

fn unit_missing() -> Answer {
    Answer::error(StatusCode::NOT_FOUND, "unit does not exist")
}

async fn list_units(state: &ApiState, query: &str) -> Reply {
    let (page, listed) = listing(state, query).await?;
    let (chosen, next) = slice(listed.units(), page);
    let mut units = Vec::with_capacity(chosen.len());
    for name in &chosen {
        units.extend(unit_view(state, &listed, name).await?);
    }
    Ok(Answer::json(
        StatusCode::OK,
        &UnitPage {
            next_page_token: next,
            units,
        },
    ))
}

async fn get_unit(state: &ApiState, name: &str) -> Reply {
    let name = UnitName::new(name).map_err(|_| unit_missing())?;
    let (fields, units) = read_now(state, |snapshot| {
        let placed = snapshot.placements(&name).next();
        let fields = unit_fields(snapshot, &name, placed);
        (fields, snapshot.jobs.len() + snapshot.global.len())
    })
    .await?;
    let unit = with_options(state, fields.ok_or_else(unit_missing)?, units).await?;
    Ok(Answer::json(StatusCode::OK, &unit))
}

async fn delete_unit(state: &ApiState, name: &str) -> Reply {
    let name = UnitName::new(name).map_err(|_| unit_missing())?;
    match state.registry.destroy_job(&name).await? {
        JobWrite::NotFound => Err(unit_missing()),
        _ => Ok(Answer::empty(StatusCode::NO_CONTENT)),
    }
}

/// The one Content-Type a unit body must come with, or fleet's 415.
fn require_json(request: &Request) -> Result<(), Answer> {
    let content_types: Vec<&HeaderValue> = request
        .headers()
        .get_all(header::CONTENT_TYPE)
        .iter()
        .collect();
    let unsupported = |message: String| Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message);
    let [content_type] = content_types.as_slice() else {
        return Err(unsupported(format!(
            "expected 1 Content-Type, got {}",
            content_types.len()
        )));
    };
    let media = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    match media.eq_ignore_ascii_case("application/json") {
        true => Ok(()),
        false => Err(unsupported(
            "only acceptable Content-Type is application/json".to_owned(),
        )),
    }
}

/// A request body, refusing an empty one with `empty` (fleet's wording differs by resource).
async fn read_body(request: Request, empty: &str) -> Result<axum::body::Bytes, Answer> {
    let body = to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| bad_request(format!("unable to read body: {e}")))?;
    match body.iter().all(u8::is_ascii_whitespace) {
        true => Err(bad_request(empty)),
        false => Ok(body),
    }
}

fn refuse_active_template(
    name: &UnitName,
    is_template: bool,
    desired: JobState,
) -> Result<(), Answer> {
    match is_template && desired != JobState::Inactive {
        true => Err(bad_request(format!(
            "cannot activate template {:?}",
            name.as_str()
        ))),
        false => Ok(()),
    }
}

async fn put_unit(state: &ApiState, url_name: &str, request: Request) -> Reply {
    require_json(&request)?;
    let body = read_body(request, "unable to decode body: EOF").await?;
    let unit =
        decode_unit(&body).map_err(|why| bad_request(format!("unable to decode body: {why}")))?;
    if !unit.name.is_empty() && unit.name != url_name {
        return Err(bad_request(format!(
            "name in URL {url_name:?} differs from unit name in request body {:?}",
            unit.name
        )));
    }
    let name = UnitName::new(url_name).map_err(|e| bad_request(e.to_string()))?;
    let desired = match unit.desired_state.as_str() {
        "" => None,
        text => Some(
            text.parse::<JobState>()
                .map_err(|e| bad_request(e.to_string()))?,
        ),
    };
    let existing = state.registry.job(&name).await?;
    let options: Vec<fleet_unit::UnitOption> = unit.options.iter().map(Into::into).collect();
    let is_template = NameInfo::parse(name.as_str()).is_some_and(|i| i.is_template());
    let validate = |options| validate_options(options).map_err(|e| bad_request(e.to_string()));
    let Some((record, _)) = existing else {
        if options.is_empty() {
            return Err(Answer::error(
                StatusCode::CONFLICT,
                "unit does not exist and options field empty",
            ));
        }
        let file = validate(options)?;
        let desired = desired.unwrap_or(JobState::Inactive);
        refuse_active_template(&name, is_template, desired)?;
        return match state.registry.create_job(&name, &file, desired).await? {
            JobWrite::Done => Ok(Answer::empty(StatusCode::CREATED)),
            _ => Err(Answer::error(
                StatusCode::CONFLICT,
                "unit was created concurrently",
            )),
        };
    };
    if !options.is_empty() {
        let file = validate(options)?;
        if file.hash() != record.hash {
            // New contents replace the unit, which starts over as inactive unless a state was
            // given too.
            let desired = desired.unwrap_or(JobState::Inactive);
            refuse_active_template(&name, is_template, desired)?;
            state.registry.replace_job(&name, &file, desired).await?;
            return Ok(Answer::empty(StatusCode::CREATED));
        }
    }
    let Some(desired) = desired else {
        return Err(Answer::error(
            StatusCode::CONFLICT,
            "must provide DesiredState to update existing unit",
        ));
    };
    refuse_active_template(&name, is_template, desired)?;
    state.registry.set_desired(&name, desired).await?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// A request body as a unit: a JSON object (or null, as Go's decoder allowed); anything else
/// is refused with Go's wording.
fn decode_unit(body: &[u8]) -> Result<Unit, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let kind = match &value {
        serde_json::Value::Object(_) | serde_json::Value::Null => None,
        serde_json::Value::Array(_) => Some("array"),
        serde_json::Value::String(_) => Some("string"),
        serde_json::Value::Number(_) => Some("number"),
        serde_json::Value::Bool(_) => Some("bool"),
    };
    if let Some(kind) = kind {
        return Err(format!(
            "json: cannot unmarshal {kind} into Go value of type schema.Unit"
        ));
    }
    match value {
        serde_json::Value::Null => Ok(Unit::default()),
        value => serde_json::from_value(value).map_err(|e| e.to_string()),
    }
}

fn state_view(listed: &Listed, (name, machine): &(UnitName, MachineId)) -> Option<UnitState> {
    let s = listed.state(name, machine)?;
    Some(UnitState {
        hash: s.hash.map(|h| h.to_string()).unwrap_or_default(),
        machine_id: machine.to_string(),
        name: name.to_string(),
        systemd_active_state: s.active.clone(),
        systemd_load_state: s.load.clone(),
        systemd_sub_state: s.sub.clone(),
        reason: s.reason.clone(),
    })
}

async fn list_states(state: &ApiState, query: &str) -> Reply {
    let (page, listed) = listing(state, query).await?;
    let units = query_values(query, "unitName");
    let machines = query_values(query, "machineID");
    let kept: Vec<&(UnitName, MachineId)> = listed
        .states()
        .iter()
        .filter(|(unit, machine)| {
            (units.is_empty() || units.iter().any(|u| u == unit.as_str()))
                && (machines.is_empty() || machines.iter().any(|m| m == machine.as_str()))
        })
        .collect();
    let (chosen, next) = slice(&kept, page);
    let states: Vec<UnitState> = chosen
        .into_iter()
        .filter_map(|state| state_view(&listed, state))
        .collect();
    Ok(Answer::json(
        StatusCode::OK,
        &UnitStatePage {
            next_page_token: next,
            states,
        },
    ))
}

async fn get_state(state: &ApiState, name: &str) -> Reply {
    let listed = snapshot(state).await?;
    let ordered = listed.states();
    let first = ordered.partition_point(|(unit, _)| unit.as_str() < name);
    let found = ordered
        .get(first)
        .filter(|(unit, _)| unit.as_str() == name)
        .and_then(|state| state_view(&listed, state))
        .ok_or_else(|| Answer::error(StatusCode::NOT_FOUND, "unit state does not exist"))?;
    Ok(Answer::json(StatusCode::OK, &found))
}

async fn list_machines(state: &ApiState, query: &str) -> Reply {
    let (page, snapshot) = listing(state, query).await?;
    let machines: Vec<Machine> = snapshot
        .machines
        .iter()
        .map(|(id, record)| Machine {
            id: id.to_string(),
            metadata: snapshot.machine_metadata(id),
            primary_ip: record.public_ip.clone(),
        })
        .collect();
    let (machines, next) = slice(&machines, page);
    Ok(Answer::json(
        StatusCode::OK,
        &MachinePage {
            machines,
            next_page_token: next,
        },
    ))
}

/// Dynamic machine metadata: every change is checked before any is applied.
async fn patch_machines(state: &ApiState, request: Request) -> Reply {
    let body = read_body(request, "EOF").await?;
    let ops: Vec<MetadataOp> =
        serde_json::from_slice(&body).map_err(|e| bad_request(e.to_string()))?;
    let mut changes = Vec::with_capacity(ops.len());
    for op in &ops {
        if !matches!(op.op.as_str(), "add" | "remove" | "replace") {
            return Err(bad_request("invalid op: expect add, remove, or replace"));
        }
        let target = op
            .path
            .strip_prefix('/')
            .and_then(|p| p.split_once("/metadata/"))
            .filter(|(_, key)| fleet_registry::keys::validate_metadata_key(key).is_ok())
            .and_then(|(machine, key)| {
                Some((fleet_unit::MachineId::new(machine).ok()?, key.to_owned()))
            });
        let Some((machine, key)) = target else {
            return Err(bad_request("machine metadata path invalid"));
        };
        let value = match &op.value {
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(serde_json::Value::Object(o)) => o
                .get("value")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        if op.op != "remove" && value.is_empty() {
            return Err(bad_request(
                "invalid value: add and replace require a value",
            ));
        }
        changes.push((machine, key, (op.op != "remove").then_some(value)));
    }
    // Metadata of a machine that is not in the cluster would wait there for a fleetd that
    // may never come: the caller has the machine ID wrong (fleet 1.0 wrote it and said 204).
    let unknown = read_now(state, |snapshot| {
        changes
            .iter()
            .map(|(machine, _, _)| machine)
            .find(|machine| !snapshot.machines.contains_key(*machine))
            .cloned()
    })
    .await?;
    if let Some(unknown) = unknown {
        return Err(Answer::error(
            StatusCode::NOT_FOUND,
            format!("machine {unknown} does not exist"),
        ));
    }
    // All of them or none.
    state.registry.set_metadata_all(&changes).await?;
    Ok(Answer::empty(StatusCode::NO_CONTENT))
}

/// Prometheus text exposition: API requests, and the cluster as the registry sees it.
async fn metrics(state: &ApiState) -> Answer {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "# HELP fleet_build_info The version of this fleetd.");
    let _ = writeln!(text, "# TYPE fleet_build_info gauge");
    let _ = writeln!(text, "fleet_build_info{{version=\"{}\"}} 1", state.version);
    let _ = writeln!(
        text,
        "# HELP fleet_api_requests_total API requests answered, by method and status."
    );
    let _ = writeln!(text, "# TYPE fleet_api_requests_total counter");
    if let Ok(requests) = state.requests.lock() {
        for ((method, status), count) in requests.iter() {
            let _ = writeln!(
                text,
                "fleet_api_requests_total{{method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
    }
    if let Ok(snapshot) = snapshot(state).await {
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        for name in snapshot.jobs.keys() {
            let record = &snapshot.jobs[name];
            *by_state
                .entry(
                    current_state(
                        &snapshot,
                        name,
                        &record.hash,
                        snapshot.placed_on(name).next(),
                    )
                    .as_str(),
                )
                .or_default() += 1;
        }
        let _ = writeln!(
            text,
            "# HELP fleet_units Non-global units by current state."
        );
        let _ = writeln!(text, "# TYPE fleet_units gauge");
        for current in ["inactive", "loaded", "launched"] {
            let count = by_state.get(current).copied().unwrap_or(0);
            let _ = writeln!(text, "fleet_units{{state=\"{current}\"}} {count}");
        }
        let gauges = [
            ("fleet_global_units", "Global units.", snapshot.global.len()),
            (
                "fleet_machines",
                "Machines present (live leases).",
                snapshot.machines.len(),
            ),
            (
                "fleet_unplaceable_units",
                "Units the engine cannot place (see their reasons).",
                snapshot.reasons.len(),
            ),
            (
                "fleet_registry_problems",
                "Registry records that cannot be read.",
                snapshot.problems.len(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} gauge");
            let _ = writeln!(text, "{name} {value}");
        }
        let _ = writeln!(
            text,
            "# HELP fleet_engine_leader Whether an engine leads (1) or none does (0)."
        );
        let _ = writeln!(text, "# TYPE fleet_engine_leader gauge");
        let _ = writeln!(
            text,
            "fleet_engine_leader {}",
            u8::from(snapshot.leader.is_some())
        );
    }
    Answer {
        status: StatusCode::OK,
        body: Some(text.into_bytes()),
        content_type: "text/plain; version=0.0.4",
    }
}

/// `GET /fleet-rs/v1/journal/<name>?lines=N[&machineID=M]`: JSON `{"machineID":..., "lines":[...]}`;
/// 404 when the unit is not known; 409 naming the machine when it runs elsewhere, or when this
/// fleetd is not machine `M`. With `follow=true`: the lines, then every new record as it is
/// written, as `text/plain` lines (see `JOURNAL_MACHINE_HEADER` and `JOURNAL_HEARTBEAT`).
async fn journal(state: &ApiState, name: &str, query: &str) -> Result<Response, Answer> {
    let (name, local, here) = local_unit(state, name, query).await?;
    let lines = query_values(query, "lines")
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10usize)
        .min(100_000);
    let no_log = || {
        Answer::error(
            StatusCode::NOT_FOUND,
            format!("unit {name} has no log on {here}"),
        )
    };
    let follow = query_values(query, "follow")
        .first()
        .is_some_and(|v| v == "true" || v == "1");
    // Following starts before the tail is read, so that no record falls between the two.
    let followed = match follow {
        true => Some(local.follow(&name).await.ok_or_else(no_log)?),
        false => None,
    };
    let lines = local.lines(&name, lines).await.ok_or_else(no_log)?;
    let Some(records) = followed else {
        return Ok(Answer::json(
            StatusCode::OK,
            &Journal {
                machine_id: here,
                lines,
            },
        )
        .into_response());
    };
    let mut response = Response::new(Body::from_stream(followed_lines(
        lines,
        records,
        state.stopping.clone(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(machine) = HeaderValue::from_str(&here) {
        headers.insert(JOURNAL_MACHINE_HEADER, machine);
    }
    Ok(response)
}

/// `GET /fleet-rs/v1/status/<name>[?machineID=M]`: JSON `{"machineID":..., "text":...,
/// "exitCode":...}`, `text` being `systemctl status` (null from the native supervisor: the
/// client lays the state out itself, with the `description` given beside it). 404 and 409 as
/// for the journal.
async fn status(state: &ApiState, name: &str, query: &str) -> Result<Answer, Answer> {
    let (name, local, here) = local_unit(state, name, query).await?;
    let (text, code) = match local.status(&name).await {
        Ok(Some((text, code))) => (Some(text), code),
        Ok(None) => (None, 0),
        Err(e) => {
            return Err(Answer::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("status of {name} on {here}: {e}"),
            ))
        }
    };
    let description = match text {
        None => local.description(&name).await,
        Some(_) => None,
    };
    Ok(Answer::json(
        StatusCode::OK,
        &UnitStatusText {
            machine_id: here,
            text,
            exit_code: code,
            description,
        },
    ))
}

/// The unit `name` (percent-encoded) when this fleetd's machine runs it, and that machine: 404
/// when the unit is not known, 409 naming the machine when it runs elsewhere or when this
/// fleetd is not the `machineID` the query asks for.
async fn local_unit(
    state: &ApiState,
    name: &str,
    query: &str,
) -> Result<(UnitName, Arc<dyn LocalUnits>, String), Answer> {
    let name = percent_decode(name)
        .and_then(|n| UnitName::new(n).ok())
        .ok_or_else(unit_missing)?;
    let snapshot = snapshot(state).await?;
    let Some(local) = &state.local else {
        return Err(Answer::error(
            StatusCode::NOT_FOUND,
            "this fleetd serves no units of its own",
        ));
    };
    let here = local.machine();
    if let Some(wanted) = query_values(query, "machineID").first() {
        if *wanted != here {
            return Err(Answer::error(
                StatusCode::CONFLICT,
                format!("this fleetd is machine {here}, not {wanted}"),
            ));
        }
    }
    let placed: Vec<String> = snapshot.placed_on(&name).map(|m| m.to_string()).collect();
    let global = snapshot.global.contains_key(&name);
    if !global && !snapshot.jobs.contains_key(&name) {
        return Err(unit_missing());
    }
    if !global && !placed.contains(&here) {
        return Err(Answer::error(
            StatusCode::CONFLICT,
            match placed.first() {
                None => format!("unit {name} is not placed on any machine"),
                Some(elsewhere) => {
                    format!("unit {name} runs on machine {elsewhere}, not on {here}")
                }
            },
        ));
    }
    Ok((name, Arc::clone(local), here))
}

/// The body of a followed journal: `first`, then each record from `records` as it comes, one
/// per line, with an empty line after every `JOURNAL_HEARTBEAT` of silence. It ends when the
/// log can no longer be followed or `stopping` turns true; the follower stops when the client
/// goes (the body is dropped).
fn followed_lines(
    first: Vec<String>,
    records: tokio::sync::mpsc::Receiver<String>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::convert::Infallible>> {
    let mut head = String::new();
    for line in first {
        head.push_str(&line);
        head.push('\n');
    }
    let head = futures_util::stream::iter([Ok(head.into_bytes())]);
    let tail = futures_util::stream::unfold(
        (records, stopping),
        |(mut records, mut stopping)| async move {
            let next = tokio::select! {
                next = tokio::time::timeout(JOURNAL_HEARTBEAT, records.recv()) => next,
                () = until_stopping(&mut stopping) => return None,
            };
            let next = match next {
                Ok(Some(record)) => format!("{record}\n"),
                Ok(None) => return None,
                Err(_) => "\n".to_owned(),
            };
            Some((Ok(next.into_bytes()), (records, stopping)))
        },
    );
    futures_util::StreamExt::chain(head, tail)
}

/// Until `stopping` turns true; never, when nobody can make it (the channel closed at `false`).
async fn until_stopping(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    if stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_registry::local::LocalStore;

    #[tokio::test]
    async fn the_unit_file_cache_forgets_files_no_unit_uses() {
        let registry = Registry::open(Arc::new(LocalStore::in_memory()))
            .await
            .unwrap();
        let state = ApiState::new(registry.clone(), 100, "test");
        let name = UnitName::new("churn.service").unwrap();
        for i in 0..300 {
            let text = format!("[Service]\nExecStart=/bin/sleep {i}\n");
            registry.destroy_job(&name).await.unwrap();
            registry
                .create_job(&name, &UnitFile::parse(&text).unwrap(), JobState::Inactive)
                .await
                .unwrap();
            let snapshot = Listed::new(registry.snapshot(&Scope::All).await.unwrap());
            let unit = unit_view(&state, &snapshot, &name).await.unwrap().unwrap();
            assert_eq!(unit.options[0].value, format!("/bin/sleep {i}"), "current");
        }
        let cached = state.units.lock().await.len();
        assert!(cached <= 2 + 64, "one unit in use, {cached} files cached");
    }
    /// currentState of a unit placed on a machine with `desired`, given what that machine
    /// reported of it: nothing, or (the same version?, started by the agent?).
    fn check(desired: JobState, reported: Option<(bool, bool)>, expected: JobState) {
        use fleet_registry::records::{JobRecord, StateRecord};
        let name = UnitName::new("a.service").unwrap();
        let unit = UnitFile::parse("[Service]\nExecStart=/bin/true\n").unwrap();
        let other = UnitFile::parse("[Service]\nExecStart=/bin/false\n").unwrap();
        let machine = MachineId::new("0123456789abcdef0123456789abcdef").unwrap();
        let mut snapshot = Snapshot::default();
        let record = JobRecord {
            hash: unit.hash(),
            desired,
        };
        snapshot.jobs.insert(name.clone(), record.clone());
        snapshot
            .schedule
            .entry(machine.clone())
            .or_default()
            .insert(name.clone(), record);
        if let Some((same, launched)) = reported {
            let hash = if same { unit.hash() } else { other.hash() };
            let state = StateRecord {
                hash: Some(hash),
                load: "loaded".into(),
                active: "active".into(),
                sub: "running".into(),
                launched,
                reason: String::new(),
            };
            snapshot
                .states
                .entry(machine)
                .or_default()
                .insert(name.clone(), state);
        }
        let placed = snapshot.placements(&name).next().cloned();
        assert_eq!(
            current_state(&snapshot, &name, &unit.hash(), placed.as_ref()),
            expected,
            "{desired:?} reported {reported:?}"
        );
    }

    #[test]
    fn current_state_is_what_the_units_machine_reported() {
        use JobState::*;
        // Placed, but its machine has said nothing of it yet (fleet's determineJobState).
        check(Launched, None, Inactive);
        check(Loaded, None, Inactive);
        check(Loaded, Some((true, false)), Loaded);
        check(Launched, Some((true, false)), Loaded);
        check(Launched, Some((true, true)), Launched);
        // Started, but an older version: the new one is not launched yet.
        check(Launched, Some((false, true)), Loaded);
        // Wanted loaded again: the agent has yet to stop it.
        check(Loaded, Some((true, true)), Loaded);
    }
}
