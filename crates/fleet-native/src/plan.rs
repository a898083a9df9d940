//! Which units a start or a stop involves, and in what order: systemd's transaction, reduced
//! to the units loaded on this machine. Pure: it sees each unit's relations and whether it is
//! active, and returns a plan or the reason there can be none.

use std::collections::{BTreeMap, BTreeSet};

use super::service::Relations;

/// The loaded units as the planner sees them. Every start plans over all of them (units
/// installed into the target, conflicts named by others), so a plan borrows the relations
/// and asks whether a unit is active only of the units it needs to know it of: a thousand
/// starts must not copy a thousand units' relations each.
pub trait Graph {
    /// The relations of a loaded unit; `None` when no such unit is loaded.
    fn relations(&self, name: &str) -> Option<&Relations>;
    /// Whether a loaded unit is active (or on its way).
    fn active(&self, name: &str) -> bool;
    /// Every loaded unit with its relations.
    fn each(&self) -> Box<dyn Iterator<Item = (&str, &Relations)> + '_>;
    /// Whether `name` is a unit of the machine outside fleet (`native_host_units=`): taken as
    /// there and active, never started or stopped.
    fn is_host(&self, _name: &str) -> bool {
        false
    }
}

/// What the planner knows of one loaded unit, for a graph held in a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub relations: Relations,
    pub active: bool,
}

impl Graph for BTreeMap<String, Node> {
    fn relations(&self, name: &str) -> Option<&Relations> {
        self.get(name).map(|n| &n.relations)
    }

    fn active(&self, name: &str) -> bool {
        self.get(name).is_some_and(|n| n.active)
    }

    fn each(&self) -> Box<dyn Iterator<Item = (&str, &Relations)> + '_> {
        Box::new(self.iter().map(|(name, n)| (name.as_str(), &n.relations)))
    }
}

/// The relations of a unit the plan already knows is loaded.
fn relations_of<'a>(units: &'a (impl Graph + ?Sized), name: &str) -> &'a Relations {
    static NONE: Relations = Relations {
        requires: Vec::new(),
        requisite: Vec::new(),
        wants: Vec::new(),
        binds_to: Vec::new(),
        part_of: Vec::new(),
        conflicts: Vec::new(),
        after: Vec::new(),
        before: Vec::new(),
        wanted_by: Vec::new(),
        required_by: Vec::new(),
    };
    units.relations(name).unwrap_or(&NONE)
}

/// A start: first stop `stop` (conflicting units), then start `start` in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartPlan {
    pub stop: Vec<String>,
    pub start: Vec<String>,
    /// For each unit to start, the units it must not start without (required or bound, and
    /// ordered before it): if one of them fails, this one is not started.
    pub needs: BTreeMap<String, Vec<String>>,
    /// For each unit to start, the units of this start ordered before it (After=/Before=,
    /// whatever pulled them in): its start waits until theirs are over, as a systemd job
    /// waits for the jobs ordered before it, however they end.
    pub waits: BTreeMap<String, Vec<String>>,
}

/// Plans starting `target`. Errors are systemd's words for why nothing starts.
pub fn start_plan(units: &(impl Graph + ?Sized), target: &str) -> Result<StartPlan, String> {
    let node = |name: &str| units.relations(name);
    if node(target).is_none() {
        return Err(format!("Unit {target} not found."));
    }
    // Everything the target pulls in, transitively; [Install] WantedBy=/RequiredBy= of other
    // loaded units count as Wants=/Requires= of the unit they name.
    let mut set = BTreeSet::new();
    let mut queue = vec![target.to_owned()];
    while let Some(name) = queue.pop() {
        if !set.insert(name.clone()) {
            continue;
        }
        let relations = relations_of(units, &name);
        for required in relations.requires.iter().chain(&relations.binds_to) {
            if units.is_host(required) && node(required).is_none() {
                continue;
            }
            if node(required).is_none() {
                return Err(format!("Unit {required} not found."));
            }
            queue.push(required.clone());
        }
        for requisite in &relations.requisite {
            if units.is_host(requisite) && node(requisite).is_none() {
                continue;
            }
            if node(requisite).is_none() {
                return Err(format!("Unit {requisite} not found."));
            }
            if !units.active(requisite) {
                return Err(format!("Unit {requisite} is not active."));
            }
        }
        queue.extend(
            relations
                .wants
                .iter()
                .filter(|w| node(w).is_some())
                .cloned(),
        );
        for (other, installed) in units.each() {
            if installed.wanted_by.contains(&name) || installed.required_by.contains(&name) {
                queue.push(other.to_owned());
            }
        }
    }
    // Conflicts= works both ways.
    let mut stop = BTreeSet::new();
    for name in &set {
        for other in &relations_of(units, name).conflicts {
            if set.contains(other) {
                return Err(format!(
                    "Units {name} and {other} conflict and were both to start."
                ));
            }
            stop.insert(other.clone());
        }
        for (other, relations) in units.each() {
            if relations.conflicts.contains(name) && !set.contains(other) {
                stop.insert(other.to_owned());
            }
        }
    }
    let stop = stop
        .into_iter()
        .filter(|name| node(name).is_some() && units.active(name))
        .collect();
    let start = order(units, &set);
    let mut waits = BTreeMap::new();
    for (position, name) in start.iter().enumerate() {
        let earlier: Vec<String> = start[..position]
            .iter()
            .filter(|earlier| before(units, earlier, name))
            .cloned()
            .collect();
        if !earlier.is_empty() {
            waits.insert(name.clone(), earlier);
        }
    }
    let mut needs = BTreeMap::new();
    for name in &start {
        let relations = relations_of(units, name);
        // [Install] RequiredBy= of another unit is a Requires= of this one.
        let required_by_install = units
            .each()
            .filter(|(_, installed)| installed.required_by.contains(name))
            .map(|(other, _)| other);
        let needed: Vec<String> = relations
            .requires
            .iter()
            .chain(&relations.binds_to)
            .map(String::as_str)
            .chain(required_by_install)
            .filter(|r| before(units, r, name))
            .map(str::to_owned)
            .collect();
        if !needed.is_empty() {
            needs.insert(name.clone(), needed);
        }
    }
    Ok(StartPlan {
        stop,
        start,
        needs,
        waits,
    })
}

/// Plans stopping `target`: it and every active unit that requires it (also through the
/// target's [Install] RequiredBy=), is bound to it or is part of it, transitively; those
/// ordered after it stop first.
pub fn stop_plan(units: &(impl Graph + ?Sized), target: &str) -> Vec<String> {
    let mut set = BTreeSet::new();
    let mut queue = vec![target.to_owned()];
    while let Some(name) = queue.pop() {
        if !set.insert(name.clone()) {
            continue;
        }
        for (other, r) in units.each() {
            if (r.requires.contains(&name)
                || r.binds_to.contains(&name)
                || r.part_of.contains(&name))
                && units.active(other)
            {
                queue.push(other.to_owned());
            }
        }
        let required_by = &relations_of(units, &name).required_by;
        queue.extend(
            required_by
                .iter()
                .filter(|other| units.relations(other).is_some() && units.active(other))
                .cloned(),
        );
    }
    let mut ordered = order(units, &set);
    ordered.reverse();
    ordered
}

/// Active units bound (`BindsTo=`) to a unit that is not active, each with that unit: they must
/// stop.
pub fn unbound(units: &(impl Graph + ?Sized)) -> Vec<(String, String)> {
    units
        .each()
        .filter(|(name, _)| units.active(name))
        .filter_map(|(name, relations)| {
            let gone = relations
                .binds_to
                .iter()
                .find(|b| units.relations(b).is_none() || !units.active(b))?;
            Some((name.to_owned(), gone.clone()))
        })
        .collect()
}

/// Whether `first` is ordered before `second` (`second` After= `first`, or `first` Before=
/// `second`).
fn before(units: &(impl Graph + ?Sized), first: &str, second: &str) -> bool {
    let after = units
        .relations(second)
        .is_some_and(|r| r.after.iter().any(|a| a == first));
    let before = units
        .relations(first)
        .is_some_and(|r| r.before.iter().any(|b| b == second));
    after || before
}

/// The units of `set` in start order: After=/Before= respected, otherwise by name. A cycle
/// is broken at the smallest name, so every unit still appears once.
fn order(units: &(impl Graph + ?Sized), set: &BTreeSet<String>) -> Vec<String> {
    let mut remaining: BTreeSet<String> = set.clone();
    let mut ordered = Vec::with_capacity(set.len());
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .find(|name| {
                !remaining
                    .iter()
                    .any(|other| other != *name && before(units, other, name))
            })
            .or_else(|| remaining.iter().next())
            .cloned()
            .expect("remaining is not empty");
        remaining.remove(&ready);
        ordered.push(ready);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units from a compact description: `name: relation=a,b; relation=c` with `*` for active.
    fn units(spec: &[&str]) -> BTreeMap<String, Node> {
        spec.iter()
            .map(|line| {
                let (name, rest) = line.split_once(':').unwrap_or((line, ""));
                let active = name.ends_with('*');
                let name = name.trim_end_matches('*').trim().to_owned();
                let mut relations = Relations::default();
                for part in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    let (key, values) = part.split_once('=').unwrap();
                    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
                    let target = match key {
                        "requires" => &mut relations.requires,
                        "requisite" => &mut relations.requisite,
                        "wants" => &mut relations.wants,
                        "binds_to" => &mut relations.binds_to,
                        "part_of" => &mut relations.part_of,
                        "conflicts" => &mut relations.conflicts,
                        "after" => &mut relations.after,
                        "before" => &mut relations.before,
                        "wanted_by" => &mut relations.wanted_by,
                        "required_by" => &mut relations.required_by,
                        other => panic!("unknown relation {other}"),
                    };
                    *target = values;
                }
                (name, Node { relations, active })
            })
            .collect()
    }

    fn check_start(spec: &[&str], target: &str, expected: Result<(&[&str], &[&str]), &str>) {
        let plan = start_plan(&units(spec), target);
        let plan = plan.map(|p| (p.stop, p.start));
        let expected = expected.map(|(stop, start)| {
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            (owned(stop), owned(start))
        });
        assert_eq!(
            plan,
            expected.map_err(str::to_owned),
            "{spec:?} start {target}"
        );
    }

    #[test]
    fn start_plans() {
        check_start(&["a"], "a", Ok((&[], &["a"])));
        check_start(&[], "a", Err("Unit a not found."));
        // The sidekick pattern: the sidekick binds to the main unit and starts after it.
        check_start(
            &["main", "side: binds_to=main; after=main"],
            "side",
            Ok((&[], &["main", "side"])),
        );
        check_start(&["side: requires=db"], "side", Err("Unit db not found."));
        check_start(
            &["web: wants=cache", "cache"],
            "web",
            Ok((&[], &["cache", "web"])),
        );
        check_start(&["web: wants=missing"], "web", Ok((&[], &["web"])));
        // fleet's install test: a unit wanted by another starts with it.
        check_start(
            &["main", "helper: wanted_by=main; after=main"],
            "main",
            Ok((&[], &["main", "helper"])),
        );
        check_start(&["a: requisite=b", "b"], "a", Err("Unit b is not active."));
        check_start(&["a: requisite=b", "b*"], "a", Ok((&[], &["a"])));
        check_start(
            &["a: conflicts=b", "b*", "c*: conflicts=a"],
            "a",
            Ok((&["b", "c"], &["a"])),
        );
        check_start(&["a: conflicts=b", "b"], "a", Ok((&[], &["a"])));
        check_start(
            &["a: requires=b; conflicts=b", "b"],
            "a",
            Err("Units a and b conflict and were both to start."),
        );
        check_start(
            &["a: requires=b,c; after=c", "b: before=a", "c"],
            "a",
            Ok((&[], &["b", "c", "a"])),
        );
        check_start(
            &["x: after=y; wants=y", "y: after=x"],
            "x",
            Ok((&[], &["x", "y"])),
        );
    }

    #[test]
    fn a_required_unit_ordered_before_is_needed() {
        let plan =
            start_plan(&units(&["main", "side: binds_to=main; after=main"]), "side").unwrap();
        assert_eq!(
            plan.needs,
            BTreeMap::from([("side".to_string(), vec!["main".to_string()])])
        );
        // [Install] RequiredBy= on the other side is the same requirement.
        let plan = start_plan(
            &units(&["main", "setup: required_by=main; before=main"]),
            "main",
        )
        .unwrap();
        assert_eq!(
            plan.needs,
            BTreeMap::from([("main".to_string(), vec!["setup".to_string()])])
        );
        let plan = start_plan(&units(&["main", "side: requires=main"]), "side").unwrap();
        assert!(
            plan.needs.is_empty() && plan.waits.is_empty(),
            "without After= they start side by side"
        );
    }

    #[test]
    fn a_start_waits_for_every_unit_ordered_before_it() {
        let pairs = |table: BTreeMap<String, Vec<String>>| -> Vec<(String, Vec<String>)> {
            table.into_iter().collect()
        };
        // Before= on the other side orders as After= does; a wanted unit is waited for too
        // (without being needed), and a unit ordered after nothing in the start waits for none.
        let plan = start_plan(
            &units(&[
                "web: wants=cache,log; requires=db",
                "cache: before=web",
                "db: before=web",
                "log",
            ]),
            "web",
        )
        .unwrap();
        assert_eq!(plan.start, vec!["cache", "db", "log", "web"]);
        assert_eq!(
            pairs(plan.waits),
            vec![(
                "web".to_string(),
                vec!["cache".to_string(), "db".to_string()]
            )]
        );
        assert_eq!(
            pairs(plan.needs),
            vec![("web".to_string(), vec!["db".to_string()])]
        );
    }

    #[test]
    fn stop_plans_and_bindings() {
        let spec = [
            "main*",
            "side*: binds_to=main; after=main",
            "part*: part_of=main",
            "other*: requires=side",
            "idle: requires=main",
        ];
        assert_eq!(
            stop_plan(&units(&spec), "main"),
            vec!["side", "part", "other", "main"]
        );
        // What a unit is RequiredBy= in its [Install] stops with it.
        let spec = ["setup*: required_by=main; before=main", "main*"];
        assert_eq!(stop_plan(&units(&spec), "setup"), vec!["main", "setup"]);
        let spec = ["main", "side*: binds_to=main", "free*"];
        assert_eq!(
            unbound(&units(&spec)),
            vec![("side".to_string(), "main".to_string())]
        );
        assert!(unbound(&units(&["main*", "side*: binds_to=main"])).is_empty());
    }
}
