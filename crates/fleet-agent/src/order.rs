//! Start order between units of one machine: `After=` and `Before=` in `[Unit]`, as systemd
//! applies them to jobs queued together. Starts run concurrently; a unit ordered after
//! another that is being started waits for that start to finish first, wherever the two
//! came from (one batch of units, or a start still under way from an earlier round).

use std::collections::{BTreeMap, BTreeSet};

use fleet_unit::relations::related;
use fleet_unit::{UnitFile, UnitName};

/// The units each unit of `starting` must wait for: those among `starting` that it is
/// ordered after (`After=` of its own, or `Before=` of theirs). Specifiers `%n %N %p %i`
/// resolve as fleet resolves them; names that are not in `starting` are left out (systemd
/// orders only jobs that exist).
pub fn predecessors(
    starting: &BTreeMap<UnitName, &UnitFile>,
) -> BTreeMap<UnitName, BTreeSet<UnitName>> {
    let mut waits: BTreeMap<UnitName, BTreeSet<UnitName>> = BTreeMap::new();
    let mut order = |earlier: &str, later: &str| {
        let (Ok(earlier), Ok(later)) = (UnitName::new(earlier), UnitName::new(later)) else {
            return;
        };
        if earlier != later && starting.contains_key(&earlier) && starting.contains_key(&later) {
            waits.entry(later).or_default().insert(earlier);
        }
    };
    for (name, unit) in starting {
        for other in related(unit, name.as_str(), &["After"]) {
            order(&other, name.as_str());
        }
        for other in related(unit, name.as_str(), &["Before"]) {
            order(name.as_str(), &other);
        }
    }
    break_cycles(&mut waits);
    waits
}

/// Drops the waits that close a cycle (systemd breaks an ordering cycle by dropping a job's
/// ordering, with a warning; here the units then start without that order), found by a
/// depth-first walk in name order, so the same units always lose the same edge.
fn break_cycles(waits: &mut BTreeMap<UnitName, BTreeSet<UnitName>>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        name: &UnitName,
        waits: &mut BTreeMap<UnitName, BTreeSet<UnitName>>,
        marks: &mut BTreeMap<UnitName, Mark>,
    ) {
        marks.insert(name.clone(), Mark::Open);
        let earlier: Vec<UnitName> = waits.get(name).into_iter().flatten().cloned().collect();
        for other in earlier {
            match marks.get(&other) {
                Some(Mark::Open) => {
                    tracing::warn!(unit = %name, after = %other, "agent: ordering cycle; starting without this order");
                    if let Some(set) = waits.get_mut(name) {
                        set.remove(&other);
                    }
                }
                Some(Mark::Done) => {}
                None => visit(&other, waits, marks),
            }
        }
        marks.insert(name.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let names: Vec<UnitName> = waits.keys().cloned().collect();
    for name in names {
        if !marks.contains_key(&name) {
            visit(&name, waits, &mut marks);
        }
    }
    waits.retain(|_, earlier| !earlier.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(units: &[(&str, &str)], expected: &[(&str, &[&str])]) {
        let files: Vec<(UnitName, UnitFile)> = units
            .iter()
            .map(|(name, text)| {
                (
                    UnitName::new(*name).unwrap(),
                    UnitFile::parse(text).unwrap(),
                )
            })
            .collect();
        let starting: BTreeMap<UnitName, &UnitFile> =
            files.iter().map(|(n, u)| (n.clone(), u)).collect();
        let found: Vec<(String, Vec<String>)> = predecessors(&starting)
            .into_iter()
            .map(|(n, w)| (n.to_string(), w.iter().map(|w| w.to_string()).collect()))
            .collect();
        let expected: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(n, w)| (n.to_string(), w.iter().map(|w| w.to_string()).collect()))
            .collect();
        assert_eq!(found, expected, "{units:?}");
    }

    #[test]
    fn after_and_before_between_units_started_together() {
        let plain = "[Service]\nExecStart=/bin/true\n";
        // After= of its own.
        check(
            &[
                ("a.service", "[Unit]\nAfter=b.service\n"),
                ("b.service", plain),
            ],
            &[("a.service", &["b.service"])],
        );
        // Before= of the other, and several names on a line.
        check(
            &[
                ("a.service", "[Unit]\nBefore=b.service c.service\n"),
                ("b.service", plain),
                ("c.service", plain),
            ],
            &[("b.service", &["a.service"]), ("c.service", &["a.service"])],
        );
        // Units not started now (host units, fleet units elsewhere) order nothing.
        check(
            &[(
                "a.service",
                "[Unit]\nAfter=docker.service network-online.target\n",
            )],
            &[],
        );
        // The sidekick pattern of fleet's documentation: specifiers resolve.
        check(
            &[
                ("apache@80.service", plain),
                (
                    "apache-discovery@80.service",
                    "[Unit]\nBindsTo=apache@%i.service\nAfter=apache@%i.service\n",
                ),
            ],
            &[("apache-discovery@80.service", &["apache@80.service"])],
        );
        // A unit ordered after itself, or a name that is no unit name, is passed over.
        check(&[("a.service", "[Unit]\nAfter=a.service ../x\n")], &[]);
        // A cycle loses one edge, always the same: no start waits for ever.
        check(
            &[
                ("a.service", "[Unit]\nAfter=b.service\n"),
                ("b.service", "[Unit]\nAfter=c.service\n"),
                ("c.service", "[Unit]\nAfter=a.service\n"),
            ],
            &[("a.service", &["b.service"]), ("b.service", &["c.service"])],
        );
    }
}
