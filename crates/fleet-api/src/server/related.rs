//! What a change of a unit's desired state does to the fleet units related to it
//! ([`fleet_unit::relations::follow`]): what it requires or wants is pulled in (instances of
//! submitted templates created), what requires, binds to or is part of it stops with it. Done
//! after the change itself, one write per unit (each its own transaction: a crash between
//! them leaves units a later change of the unit follows up), and told in the answer's
//! `fleet-related` headers.

use super::*;

use fleet_unit::relations::{follow, related, start_after_cycle, Follow, PULLS_IN};
use fleet_unit::Requirements;

/// Applies what setting `name` (now of the file `hash`, or `file` when it is at hand) from
/// `before` (inactive when new) to `desired` asks of its relations; what was done, as the `fleet-related` headers say it.
pub(super) async fn follow_relations(
    state: &ApiState,
    name: &UnitName,
    (hash, file): (UnitHash, Option<&UnitFile>),
    (before, desired): (JobState, JobState),
) -> Result<Vec<String>, Answer> {
    // Only a launched unit going below launched stops others; only one wanted loaded or
    // more pulls others in, and only if it names some. Anything else asks nothing, without a
    // look at every unit (the common case: fleetctl creates each unit inactive first).
    let stops = before == JobState::Launched && desired < JobState::Launched;
    let pulls_nothing = |file: &UnitFile| {
        desired < JobState::Loaded || related(file, name.as_str(), PULLS_IN).is_empty()
    };
    if !stops && (desired < JobState::Loaded || file.is_some_and(pulls_nothing)) {
        return Ok(Vec::new());
    }
    let records: Vec<(UnitName, JobState, UnitHash)> = read_now(state, |snapshot| {
        snapshot
            .jobs
            .iter()
            .chain(snapshot.global.iter())
            .map(|(name, record)| (name.clone(), record.desired, record.hash))
            .collect()
    })
    .await?;
    let mut missing = Vec::new();
    {
        let cache = state.units.lock().await;
        for (_, _, hash) in &records {
            if !cache.contains_key(hash) {
                missing.push(*hash);
            }
        }
    }
    // A unit whose file cannot be read has no relations here (the engine's reason tells).
    let readable = |fetched: Result<Option<UnitFile>, RegistryError>| match fetched {
        Err(RegistryError::Corrupt { .. }) => Ok(None),
        other => other,
    };
    for hash in missing {
        readable(unit_file(state, &hash, records.len()).await)?;
    }
    let fetched;
    let file = match file {
        Some(file) => file,
        None => match readable(unit_file(state, &hash, records.len()).await)? {
            Some(found) => {
                fetched = found;
                &fetched
            }
            None => return Ok(Vec::new()),
        },
    };
    if !stops && pulls_nothing(file) {
        return Ok(Vec::new());
    }
    let planned: Vec<(Follow, Option<UnitFile>)> = {
        let cache = state.units.lock().await;
        let mut units: BTreeMap<&str, (JobState, &UnitFile)> = records
            .iter()
            .filter_map(|(n, d, h)| cache.get(h).map(|f| (n.as_str(), (*d, f))))
            .collect();
        // Itself as it was (inactive when new), with its file as it is now.
        units.insert(name.as_str(), (before, file));
        follow(&units, name.as_str(), desired)
            .into_iter()
            .map(|change| {
                let template = match &change {
                    Follow::Create { template, .. } => {
                        units.get(template.as_str()).map(|(_, f)| (*f).clone())
                    }
                    _ => None,
                };
                (change, template)
            })
            .collect()
    };
    let mut told = Vec::new();
    for (change, template) in planned {
        let line = match change {
            Follow::Raise { unit, to } => {
                set_desired_of(state, &unit, to).await?;
                format!("pulled-in {unit} {to}")
            }
            Follow::Create {
                unit,
                template: from,
                to,
            } => {
                let (Ok(instance), Some(template)) = (UnitName::new(&unit), template) else {
                    continue;
                };
                if state.registry.create_job(&instance, &template, to).await? == JobWrite::Exists {
                    set_desired_of(state, &unit, to).await?;
                }
                format!("created {unit} {to} from {from}")
            }
            Follow::Lower { unit } => {
                set_desired_of(state, &unit, JobState::Loaded).await?;
                format!("stopped-with {unit}")
            }
        };
        tracing::info!(unit = %name, related = line, "api: a related unit follows");
        told.push(line);
    }
    Ok(told)
}

async fn set_desired_of(state: &ApiState, unit: &str, to: JobState) -> Result<(), Answer> {
    if let Ok(unit) = UnitName::new(unit) {
        state.registry.set_desired(&unit, to).await?;
    }
    Ok(())
}

/// Refuses (400) a unit `name` of file `file` whose `StartAfter=` closes a cycle through the
/// units of the registry: they would wait for each other forever.
pub(super) async fn refuse_start_after_cycle(
    state: &ApiState,
    name: &UnitName,
    file: &UnitFile,
) -> Result<(), Answer> {
    let first = Requirements::for_unit(file, name.as_str()).start_after();
    if first.is_empty() {
        return Ok(());
    }
    let hashes: BTreeMap<String, UnitHash> = read_now(state, |snapshot| {
        snapshot
            .jobs
            .iter()
            .chain(snapshot.global.iter())
            .map(|(n, record)| (n.to_string(), record.hash))
            .collect()
    })
    .await?;
    // The units reachable through `StartAfter=`, with what each names.
    let mut after: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue = first.clone();
    after.insert(name.to_string(), first);
    while let Some(next) = queue.pop() {
        if after.contains_key(&next) {
            continue;
        }
        let file = match hashes.get(&next) {
            Some(hash) => match unit_file(state, hash, hashes.len()).await {
                Ok(file) => file,
                Err(RegistryError::Corrupt { .. }) => None,
                Err(error) => return Err(error.into()),
            },
            None => None,
        };
        let names = file
            .map(|f| Requirements::for_unit(&f, &next).start_after())
            .unwrap_or_default();
        queue.extend(names.iter().cloned());
        after.insert(next, names);
    }
    match start_after_cycle(&after, name.as_str()) {
        Some(cycle) => Err(bad_request(format!(
            "StartAfter= cycle: {}: these units would wait for each other forever",
            cycle.join(" -> ")
        ))),
        None => Ok(()),
    }
}
