//! `units`: list, get, put (create, set the desired state, replace) and delete.

use super::*;

use std::time::UNIX_EPOCH;

use fleet_registry::records::{MoveEntry, MovesRecord};
use fleet_unit::timestamp::rfc3339;
use fleet_wire::schema::UnitFailure;

/// A unit as the API shows it but for its options, with the hash of its file; `None` when it
/// does not exist. `placed` is where the schedule has it.
pub(super) fn unit_fields(
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
        match (placed, snapshot.reasons.get(name)) {
            (None, Some(reason)) => unit.unplaceable_reason = reason.reason.clone(),
            (Some(_), Some(reason)) => unit.waiting_for = reason.waiting_for.clone(),
            _ => {}
        }
    }
    unit.failures = failures(snapshot, name);
    if let Some(moves) = snapshot.moves.get(name) {
        if let (Some(due), Some(_)) = (moves.due_ms, placed) {
            let left = due.saturating_sub(fleet_registry::records::now_ms());
            if left > 0 {
                unit.rescheduling = format!("rescheduling in {}s", left.div_ceil(1000));
            }
        }
    }
    Some((unit, record.hash))
}

/// A unit's recent failures, oldest first: those the engine moved it for and those its
/// machines handled themselves, the last [`MovesRecord::KEPT`].
fn failures(snapshot: &Snapshot, name: &UnitName) -> Vec<UnitFailure> {
    let moved = snapshot.moves.get(name).map(|r| r.history.iter());
    let handled = snapshot
        .restarts
        .values()
        .filter_map(|units| units.get(name))
        .flat_map(|r| r.history.iter());
    let mut entries: Vec<&MoveEntry> = moved.into_iter().flatten().chain(handled).collect();
    entries.sort_by_key(|entry| entry.at_ms);
    let skip = entries.len().saturating_sub(MovesRecord::KEPT);
    entries
        .into_iter()
        .skip(skip)
        .map(|entry| UnitFailure {
            machine_id: entry.machine.clone(),
            time: rfc3339(UNIX_EPOCH + Duration::from_millis(entry.at_ms)),
            what: entry.what.clone(),
            action: entry.action.clone(),
        })
        .collect()
}

/// `unit` with the options of its file `hash`, in a registry of `units` units.
pub(super) async fn with_options(
    state: &ApiState,
    (mut unit, hash): (Unit, UnitHash),
    units: usize,
) -> Result<Unit, RegistryError> {
    unit.options = match unit_file(state, &hash, units).await {
        Ok(file) => file.map(|file| wire_options(&file)).unwrap_or_default(),
        // One unreadable record must not take the listing down: the unit is shown without
        // its options (the engine's reason says why).
        Err(RegistryError::Corrupt { key, reason }) => {
            tracing::warn!(
                unit = unit.name,
                key,
                reason,
                "api: a unit file in the registry cannot be read"
            );
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    Ok(unit)
}

/// A unit of a listing as the API shows it; `None` when it does not exist.
pub(super) async fn unit_view(
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
pub(super) fn current_state(
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

pub(super) fn unit_missing() -> Answer {
    Answer::error(StatusCode::NOT_FOUND, "unit does not exist")
}

pub(super) async fn list_units(state: &ApiState, query: &str) -> Reply {
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

pub(super) async fn get_unit(state: &ApiState, name: &str) -> Reply {
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

pub(super) async fn delete_unit(state: &ApiState, name: &str) -> Reply {
    let name = UnitName::new(name).map_err(|_| unit_missing())?;
    // What requires, binds to or is part of it stops (first: it is still there to tell).
    let related = match state.registry.job(&name).await? {
        Some((record, _)) => {
            let own = (record.hash, None);
            let change = (record.desired, JobState::Inactive);
            follow_relations(state, &name, own, change).await?
        }
        None => Vec::new(),
    };
    match state.registry.destroy_job(&name).await? {
        JobWrite::NotFound => Err(unit_missing()),
        _ => {
            let answer = Answer::empty(StatusCode::NO_CONTENT).changed(format!("destroyed {name}"));
            Ok(answer.related(related))
        }
    }
}

/// The one Content-Type a unit body must come with, or fleet's 415.
pub(super) fn require_json(request: &Request) -> Result<(), Answer> {
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
pub(super) async fn read_body(request: Request, empty: &str) -> Result<axum::body::Bytes, Answer> {
    let body = tokio::time::timeout(BODY_TIMEOUT, to_bytes(request.into_body(), MAX_BODY))
        .await
        .map_err(|_| {
            Answer::error(
                StatusCode::REQUEST_TIMEOUT,
                format!("unable to read body: not received within {BODY_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| bad_request(format!("unable to read body: {e}")))?;
    match body.iter().all(u8::is_ascii_whitespace) {
        true => Err(bad_request(empty)),
        false => Ok(body),
    }
}

pub(super) fn refuse_active_template(
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

pub(super) async fn put_unit(state: &ApiState, url_name: &str, request: Request) -> Reply {
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
        refuse_start_after_cycle(state, &name, &file).await?;
        // What it pulls in is there before it (its machine starts them together).
        let own = (file.hash(), Some(&file));
        let related = follow_relations(state, &name, own, (JobState::Inactive, desired)).await?;
        return match state.registry.create_job(&name, &file, desired).await? {
            JobWrite::Done => {
                let answer = Answer::empty(StatusCode::CREATED).changed(format!(
                    "created {name} (unit file {}), desired state {desired}",
                    file.hash()
                ));
                Ok(answer.related(related))
            }
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
            refuse_start_after_cycle(state, &name, &file).await?;
            let own = (file.hash(), Some(&file));
            let change = (record.desired, desired);
            let related = follow_relations(state, &name, own, change).await?;
            state.registry.replace_job(&name, &file, desired).await?;
            let answer = Answer::empty(StatusCode::CREATED).changed(format!(
                "replaced {name} (unit file {} was {}), desired state {desired}",
                file.hash(),
                record.hash
            ));
            return Ok(answer.related(related));
        }
    }
    let Some(desired) = desired else {
        return Err(Answer::error(
            StatusCode::CONFLICT,
            "must provide DesiredState to update existing unit",
        ));
    };
    refuse_active_template(&name, is_template, desired)?;
    let change = (record.desired, desired);
    let related = follow_relations(state, &name, (record.hash, None), change).await?;
    state.registry.set_desired(&name, desired).await?;
    let answer =
        Answer::empty(StatusCode::NO_CONTENT).changed(format!("{name} desired state {desired}"));
    Ok(answer.related(related))
}

/// A request body as a unit: a JSON object (or null, as Go's decoder allowed); anything else
/// is refused with Go's wording.
pub(super) fn decode_unit(body: &[u8]) -> Result<Unit, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
                ..StateRecord::default()
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
