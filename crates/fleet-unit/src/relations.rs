//! The relations between units that systemd reads in `[Unit]`, as fleet-rs acts on them
//! across the cluster: units related by [`PLACED_TOGETHER`] run on one machine (systemd can
//! satisfy them only there), starting a unit pulls in the fleet units it [`PULLS_IN`], and a
//! unit stops with those it [`STOPS_WITH`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::name::NameInfo;
use crate::requirements::substitute_specifiers;
use crate::state::JobState;
use crate::unit_file::UnitFile;

/// Relations systemd satisfies only between units of one machine.
pub const PLACED_TOGETHER: &[&str] = &["Requires", "BindsTo", "Wants", "Requisite", "PartOf"];
/// Relations that start the named units with this one.
pub const PULLS_IN: &[&str] = &["Requires", "BindsTo", "Wants"];
/// Relations that stop this unit when the named unit is stopped.
pub const STOPS_WITH: &[&str] = &["Requires", "BindsTo", "PartOf"];
/// Relations that make this unit stop when the named unit does not run (systemd stops it
/// with it, or never starts it).
pub const NEEDS: &[&str] = &["Requires", "BindsTo", "Requisite", "PartOf"];

/// The unit names `unit` (submitted as `name`) names in `[Unit]` under `keys`, each value split
/// on whitespace, `%n %N %p %i` resolved, in file order, each once.
pub fn related(unit: &UnitFile, name: &str, keys: &[&str]) -> Vec<String> {
    let info = NameInfo::parse(name);
    let mut names: Vec<String> = Vec::new();
    let options = unit
        .options()
        .iter()
        .filter(|o| o.section == "Unit" && keys.contains(&o.name.as_str()));
    for option in options {
        let value = match &info {
            Some(info) => substitute_specifiers(&option.value, info),
            None => option.value.clone(),
        };
        for other in value.split_whitespace() {
            if other != name && !names.iter().any(|n| n == other) {
                names.push(other.to_owned());
            }
        }
    }
    names
}

/// A change of another unit's desired state that setting one unit's asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Pulled in (`Requires=`, `BindsTo=`, `Wants=` of a unit wanted loaded or launched):
    /// raised to `to`.
    Raise { unit: String, to: JobState },
    /// Pulled in, an instance of a submitted template: created from it, wanted `to`.
    Create {
        unit: String,
        template: String,
        to: JobState,
    },
    /// Stops with a unit no longer wanted launched (it `Requires=`, `BindsTo=` or is
    /// `PartOf=` it): wanted loaded (stopped) from now on.
    Lower { unit: String },
}

/// What setting `name`'s desired state to `desired` asks of the fleet units related to it,
/// transitively, given each unit's desired state and file (`units`, templates included; `name`
/// with the state it had before, inactive when it is new): what it pulls in is wanted at
/// least as much, instances of submitted templates created; what stops with it is stopped
/// when it is (only a unit that was launched stops: a new one took nothing down). Units
/// wanted less (or inactive ones stopping) are left as they are.
pub fn follow(
    units: &BTreeMap<&str, (JobState, &UnitFile)>,
    name: &str,
    desired: JobState,
) -> Vec<Follow> {
    let mut changes = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::from([name.to_owned()]);
    if desired >= JobState::Loaded {
        // Files of instances created on the way: their templates'.
        let mut created: BTreeMap<String, &UnitFile> = BTreeMap::new();
        let mut queue = VecDeque::from([name.to_owned()]);
        while let Some(unit) = queue.pop_front() {
            let Some(file) = units
                .get(unit.as_str())
                .map(|(_, f)| *f)
                .or_else(|| created.get(&unit).copied())
            else {
                continue;
            };
            for target in related(file, &unit, PULLS_IN) {
                if !seen.insert(target.clone()) {
                    continue;
                }
                match units.get(target.as_str()) {
                    Some((state, _)) if *state < desired => {
                        changes.push(Follow::Raise {
                            unit: target.clone(),
                            to: desired,
                        });
                        queue.push_back(target);
                    }
                    Some(_) => queue.push_back(target),
                    None => {
                        let Some(info) = NameInfo::parse(&target).filter(|i| i.is_instance())
                        else {
                            continue;
                        };
                        let template = info.template();
                        if let Some((_, file)) = units.get(template.as_str()) {
                            created.insert(target.clone(), file);
                            changes.push(Follow::Create {
                                unit: target.clone(),
                                template,
                                to: desired,
                            });
                            queue.push_back(target);
                        }
                    }
                }
            }
        }
    }
    let before = units
        .get(name)
        .map_or(JobState::Inactive, |(state, _)| *state);
    if before == JobState::Launched && desired < JobState::Launched {
        // What it pulls in is not what stops with it: looked at afresh.
        let mut seen: BTreeSet<String> = BTreeSet::from([name.to_owned()]);
        let mut queue = VecDeque::from([name.to_owned()]);
        while let Some(stopped) = queue.pop_front() {
            for (unit, (state, file)) in units {
                if *state != JobState::Launched || seen.contains(*unit) {
                    continue;
                }
                if related(file, unit, STOPS_WITH).contains(&stopped) {
                    seen.insert((*unit).to_owned());
                    changes.push(Follow::Lower {
                        unit: (*unit).to_owned(),
                    });
                    queue.push_back((*unit).to_owned());
                }
            }
        }
    }
    changes
}

/// A cycle through `start` in `after` (each unit's `StartAfter=` names), as the names from
/// `start` back to it; `None` when there is none. Such units would wait for each other
/// forever.
pub fn start_after_cycle(
    after: &BTreeMap<String, Vec<String>>,
    start: &str,
) -> Option<Vec<String>> {
    fn walk(
        after: &BTreeMap<String, Vec<String>>,
        start: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().cloned().unwrap_or_default();
        for next in after.get(&here).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if done.insert(next.clone()) {
                path.push(next.clone());
                if walk(after, start, path, done) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut done = BTreeSet::from([start.to_owned()]);
    walk(after, start, &mut path, &mut done).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, name: &str, keys: &[&str], expected: &[&str]) {
        let unit = UnitFile::parse(text).unwrap();
        assert_eq!(related(&unit, name, keys), expected, "{text}");
    }

    #[test]
    fn names_are_read_split_resolved_and_kept_once() {
        let sidekick = "[Unit]\nBindsTo=apache@%i.service\nAfter=apache@%i.service\nRequires=docker.service etcd.service\nWants=docker.service\n";
        check(
            sidekick,
            "apache-discovery@80.service",
            PLACED_TOGETHER,
            &["apache@80.service", "docker.service", "etcd.service"],
        );
        check(
            sidekick,
            "apache-discovery@80.service",
            STOPS_WITH,
            &["apache@80.service", "docker.service", "etcd.service"],
        );
        check(
            "[Unit]\nPartOf=%p.target\n",
            "web@1.service",
            STOPS_WITH,
            &["web.target"],
        );
        // Itself is no relation; an empty value names nothing.
        check("[Unit]\nRequires=%n\nWants=\n", "a.service", PULLS_IN, &[]);
        check(
            "[Service]\nExecStart=/bin/true\n",
            "a.service",
            PLACED_TOGETHER,
            &[],
        );
    }

    /// `units` as (name, desired, `[Unit]` lines); the changes as `raise a launched`,
    /// `create a@1 from a@ launched`, `lower b`.
    fn check_follow(
        units: &[(&str, JobState, &str)],
        name: &str,
        desired: JobState,
        expected: &[&str],
    ) {
        let files: Vec<(&str, JobState, UnitFile)> = units
            .iter()
            .map(|(n, s, text)| {
                (
                    *n,
                    *s,
                    UnitFile::parse(format!("[Unit]\n{text}\n[Service]\nExecStart=/bin/true\n"))
                        .unwrap(),
                )
            })
            .collect();
        let map: BTreeMap<&str, (JobState, &UnitFile)> =
            files.iter().map(|(n, s, f)| (*n, (*s, f))).collect();
        let got: Vec<String> = follow(&map, name, desired)
            .into_iter()
            .map(|f| match f {
                Follow::Raise { unit, to } => format!("raise {unit} {to}"),
                Follow::Create { unit, template, to } => {
                    format!("create {unit} from {template} {to}")
                }
                Follow::Lower { unit } => format!("lower {unit}"),
            })
            .collect();
        assert_eq!(got, expected, "{name} {desired}");
    }

    #[test]
    fn starting_pulls_in_and_stopping_takes_along() {
        use JobState::*;
        let apache = [
            (
                "apache@.service",
                Inactive,
                "Requires=apache-discovery@%i.service",
            ),
            (
                "apache@8888.service",
                Inactive,
                "Requires=apache-discovery@%i.service",
            ),
            (
                "apache-discovery@.service",
                Inactive,
                "BindsTo=apache@%i.service\nWants=etcd.service",
            ),
        ];
        // fleet's documented pattern: one start creates and starts the sidekick.
        check_follow(
            &apache,
            "apache@8888.service",
            Launched,
            &["create apache-discovery@8888.service from apache-discovery@.service launched"],
        );
        // Transitively, each once, cycles included; what is wanted more is left.
        let chain = [
            ("a.service", Inactive, "Wants=b.service"),
            ("b.service", Loaded, "Requires=c.service a.service"),
            ("c.service", Launched, "BindsTo=a.service"),
        ];
        check_follow(&chain, "a.service", Launched, &["raise b.service launched"]);
        // Not launched before: nothing stops with it.
        check_follow(&chain, "a.service", Loaded, &[]);
        // A unit submitted after one that requires it takes nothing down.
        let later = [
            ("a.service", Launched, "Requires=b.service"),
            ("b.service", Inactive, ""),
        ];
        check_follow(&later, "b.service", Inactive, &[]);
        // Stopping: what requires, binds to or is part of it stops too, transitively.
        let running = [
            ("a.service", Launched, ""),
            ("b.service", Launched, "BindsTo=a.service"),
            ("c.service", Launched, "PartOf=b.service"),
            ("d.service", Launched, "Wants=a.service"),
            ("e.service", Loaded, "Requires=a.service"),
        ];
        check_follow(
            &running,
            "a.service",
            Loaded,
            &["lower b.service", "lower c.service"],
        );
        check_follow(
            &running,
            "a.service",
            Inactive,
            &["lower b.service", "lower c.service"],
        );
        check_follow(&running, "d.service", Inactive, &[]);
        // Stopped, what it requires stays wanted; what binds to it stops.
        let pair = [
            ("main.service", Launched, "Requires=side.service"),
            ("side.service", Launched, "BindsTo=main.service"),
        ];
        check_follow(&pair, "main.service", Loaded, &["lower side.service"]);
        // A relation to a unit that is no fleet unit is the machine's.
        check_follow(
            &[("a.service", Inactive, "Requires=docker.service")],
            "a.service",
            Launched,
            &[],
        );
    }

    #[test]
    fn start_after_cycles_are_found_through_the_unit() {
        let graph = |edges: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            edges
                .iter()
                .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        let g = graph(&[
            ("a.service", &["b.service", "x.service"]),
            ("b.service", &["c.service"]),
            ("c.service", &["a.service"]),
            ("d.service", &["d2.service"]),
            ("d2.service", &["d2.service"]),
        ]);
        assert_eq!(
            start_after_cycle(&g, "a.service").unwrap(),
            ["a.service", "b.service", "c.service", "a.service"]
        );
        // A cycle elsewhere is not this unit's.
        assert_eq!(start_after_cycle(&g, "d.service"), None);
        assert_eq!(start_after_cycle(&g, "x.service"), None);
        assert_eq!(
            start_after_cycle(&graph(&[("s.service", &["s.service"])]), "s.service").unwrap(),
            ["s.service", "s.service"]
        );
    }
}
