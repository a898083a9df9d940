//! The agent's decisions as pure functions, tested table by table like the scheduler's: which
//! units this machine should have ([`units_here`]: those placed here, then the global units it
//! qualifies for), and what to do about each ([`plan`]) given what the machine has.

use std::collections::{BTreeMap, BTreeSet};

use fleet_registry::records::JobRecord;
use fleet_unit::{Constraints, JobState, Machine, Requirements, UnitFile, UnitHash, UnitName};

use crate::jobs::Work;

/// A unit this machine should have: what the registry wants of it, and its file.
pub type Wanted = BTreeMap<UnitName, (JobRecord, UnitFile)>;

/// The units `machine` should have: `placed` (the engine put them here), then the global units
/// in name order whose metadata the machine has and that conflict (either way) with none of
/// the units taken before them. Inactive global units are nowhere.
pub fn units_here(
    machine: &Machine,
    placed: Vec<(UnitName, JobRecord, UnitFile)>,
    global: Vec<(UnitName, JobRecord, UnitFile)>,
) -> Wanted {
    let mut wanted = Wanted::new();
    let mut constraints: BTreeMap<UnitName, Constraints> = BTreeMap::new();
    for (name, record, unit) in placed {
        constraints.insert(
            name.clone(),
            Requirements::for_unit(&unit, name.as_str()).constraints(),
        );
        wanted.insert(name, (record, unit));
    }
    for (name, record, unit) in global {
        if record.desired == JobState::Inactive {
            continue;
        }
        let own = Requirements::for_unit(&unit, name.as_str()).constraints();
        if !machine.has_metadata(&own.metadata) {
            continue;
        }
        let conflicting = constraints.iter().find(|(other, theirs)| {
            own.conflicts_with(other.as_str()) || theirs.conflicts_with(name.as_str())
        });
        if let Some((other, _)) = conflicting {
            tracing::debug!(unit = %name, conflicts_with = %other, "agent: global unit not run here");
            continue;
        }
        constraints.insert(name.clone(), own);
        wanted.insert(name, (record, unit));
    }
    wanted
}

/// What the machine has, as far as a plan needs to know.
pub struct Local<'a> {
    /// Loaded units with the hash of the file loaded.
    pub loaded: &'a BTreeMap<UnitName, UnitHash>,
    /// Units whose load just failed: nothing more is done with them this round.
    pub failed_loads: &'a BTreeSet<UnitName>,
    /// Units placed here whose unit file cannot be read from the registry (missing, or a
    /// corrupt record): what runs of them is left as it is, never unloaded for it.
    pub unreadable: &'a BTreeSet<UnitName>,
    /// Units the agent started (and has not seen stop).
    pub started: &'a dyn Fn(&UnitName) -> bool,
    /// Units the fence stopped while the lease is taken for lost: not started again.
    pub fenced: &'a dyn Fn(&UnitName) -> bool,
    /// Units whose start the manager refused (tried again when they change).
    pub refused: &'a dyn Fn(&UnitName) -> bool,
}

/// What a round does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Per unit: the work, and whether the unit stops when the machine is cut off.
    pub work: BTreeMap<UnitName, (Work, bool)>,
    /// Started units that stop when the machine is cut off (the fence's to stop).
    pub fenced_if_cut_off: BTreeSet<UnitName>,
}

/// The work that makes `local` what `wanted` says: unload what is not wanted, replace what
/// changed (started again if launched and not fenced), start what is launched and not
/// started (unless fenced or refused), stop what is started but no longer launched.
pub fn plan(wanted: &Wanted, local: &Local<'_>) -> Plan {
    let mut plan = Plan::default();
    let unwanted = local
        .loaded
        .keys()
        .filter(|n| !wanted.contains_key(*n) && !local.unreadable.contains(*n));
    for name in unwanted {
        plan.work.insert(name.clone(), (Work::Unload, false));
    }
    for (name, (record, unit)) in wanted {
        if local.failed_loads.contains(name) {
            continue;
        }
        let launched = record.desired == JobState::Launched;
        let swd = Requirements::for_unit(unit, name.as_str()).stops_when_disconnected();
        if swd && (local.started)(name) {
            plan.fenced_if_cut_off.insert(name.clone());
        }
        let replaced = local
            .loaded
            .get(name)
            .is_some_and(|hash| *hash != record.hash);
        let started = (local.started)(name) && !replaced;
        let fenced = (local.fenced)(name);
        let work = if replaced {
            Some(Work::Replace {
                unit: unit.clone(),
                start: launched && !fenced,
            })
        } else if launched && !started && !fenced && !(local.refused)(name) {
            Some(Work::Start)
        } else if !launched && started {
            let others = wanted
                .iter()
                .filter(|(other, (record, _))| {
                    *other != name && record.desired == JobState::Launched && (local.started)(other)
                })
                .map(|(other, _)| other.clone())
                .collect();
            Some(Work::Stop { others })
        } else {
            None
        };
        if let Some(work) = work {
            plan.work.insert(name.clone(), (work, swd));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_unit::MachineId;

    fn name(n: &str) -> UnitName {
        UnitName::new(n).unwrap()
    }

    fn unit(xfleet: &str) -> UnitFile {
        UnitFile::parse(format!(
            "[Service]
ExecStart=/bin/true
[X-Fleet]
{xfleet}
"
        ))
        .unwrap()
    }

    fn job(n: &str, desired: JobState, xfleet: &str) -> (UnitName, JobRecord, UnitFile) {
        let unit = unit(xfleet);
        let record = JobRecord {
            hash: unit.hash(),
            desired,
        };
        (name(n), record, unit)
    }

    /// Which global units a machine with `metadata` runs, beside `placed`.
    fn check_globals(
        metadata: &[(&str, &str)],
        placed: &[(&str, &str)],
        global: &[(&str, JobState, &str)],
        expected: &[&str],
    ) {
        let mut machine = Machine::new(MachineId::new("m1").unwrap());
        machine.metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let placed = placed
            .iter()
            .map(|(n, x)| job(n, JobState::Launched, x))
            .collect();
        let global = global.iter().map(|(n, d, x)| job(n, *d, x)).collect();
        let here = units_here(&machine, placed, global);
        let globals: Vec<&str> = here
            .keys()
            .map(UnitName::as_str)
            .filter(|n| n.starts_with('g'))
            .collect();
        assert_eq!(globals, expected, "{metadata:?} {:?}", here.keys());
    }

    #[test]
    fn global_units_run_where_their_metadata_and_conflicts_allow() {
        use JobState::*;
        let g = "Global=true";
        check_globals(&[], &[], &[("g1.service", Launched, g)], &["g1.service"]);
        check_globals(&[], &[], &[("g1.service", Inactive, g)], &[]);
        check_globals(&[], &[], &[("g1.service", Loaded, g)], &["g1.service"]);
        let eu = "Global=true\nMachineMetadata=region=eu";
        check_globals(
            &[("region", "eu")],
            &[],
            &[("g1.service", Launched, eu)],
            &["g1.service"],
        );
        check_globals(
            &[("region", "us")],
            &[],
            &[("g1.service", Launched, eu)],
            &[],
        );
        // A conflict with a unit placed here, either way round.
        let shy = "Global=true\nConflicts=web.service";
        check_globals(
            &[],
            &[("web.service", "")],
            &[("g1.service", Launched, shy)],
            &[],
        );
        check_globals(
            &[],
            &[("web.service", "Conflicts=g1.service")],
            &[("g1.service", Launched, g)],
            &[],
        );
        // Between global units the first in name order wins.
        let g2 = "Global=true\nConflicts=g1.service";
        check_globals(
            &[],
            &[],
            &[("g1.service", Launched, g), ("g2.service", Launched, g2)],
            &["g1.service"],
        );
    }

    struct Case {
        desired: JobState,
        /// `None`: not loaded; `Some(same)`: loaded with the same file or another.
        loaded: Option<bool>,
        started: bool,
        fenced: bool,
        refused: bool,
    }

    const CASE: Case = Case {
        desired: JobState::Launched,
        loaded: Some(true),
        started: false,
        fenced: false,
        refused: false,
    };

    /// The work planned for one unit `a.service` in the situation `case`.
    fn check(case: Case, expected: Option<&str>) {
        let (n, record, file) = job("a.service", case.desired, "");
        let wanted = Wanted::from([(n.clone(), (record.clone(), file))]);
        let other = unit("Conflicts=x.service").hash();
        let loaded: BTreeMap<UnitName, UnitHash> = case
            .loaded
            .map(|same| (n.clone(), if same { record.hash } else { other }))
            .into_iter()
            .collect();
        let (started, fenced, refused) = (case.started, case.fenced, case.refused);
        let local = Local {
            loaded: &loaded,
            failed_loads: &BTreeSet::new(),
            unreadable: &BTreeSet::new(),
            started: &move |_| started,
            fenced: &move |_| fenced,
            refused: &move |_| refused,
        };
        let planned = plan(&wanted, &local);
        let got = planned.work.get(&n).map(|(work, _)| match work {
            Work::Unload => "unload",
            Work::Replace { start: true, .. } => "replace and start",
            Work::Replace { start: false, .. } => "replace",
            Work::Start => "start",
            Work::Restart => "restart",
            Work::Stop { .. } => "stop",
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn each_unit_gets_the_work_its_situation_needs() {
        use JobState::*;
        check(CASE, Some("start"));
        check(
            Case {
                started: true,
                ..CASE
            },
            None,
        );
        check(
            Case {
                fenced: true,
                ..CASE
            },
            None,
        );
        check(
            Case {
                refused: true,
                ..CASE
            },
            None,
        );
        check(
            Case {
                loaded: Some(false),
                ..CASE
            },
            Some("replace and start"),
        );
        check(
            Case {
                loaded: Some(false),
                fenced: true,
                ..CASE
            },
            Some("replace"),
        );
        check(
            Case {
                loaded: Some(false),
                desired: Loaded,
                ..CASE
            },
            Some("replace"),
        );
        check(
            Case {
                desired: Loaded,
                ..CASE
            },
            None,
        );
        check(
            Case {
                desired: Loaded,
                started: true,
                ..CASE
            },
            Some("stop"),
        );
        check(
            Case {
                desired: Inactive,
                started: true,
                ..CASE
            },
            Some("stop"),
        );
    }

    #[test]
    fn units_no_longer_wanted_are_unloaded() {
        let loaded = BTreeMap::from([(name("old.service"), unit("").hash())]);
        let local = Local {
            loaded: &loaded,
            failed_loads: &BTreeSet::new(),
            unreadable: &BTreeSet::new(),
            started: &|_| true,
            fenced: &|_| false,
            refused: &|_| false,
        };
        let planned = plan(&Wanted::new(), &local);
        assert!(matches!(
            planned.work.get(&name("old.service")),
            Some((Work::Unload, false))
        ));
        // Placed here, but its file cannot be read from the registry: left running.
        let unreadable = BTreeSet::from([name("old.service")]);
        let local = Local {
            unreadable: &unreadable,
            ..local
        };
        assert!(plan(&Wanted::new(), &local).work.is_empty());
    }
}
