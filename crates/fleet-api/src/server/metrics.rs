//! `/metrics`: Prometheus text, from the registry and the API's own counters.

use super::*;

/// Prometheus text exposition: API requests, and the cluster as the registry sees it.
pub(super) async fn metrics(state: &ApiState) -> Answer {
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
    if let Some(local) = &state.local {
        text.push_str(&local.metrics());
    }
    if let Ok(snapshot) = snapshot(state).await {
        let mut moved: BTreeMap<&str, u64> = BTreeMap::new();
        for record in snapshot.moves.values() {
            for entry in record.history.iter().filter(|e| e.is_move()) {
                let reason = match entry.what.starts_with("unhealthy") {
                    true => "unhealthy",
                    false => "failed",
                };
                *moved.entry(reason).or_default() += 1;
            }
        }
        let _ = writeln!(
            text,
            "# HELP fleet_unit_moves_recorded Moves of failed units in the units' recent histories, by reason."
        );
        let _ = writeln!(text, "# TYPE fleet_unit_moves_recorded gauge");
        for reason in ["failed", "unhealthy"] {
            let count = moved.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                text,
                "fleet_unit_moves_recorded{{reason=\"{reason}\"}} {count}"
            );
        }
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
    Answer::document("text/plain; version=0.0.4", text.into_bytes())
}
