//! `machines`: the list, and `PATCH` of dynamic metadata (all its changes or none).

use super::*;

pub(super) async fn list_machines(state: &ApiState, query: &str) -> Reply {
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
pub(super) async fn patch_machines(state: &ApiState, request: Request) -> Reply {
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
    let said: Vec<String> = changes
        .iter()
        .map(|(machine, key, value)| match value {
            Some(value) => format!("{machine} {key}={value}"),
            None => format!("{machine} {key} removed"),
        })
        .collect();
    Ok(Answer::empty(StatusCode::NO_CONTENT).changed(format!("metadata {}", said.join(", "))))
}
