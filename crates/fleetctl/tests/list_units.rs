//! `fleetctl list-units` against fleet 1.0's own output: for each golden case whose flags we
//! support, the table printed from the same API bodies must be byte-identical.

use std::path::Path;

use fleet_api::schema::{MachinePage, UnitStatePage};
use fleetctl::commands::list_units::table;

const TABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/golden/tables");

fn check(case: &str) {
    let dir = Path::new(TABLES);
    let command = std::fs::read_to_string(dir.join(format!("{case}.cmd"))).unwrap();
    let expected = std::fs::read_to_string(dir.join(format!("{case}.out"))).unwrap();
    let bodies: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{case}.state.json"))).unwrap(),
    )
    .unwrap();
    let states: UnitStatePage =
        serde_json::from_value(bodies["GET /fleet/v1/state"].clone()).unwrap_or_default();
    let machines: MachinePage =
        serde_json::from_value(bodies["GET /fleet/v1/machines"].clone()).unwrap_or_default();
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    let legend = !args.contains(&"--no-legend");
    let full = args.contains(&"--full");
    let printed = table(&states.states, &machines.machines, legend, full);
    assert_eq!(printed, expected, "{case}: {command}");
}

#[test]
fn default_fields_match_fleet() {
    for case in [
        "units-default",
        "units-full",
        "empty-list-units",
        "empty-list-units-no-legend",
        "a2-units-default",
        "a2-units-full",
        "a3-units-injected-states",
        "a3-units-injected-states-full",
    ] {
        check(case);
    }
}
