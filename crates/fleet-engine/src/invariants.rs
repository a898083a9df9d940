//! The placement rules as a check of what a cluster shows: pure, so that the acceptance suite
//! (units as the API lists them, where their processes run) and the placement benchmark
//! (what the registry holds) judge by the same rules.
//!
//! The rules: a unit that is not global is on one machine at most; a unit is only on a
//! machine that exists, has the metadata it asks for and is the one its `MachineID=` names;
//! no two units that conflict (either way round) share a machine; a unit's `MachineOf=` peers
//! are on no other machine; a global unit that is launched is on every machine that accepts
//! it. Self-healing adds three: a global unit is never moved (its machine restarts it); a unit
//! is moved no more often than its `RescheduleAttempts=`; a unit is back on a machine it was
//! moved away from only when every other machine that accepts it failed it too. Units related
//! by `Requires=`, `BindsTo=`, `Wants=`, `Requisite=` or `PartOf=` share their machine. Three rules
//! depend on what is observed, hence [`Strictness`].

use std::collections::BTreeMap;

use fleet_unit::{Constraints, Machine};

/// What is observed of a cluster.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every unit, with its constraints and whether it is meant to run (desired launched).
    pub units: BTreeMap<String, (Constraints, bool)>,
    /// Where each unit is (placed, or running), by unit: machine IDs.
    pub hosts: BTreeMap<String, Vec<String>>,
    /// The live machines.
    pub machines: Vec<Machine>,
    /// Per unit: the machines it was moved away from after failing there, oldest first (the
    /// `moved away` and `moved to M` entries of its failure history), and its `RescheduleAttempts=` (0:
    /// unlimited).
    pub moved_from: BTreeMap<String, (Vec<String>, u32)>,
    /// Per unit: the units it names in `Requires=`, `BindsTo=`, `Wants=`, `Requisite=`,
    /// `PartOf=` (fleet units among them run on its machine).
    pub related: BTreeMap<String, Vec<String>>,
}

/// Rules that hold only when everything has settled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strictness {
    /// Every launched unit that is not global is somewhere (a benchmark whose units can all be
    /// placed; a cluster may hold units that cannot).
    pub every_unit_placed: bool,
    /// A unit's `MachineOf=` peers are on its machine, not only on no other (true when every
    /// peer is launched too).
    pub peers_present: bool,
    /// Machines a unit failed on come last: it is on one only when every other live machine
    /// that accepts it failed it too (true while no machine joined since it was placed).
    pub failed_machines_last: bool,
}

/// Every broken rule, in words.
pub fn violations(observed: &Observed, strictness: Strictness) -> Vec<String> {
    let hosts = |unit: &str| -> &[String] { observed.hosts.get(unit).map_or(&[], Vec::as_slice) };
    let conflict = |a: &str, b: &str| {
        let of = |unit: &str| observed.units.get(unit).map(|(c, _)| c);
        of(a).is_some_and(|c| c.conflicts_with(b)) || of(b).is_some_and(|c| c.conflicts_with(a))
    };
    let machines: BTreeMap<&str, &Machine> = observed
        .machines
        .iter()
        .map(|m| (m.id.as_str(), m))
        .collect();
    // Which units each machine holds, for the conflict rule.
    let mut held: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (unit, machines) in &observed.hosts {
        for machine in machines {
            held.entry(machine.as_str())
                .or_default()
                .push(unit.as_str());
        }
    }
    let mut violations = Vec::new();
    for (name, (own, launched)) in &observed.units {
        let here = hosts(name);
        if !own.global && here.len() > 1 {
            violations.push(format!("{name} is on {here:?}"));
        }
        if !own.global && here.is_empty() && *launched && strictness.every_unit_placed {
            violations.push(format!("{name} is on no machine"));
        }
        for machine in here {
            match machines.get(machine.as_str()) {
                None => violations.push(format!("{name} is on {machine}, which is gone")),
                Some(m) if !m.has_metadata(&own.metadata) => violations.push(format!(
                    "{name} is on {machine}, whose metadata it does not accept"
                )),
                Some(_) => {}
            }
            if own.machine_id.as_ref().is_some_and(|id| id != machine) {
                violations.push(format!("{name} is on {machine}, not the machine it names"));
            }
            for other in held.get(machine.as_str()).into_iter().flatten() {
                if *other < name.as_str() && conflict(name, other) {
                    violations.push(format!("{name} and {other} conflict but share {machine}"));
                }
            }
            for peer in &own.peers {
                let theirs = hosts(peer);
                if theirs.iter().any(|m| m != machine) {
                    violations.push(format!("{name} is on {machine}, its peer {peer} elsewhere"));
                } else if theirs.is_empty() && strictness.peers_present {
                    violations.push(format!("{name} is on {machine} without its peer {peer}"));
                }
            }
        }
        for other in observed.related.get(name).into_iter().flatten() {
            let theirs = hosts(other);
            let fleet_unit = observed.units.get(other).is_some_and(|(c, _)| !c.global);
            if own.global || !fleet_unit || here.is_empty() || theirs.is_empty() {
                continue;
            }
            if here != theirs {
                violations.push(format!(
                    "{name} is on {here:?}, {other} it is related to on {theirs:?}"
                ));
            }
        }
        if let Some((from, attempts)) = observed.moved_from.get(name) {
            if own.global && !from.is_empty() {
                violations.push(format!("global unit {name} was moved away from {from:?}"));
            }
            if *attempts > 0 && from.len() > *attempts as usize {
                violations.push(format!(
                    "{name} was moved {} times, past RescheduleAttempts={attempts}",
                    from.len()
                ));
            }
            let accepts = |m: &Machine| {
                m.has_metadata(&own.metadata)
                    && own.machine_id.as_ref().is_none_or(|id| id == m.id.as_str())
                    && !held
                        .get(m.id.as_str())
                        .into_iter()
                        .flatten()
                        .any(|other| *other != name.as_str() && conflict(name, other))
            };
            let returned = here.iter().filter(|m| !own.global && from.contains(m));
            for machine in returned {
                let spared = observed
                    .machines
                    .iter()
                    .find(|m| !from.iter().any(|f| f == m.id.as_str()) && accepts(m));
                if let (Some(spared), true) = (spared, strictness.failed_machines_last) {
                    violations.push(format!(
                        "{name} is back on {machine}, where it failed, though {} never failed it",
                        spared.id
                    ));
                }
            }
        }
        if own.global && *launched {
            for machine in &observed.machines {
                let id = machine.id.as_str();
                let blocked = held
                    .get(id)
                    .into_iter()
                    .flatten()
                    .any(|other| *other != name.as_str() && conflict(name, other));
                if machine.has_metadata(&own.metadata) && !blocked && !here.iter().any(|m| m == id)
                {
                    violations.push(format!("global unit {name} is not on {id}"));
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_unit::{MachineId, Requirements, UnitFile};

    /// `units` as (name, [X-Fleet] lines, launched); `hosts` as (unit, machine); `machines` as
    /// (id, "key=value,..." metadata).
    fn check(
        units: &[(&str, &str, bool)],
        hosts: &[(&str, &str)],
        machines: &[(&str, &str)],
        strictness: Strictness,
        expected: &[&str],
    ) {
        let observed = observed(units, hosts, machines);
        assert_eq!(violations(&observed, strictness), expected);
    }

    fn observed(
        units: &[(&str, &str, bool)],
        hosts: &[(&str, &str)],
        machines: &[(&str, &str)],
    ) -> Observed {
        let mut observed = Observed::default();
        for (name, x_fleet, launched) in units {
            let text = format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{x_fleet}\n");
            let file = UnitFile::parse(text.as_bytes()).unwrap();
            let constraints = Requirements::for_unit(&file, name).constraints();
            observed
                .units
                .insert(name.to_string(), (constraints, *launched));
        }
        for (unit, machine) in hosts {
            observed
                .hosts
                .entry(unit.to_string())
                .or_default()
                .push(machine.to_string());
        }
        for (id, metadata) in machines {
            let mut machine = Machine::new(MachineId::new(*id).unwrap());
            for pair in metadata.split(',').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap();
                machine.metadata.insert(key.into(), value.into());
            }
            observed.machines.push(machine);
        }
        observed
    }

    const LAX: Strictness = Strictness {
        every_unit_placed: false,
        peers_present: false,
        failed_machines_last: false,
    };
    const STRICT: Strictness = Strictness {
        every_unit_placed: true,
        peers_present: true,
        failed_machines_last: true,
    };

    #[test]
    fn rules() {
        let two = [("m1", "disk=ssd"), ("m2", "")];
        // All well.
        check(
            &[
                ("a.service", "", true),
                ("b.service", "MachineOf=a.service", true),
            ],
            &[("a.service", "m1"), ("b.service", "m1")],
            &two,
            STRICT,
            &[],
        );
        // One unit on two machines; a unit nowhere only matters when strict.
        check(
            &[("a.service", "", true), ("b.service", "", true)],
            &[("a.service", "m1"), ("a.service", "m2")],
            &two,
            LAX,
            &[r#"a.service is on ["m1", "m2"]"#],
        );
        check(
            &[("b.service", "", true), ("c.service", "", false)],
            &[],
            &two,
            STRICT,
            &["b.service is on no machine"],
        );
        // Gone machine, metadata, MachineID.
        check(
            &[
                ("a.service", "", true),
                ("d.service", "MachineMetadata=disk=ssd", true),
                ("p.service", "MachineID=m1", true),
            ],
            &[
                ("a.service", "m9"),
                ("d.service", "m2"),
                ("p.service", "m2"),
            ],
            &two,
            LAX,
            &[
                "a.service is on m9, which is gone",
                "d.service is on m2, whose metadata it does not accept",
                "p.service is on m2, not the machine it names",
            ],
        );
        // Conflicts either way round, reported once.
        check(
            &[("a.service", "Conflicts=b*", true), ("b.service", "", true)],
            &[("a.service", "m1"), ("b.service", "m1")],
            &two,
            LAX,
            &["b.service and a.service conflict but share m1"],
        );
        // Peers elsewhere always; absent peers only when strict.
        check(
            &[
                ("a.service", "", true),
                ("b.service", "MachineOf=a.service", true),
            ],
            &[("a.service", "m2"), ("b.service", "m1")],
            &two,
            LAX,
            &["b.service is on m1, its peer a.service elsewhere"],
        );
        check(
            &[
                ("a.service", "", false),
                ("b.service", "MachineOf=a.service", true),
            ],
            &[("b.service", "m1")],
            &two,
            LAX,
            &[],
        );
        check(
            &[
                ("a.service", "", false),
                ("b.service", "MachineOf=a.service", true),
            ],
            &[("b.service", "m1")],
            &two,
            STRICT,
            &["b.service is on m1 without its peer a.service"],
        );
        // A launched global unit is on every machine that accepts it and holds nothing it
        // conflicts with.
        check(
            &[
                ("g.service", "Global=true\nConflicts=x.service", true),
                ("x.service", "", true),
                ("s.service", "Global=true\nMachineMetadata=disk=ssd", true),
                ("h.service", "Global=true", false),
            ],
            &[("x.service", "m2"), ("s.service", "m1")],
            &two,
            LAX,
            &["global unit g.service is not on m1"],
        );
    }

    #[test]
    fn healing_rules() {
        let three = [("m1", ""), ("m2", ""), ("m3", "disk=ssd")];
        let units = [
            ("a.service", "", true),
            ("d.service", "MachineMetadata=disk=ssd", true),
            ("g.service", "Global=true", true),
        ];
        let hosts = [
            ("a.service", "m1"),
            ("d.service", "m3"),
            ("g.service", "m1"),
            ("g.service", "m2"),
            ("g.service", "m3"),
        ];
        let mut observed = observed(&units, &hosts, &three);
        let from = |machines: &[&str], attempts: u32| {
            (machines.iter().map(|m| m.to_string()).collect(), attempts)
        };
        observed.moved_from = BTreeMap::from([
            // Back on m1 though m3 never failed it.
            ("a.service".to_owned(), from(&["m1", "m2"], 0)),
            // Only m3 accepts it: back there is right.
            ("d.service".to_owned(), from(&["m3", "m3"], 0)),
            ("g.service".to_owned(), from(&["m2"], 0)),
        ]);
        assert_eq!(
            violations(&observed, STRICT),
            [
                "a.service is back on m1, where it failed, though m3 never failed it",
                "global unit g.service was moved away from [\"m2\"]",
            ]
        );
        // While machines may have joined since, only the other rules hold.
        assert_eq!(
            violations(&observed, LAX),
            ["global unit g.service was moved away from [\"m2\"]"]
        );
        observed.moved_from = BTreeMap::from([("d.service".to_owned(), from(&["m3", "m3"], 1))]);
        assert_eq!(
            violations(&observed, LAX),
            ["d.service was moved 2 times, past RescheduleAttempts=1"]
        );
    }

    #[test]
    fn related_units_share_their_machine() {
        let two = [("m1", ""), ("m2", "")];
        let units = [
            ("a.service", "", true),
            ("b.service", "", true),
            ("c.service", "", true),
            ("g.service", "Global=true", true),
        ];
        let hosts = [
            ("a.service", "m1"),
            ("b.service", "m2"),
            ("c.service", "m1"),
            ("g.service", "m1"),
            ("g.service", "m2"),
        ];
        let mut observed = observed(&units, &hosts, &two);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        observed.related = BTreeMap::from([(
            "a.service".to_owned(),
            names(&["b.service", "c.service", "g.service", "docker.service"]),
        )]);
        assert_eq!(
            violations(&observed, STRICT),
            ["a.service is on [\"m1\"], b.service it is related to on [\"m2\"]"]
        );
    }
}
