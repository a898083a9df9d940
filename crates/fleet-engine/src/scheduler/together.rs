//! Units that run on one machine because of the relations between them: a unit that
//! `Requires=`, `BindsTo=`, `Wants=`, `Requisite=` or is `PartOf=` another unit of the round
//! (systemd can satisfy these only between units of one machine). Related units form a group
//! (relations either way round, cycles included); a group is placed whole, on the machine one
//! of its units already has, or on the first machine that takes every unit of it; it moves
//! whole when one of its units is moved after a failure.

use std::collections::{BTreeMap, BTreeSet};

use fleet_unit::{JobState, MachineId};

use super::{describe, Decision, JobInfo, Refusal, Round};

/// The groups of a round: only those of two units or more.
#[derive(Debug, Default)]
pub(super) struct Groups<'a> {
    /// Per unit in a group, the group's index.
    of: BTreeMap<&'a str, usize>,
    /// Each group's units, in name order.
    members: Vec<Vec<&'a str>>,
    /// The groups decided this round (placed, or each unit told why not).
    decided: BTreeSet<usize>,
}

impl<'a> Groups<'a> {
    /// The groups of `jobs` (those not wanted inactive), joined by their `with` relations.
    pub(super) fn new(jobs: &BTreeMap<&'a str, &'a JobInfo>) -> Groups<'a> {
        let active = |name: &str| {
            jobs.get(name)
                .is_some_and(|j| j.desired != JobState::Inactive)
        };
        // Union-find over the names, by index in name order.
        let names: Vec<&'a str> = jobs.keys().copied().collect();
        let index = |name: &str| names.binary_search(&name).ok();
        let mut parent: Vec<usize> = (0..names.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, name) in names.iter().enumerate() {
            if !active(name) {
                continue;
            }
            for other in &jobs[name].with {
                let Some(j) = index(other).filter(|_| active(other)) else {
                    continue;
                };
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
        let mut by_root: BTreeMap<usize, Vec<&'a str>> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            if active(name) {
                by_root.entry(root(&mut parent, i)).or_default().push(name);
            }
        }
        let mut groups = Groups::default();
        for members in by_root.into_values().filter(|m| m.len() > 1) {
            for name in &members {
                groups.of.insert(name, groups.members.len());
            }
            groups.members.push(members);
        }
        groups
    }

    /// The units of `name`'s group, itself included; `None` when it is in none.
    pub(super) fn of(&self, name: &str) -> Option<&[&'a str]> {
        self.of.get(name).map(|i| self.members[*i].as_slice())
    }

    /// Whether `name`'s group is yet to be decided this round; from now on it is.
    fn first_look(&mut self, name: &str) -> bool {
        self.of
            .get(name)
            .is_some_and(|group| self.decided.insert(*group))
    }

    /// Whether `a` and `b` are in one group.
    pub(super) fn together(&self, a: &str, b: &str) -> bool {
        self.of.get(a).is_some_and(|i| self.of.get(b) == Some(i))
    }
}

impl<'a> Round<'a> {
    /// Pass 1, after the units that must leave: a unit moved after a failure takes its group
    /// with it (they are placed again together, where none of them failed).
    pub(super) fn move_groups_with_their_evicted(&mut self) {
        let evicted: Vec<&'a str> = self.evicted.iter().copied().collect();
        for name in evicted {
            let members: Vec<&'a str> = self.groups.of(name).unwrap_or_default().to_vec();
            for other in members {
                let Some(machine) = self.placement.get(other).cloned() else {
                    continue;
                };
                self.release(other);
                self.decisions.push(Decision::Unplace {
                    unit: other.to_owned(),
                    machine,
                    reason: format!("moves with {name}, which runs with it"),
                });
            }
        }
    }

    /// Pass 2 for a unit of a group: the group's unplaced units go where one of them is, or
    /// to the first machine that takes them all (least loaded first; machines where one of
    /// them failed lately last), or none is placed and each says why.
    pub(super) fn place_group(&mut self, name: &'a str) {
        if !self.groups.first_look(name) {
            return;
        }
        let members: Vec<&'a str> = self.groups.of(name).unwrap_or_default().to_vec();
        let unplaced: Vec<&'a str> = members
            .iter()
            .copied()
            .filter(|m| !self.placement.contains_key(m))
            .collect();
        if let Some((waiting, why)) = self.waiting_in(&members) {
            for unit in &unplaced {
                let reason = match *unit == waiting {
                    true => why.clone(),
                    false => format!("waiting with {waiting}, which runs with it: {why}"),
                };
                self.decisions.push(Decision::Unplaceable {
                    unit: (*unit).to_owned(),
                    reason,
                });
            }
            return;
        }
        let mut refusals: Vec<(MachineId, &'a str, Refusal)> = Vec::new();
        for machine in self.group_candidates(&members) {
            let Some(info) = self.machines.get(&machine).copied() else {
                continue;
            };
            let mut assigned = Vec::new();
            let mut refused = None;
            for unit in &unplaced {
                match self.refusal(self.jobs[unit], info) {
                    None => {
                        self.assign(unit, machine.clone());
                        assigned.push(*unit);
                    }
                    Some(refusal) => {
                        refused = Some((*unit, refusal));
                        break;
                    }
                }
            }
            match refused {
                None => {
                    for unit in assigned {
                        self.decisions.push(Decision::Place {
                            unit: unit.to_owned(),
                            machine: machine.clone(),
                        });
                    }
                    return;
                }
                Some((unit, refusal)) => {
                    for placed in assigned {
                        self.release(placed);
                    }
                    refusals.push((machine, unit, refusal));
                }
            }
        }
        let reason = explain_group(&members, &refusals);
        for unit in unplaced {
            self.decisions.push(Decision::Unplaceable {
                unit: unit.to_owned(),
                reason: reason.clone(),
            });
        }
    }

    /// A unit of the group that must wait (moved after a failure, its old machine still has
    /// it), and why: the whole group waits with it.
    fn waiting_in(&self, members: &[&'a str]) -> Option<(&'a str, String)> {
        members.iter().find_map(|unit| {
            let job = self.jobs[unit];
            let why = match self.evicted.contains(unit) {
                true => job
                    .evict
                    .clone()
                    .map(|why| format!("{why}; waiting for it to stop there")),
                false => job.hold.clone(),
            };
            why.map(|why| (*unit, why))
        })
    }

    /// Where the group may go: the machine one of its units is on; else every machine,
    /// least loaded first, those where one of its units failed lately last.
    fn group_candidates(&self, members: &[&'a str]) -> Vec<MachineId> {
        if let Some(machine) = members.iter().find_map(|m| self.placement.get(m)) {
            return vec![machine.clone()];
        }
        let avoid: BTreeSet<&MachineId> = members
            .iter()
            .flat_map(|m| self.jobs[m].avoid.iter())
            .collect();
        let by_load = self.by_load.iter().map(|(_, m)| *m);
        let fresh = by_load.clone().filter(|m| !avoid.contains(m));
        let failed_on = by_load.filter(|m| avoid.contains(m));
        fresh.chain(failed_on).cloned().collect()
    }
}

/// Why no machine takes the group: per machine, the first of its units refused and why.
fn explain_group(members: &[&str], refusals: &[(MachineId, &str, Refusal)]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = refusals
        .iter()
        .take(SHOWN)
        .map(|(machine, unit, refusal)| format!("{machine}: {unit} {}", describe(refusal)))
        .collect();
    if refusals.len() > SHOWN {
        parts.push(format!("and {} more", refusals.len() - SHOWN));
    }
    let group = members.join(", ");
    match parts.is_empty() {
        true => format!("the units {group} run on one machine (Requires=, BindsTo=, Wants=, Requisite=, PartOf=), and there is none"),
        false => format!(
            "the units {group} run on one machine (Requires=, BindsTo=, Wants=, Requisite=, PartOf=), and none takes them all ({})",
            parts.join("; ")
        ),
    }
}
