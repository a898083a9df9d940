//! `fleetctl list-dependencies [--full] UNIT` (ours): the tree of fleet units a unit is related
//! to (`Requires=`, `BindsTo=`, `Wants=`, `Requisite=`, `PartOf=`) or starts after
//! (`[X-Fleet] StartAfter=`), as `systemctl list-dependencies` draws it, each with its desired
//! state, its state and where it runs.
//! Relations to units that are not fleet units are the machine's, and not shown.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use fleet_unit::name::mangle;
use fleet_unit::relations::related;
use fleet_unit::Requirements;
use fleet_wire::schema::{Machine, Unit, UnitState};

use super::list_units::machine_column;
use crate::{Globals, Io};

/// The relations shown, in this order under each unit.
const SHOWN: &[&str] = &["Requires", "BindsTo", "Wants", "Requisite", "PartOf"];

pub fn run(args: &[String], globals: &Globals, io: &mut Io<'_>) -> io::Result<i32> {
    let full = args.iter().any(|a| a == "--full" || a == "-l");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let [arg] = names.as_slice() else {
        writeln!(io.err, "One unit must be given")?;
        return Ok(1);
    };
    let name = mangle(arg);
    let client = globals.client();
    let Some(units) = super::all_units(&client, io)? else {
        return Ok(1);
    };
    let states = match client.states() {
        Ok(states) => states,
        Err(e) => {
            writeln!(io.err, "Error retrieving list of unit states: {e}")?;
            return Ok(1);
        }
    };
    let Some(machines) = super::machines_if(true, &client, io)? else {
        return Ok(1);
    };
    let units: BTreeMap<&str, &Unit> = units.iter().map(|u| (u.name.as_str(), u)).collect();
    if !units.contains_key(name.as_str()) {
        writeln!(io.err, "Unit {name} not found")?;
        return Ok(1);
    }
    let tree = Tree {
        units,
        states: &states,
        machines: &machines,
        full,
    };
    io.out.write_all(tree.draw(&name).as_bytes())?;
    Ok(0)
}

struct Tree<'a> {
    units: BTreeMap<&'a str, &'a Unit>,
    states: &'a [UnitState],
    machines: &'a [Machine],
    full: bool,
}

impl Tree<'_> {
    fn draw(&self, root: &str) -> String {
        let mut text = format!("{root} {}\n", self.about(root));
        let mut shown = BTreeSet::from([root.to_owned()]);
        self.children(root, "", &mut shown, &mut text);
        text
    }

    /// The fleet units `name` names, with the relation, drawn under it.
    fn children(&self, name: &str, indent: &str, shown: &mut BTreeSet<String>, text: &mut String) {
        let Some(unit) = self.units.get(name) else {
            return;
        };
        let file = unit.unit_file();
        let mut children: Vec<(&str, String)> = Vec::new();
        let start_after = Requirements::for_unit(&file, name).start_after();
        let named = SHOWN
            .iter()
            .flat_map(|key| {
                related(&file, name, &[key])
                    .into_iter()
                    .map(move |o| (*key, o))
            })
            .chain(start_after.into_iter().map(|o| ("StartAfter", o)));
        for (key, other) in named {
            if self.units.contains_key(other.as_str())
                && !children.iter().any(|(k, o)| *k == key && *o == other)
            {
                children.push((key, other));
            }
        }
        for (i, (key, other)) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let branch = if last { "└─" } else { "├─" };
            let again = !shown.insert(other.clone());
            let about = match again {
                true => "(shown above)".to_owned(),
                false => self.about(other),
            };
            text.push_str(&format!("{indent}{branch}{key}={other} {about}\n"));
            if !again {
                let deeper = format!("{indent}{}", if last { "  " } else { "│ " });
                self.children(other, &deeper, shown, text);
            }
        }
    }

    /// `(desired launched, active on 3d1219c7.../10.0.0.1)`; `not placed` with the reason.
    fn about(&self, name: &str) -> String {
        let Some(unit) = self.units.get(name) else {
            return String::new();
        };
        let desired = &unit.desired_state;
        let placed: Vec<&UnitState> = self.states.iter().filter(|s| s.name == name).collect();
        if placed.is_empty() {
            return match unit.unplaceable_reason.is_empty() {
                true => format!("(desired {desired}, not placed)"),
                false => format!(
                    "(desired {desired}, not placed: {})",
                    unit.unplaceable_reason
                ),
            };
        }
        let on: Vec<String> = placed
            .iter()
            .map(|state| {
                let ip = self
                    .machines
                    .iter()
                    .find(|m| m.id == state.machine_id)
                    .map(|m| m.primary_ip.as_str());
                format!(
                    "{} on {}",
                    state.systemd_active_state,
                    machine_column(&state.machine_id, ip, self.full)
                )
            })
            .collect();
        format!("(desired {desired}, {})", on.join(", "))
    }
}
