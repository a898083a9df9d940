//! `state`: the unit states the machines reported.

use super::*;

pub(super) fn state_view(
    listed: &Listed,
    (name, machine): &(UnitName, MachineId),
) -> Option<UnitState> {
    let s = listed.state(name, machine)?;
    Some(UnitState {
        hash: s.hash.map(|h| h.to_string()).unwrap_or_default(),
        machine_id: machine.to_string(),
        name: name.to_string(),
        systemd_active_state: s.active.clone(),
        systemd_load_state: s.load.clone(),
        systemd_sub_state: s.sub.clone(),
        reason: s.reason.clone(),
        health: s
            .health
            .as_ref()
            .map(|h| h.state.clone())
            .unwrap_or_default(),
        health_output: s
            .health
            .as_ref()
            .map(|h| h.output.clone())
            .unwrap_or_default(),
    })
}

pub(super) async fn list_states(state: &ApiState, query: &str) -> Reply {
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

pub(super) async fn get_state(state: &ApiState, name: &str) -> Reply {
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
