//! Where units go: a pure function of the machines and the jobs (with their current placement),
//! returning decisions. fleet's rules (`AbleToRun`, least-loaded placement), made
//! deterministic (units in name order, ties by machine ID) and explained: every unit that cannot
//! be placed gets a reason a user can act on.

use std::collections::{BTreeMap, BTreeSet};

use fleet_unit::glob::glob_match;
use fleet_unit::{metadata_satisfies, Constraints, JobState, MachineId};

mod together;
use together::Groups;

/// A machine as the scheduler sees it (metadata: configured and dynamic, merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    pub id: MachineId,
    pub metadata: BTreeMap<String, String>,
}

/// A job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub name: String,
    pub desired: JobState,
    pub constraints: Constraints,
    /// Where the engine placed it before this round.
    pub placed: Option<MachineId>,
    /// It failed where it is placed and is due to move: why (it leaves its machine this
    /// round, and is placed again once that machine no longer has it).
    pub evict: Option<String>,
    /// Not to be placed yet, and why (the machine it left still has it).
    pub hold: Option<String>,
    /// Machines where it failed lately: taken only when no other machine can take it.
    pub avoid: BTreeSet<MachineId>,
    /// The units it names in `Requires=`, `BindsTo=`, `Wants=`, `Requisite=` or `PartOf=`:
    /// those that are jobs of the round run on one machine with it, and every unit related to
    /// those (a group, cycles included, placed whole).
    pub with: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Place {
        unit: String,
        machine: MachineId,
    },
    Unplace {
        unit: String,
        machine: MachineId,
        reason: String,
    },
    Unplaceable {
        unit: String,
        reason: String,
    },
}

/// Why a machine cannot take a unit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Refusal {
    OtherMachine(String),
    Metadata,
    PeerNotPlaced(String),
    PeerElsewhere(String),
    /// A unit of its group (related by `Requires=`...) is on another machine.
    GroupElsewhere(String),
    Conflict(String),
    ReplacedBy(String),
}

/// The decisions of one round. Global jobs are left to the agents.
pub fn schedule(machines: &[MachineInfo], jobs: &[JobInfo]) -> Vec<Decision> {
    let mut round = Round::new(machines, jobs);
    round.unplace_what_no_longer_fits();
    round.place_the_rest();
    round.decisions
}

struct Round<'a> {
    machines: BTreeMap<&'a MachineId, &'a MachineInfo>,
    jobs: BTreeMap<&'a str, &'a JobInfo>,
    /// Unit → machine, as decided so far this round.
    placement: BTreeMap<&'a str, MachineId>,
    /// The same, inverted: the units on each machine.
    hosted: BTreeMap<MachineId, BTreeSet<&'a str>>,
    /// Of those, the units that hold `Conflicts=` or `Replaces=` patterns: the only ones that
    /// can keep a unit without patterns of its own out, so checking one of a machine's
    /// thousand units against it costs what the few constrained ones cost.
    constrained: BTreeMap<MachineId, BTreeSet<&'a str>>,
    /// The machines of the cluster in placement order: fewest units first, ties by ID.
    by_load: BTreeSet<(usize, &'a MachineId)>,
    conflicts: ConflictIndex<'a>,
    /// Units moved off their machine this round: placed again once it no longer has them.
    evicted: BTreeSet<&'a str>,
    /// The units that run on one machine because of the relations between them.
    groups: Groups<'a>,
    decisions: Vec<Decision>,
}

/// Where `Conflicts=` keeps a unit out, kept as placements change, so that choosing a machine
/// for one of 4,000 mutually conflicting units does not look at every unit of every machine.
/// Patterns are few (units are instances of a few templates): per distinct pattern, the
/// machines hosting units it matches and the machines hosting units that hold it.
#[derive(Default)]
struct ConflictIndex<'a> {
    /// Per job: the patterns it holds, and the patterns that match its name (as indexes).
    of_job: BTreeMap<&'a str, (Vec<usize>, Vec<usize>)>,
    matching: Vec<BTreeMap<MachineId, usize>>,
    holding: Vec<BTreeMap<MachineId, usize>>,
}

impl<'a> ConflictIndex<'a> {
    fn new(jobs: &BTreeMap<&'a str, &'a JobInfo>) -> ConflictIndex<'a> {
        let patterns: BTreeSet<&str> = jobs
            .values()
            .flat_map(|j| j.constraints.conflicts.iter().map(String::as_str))
            .collect();
        let patterns: Vec<&str> = patterns.into_iter().collect();
        let index_of = |p: &str| patterns.binary_search(&p).ok();
        let of_job = jobs
            .iter()
            .map(|(name, job)| {
                let holds = job
                    .constraints
                    .conflicts
                    .iter()
                    .filter_map(|p| index_of(p))
                    .collect();
                let matched_by = (0..patterns.len())
                    .filter(|i| glob_match(patterns[*i], name).unwrap_or(false))
                    .collect();
                (*name, (holds, matched_by))
            })
            .collect();
        ConflictIndex {
            of_job,
            matching: vec![BTreeMap::new(); patterns.len()],
            holding: vec![BTreeMap::new(); patterns.len()],
        }
    }

    /// Counts `name` on `machine` (`+1`) or takes it off (`-1`).
    fn count(&mut self, name: &str, machine: &MachineId, add: bool) {
        let Some((holds, matched_by)) = self.of_job.get(name) else {
            return;
        };
        for p in holds {
            bump(&mut self.holding[*p], machine, add);
        }
        for p in matched_by {
            bump(&mut self.matching[*p], machine, add);
        }
    }

    /// Whether a unit on `machine` surely conflicts with `name` (either way round).
    fn keeps_out(&self, name: &str, machine: &MachineId) -> bool {
        let Some((holds, matched_by)) = self.of_job.get(name) else {
            return false;
        };
        holds
            .iter()
            .any(|p| self.matching[*p].contains_key(machine))
            || matched_by
                .iter()
                .any(|p| self.holding[*p].contains_key(machine))
    }
}

fn bump(table: &mut BTreeMap<MachineId, usize>, machine: &MachineId, add: bool) {
    match add {
        true => *table.entry(machine.clone()).or_default() += 1,
        false => {
            if let Some(count) = table.get_mut(machine) {
                *count -= 1;
                if *count == 0 {
                    table.remove(machine);
                }
            }
        }
    }
}

impl<'a> Round<'a> {
    fn new(machines: &'a [MachineInfo], jobs: &'a [JobInfo]) -> Round<'a> {
        let jobs: BTreeMap<&str, &JobInfo> = jobs
            .iter()
            .filter(|j| !j.constraints.global)
            .map(|j| (j.name.as_str(), j))
            .collect();
        let conflicts = ConflictIndex::new(&jobs);
        let groups = Groups::new(&jobs);
        let mut round = Round {
            groups,
            machines: machines.iter().map(|m| (&m.id, m)).collect(),
            conflicts,
            jobs,
            placement: BTreeMap::new(),
            hosted: BTreeMap::new(),
            constrained: BTreeMap::new(),
            by_load: machines.iter().map(|m| (0, &m.id)).collect(),
            evicted: BTreeSet::new(),
            decisions: Vec::new(),
        };
        let placed: Vec<(&'a str, MachineId)> = round
            .jobs
            .values()
            .filter_map(|j| j.placed.clone().map(|m| (j.name.as_str(), m)))
            .collect();
        for (name, machine) in placed {
            round.assign(name, machine);
        }
        round
    }

    /// Records `name` on `machine`, keeping the machines' order by load.
    fn assign(&mut self, name: &'a str, machine: MachineId) {
        let units = self.hosted.entry(machine.clone()).or_default();
        if let Some((id, _)) = self.machines.get_key_value(&machine) {
            self.by_load.remove(&(units.len(), *id));
            self.by_load.insert((units.len() + 1, *id));
        }
        units.insert(name);
        if self.jobs.get(name).is_some_and(|j| holds_patterns(j)) {
            self.constrained
                .entry(machine.clone())
                .or_default()
                .insert(name);
        }
        self.conflicts.count(name, &machine, true);
        self.placement.insert(name, machine);
    }

    /// Takes `name` off its machine.
    fn release(&mut self, name: &str) {
        let Some(machine) = self.placement.remove(name) else {
            return;
        };
        let Some(units) = self.hosted.get_mut(&machine) else {
            return;
        };
        if let Some((id, _)) = self.machines.get_key_value(&machine) {
            self.by_load.remove(&(units.len(), *id));
            self.by_load.insert((units.len() - 1, *id));
        }
        units.remove(name);
        if let Some(constrained) = self.constrained.get_mut(&machine) {
            constrained.remove(name);
        }
        self.conflicts.count(name, &machine, false);
    }

    /// Pass 1: placed units that must leave their machine.
    fn unplace_what_no_longer_fits(&mut self) {
        let placed: Vec<(&str, MachineId)> = self
            .placement
            .iter()
            .map(|(name, machine)| (*name, machine.clone()))
            .collect();
        for (name, machine) in placed {
            let job = self.jobs[name];
            let reason = if job.desired == JobState::Inactive {
                Some("desired state is inactive".to_owned())
            } else if let Some(why) = &job.evict {
                self.evicted.insert(name);
                Some(why.clone())
            } else if !self.machines.contains_key(&machine) {
                Some(format!("machine {machine} went away"))
            } else {
                self.refusal(job, self.machines[&machine])
                    .map(|r| format!("no longer fits machine {machine}: {}", describe(&r)))
            };
            if let Some(reason) = reason {
                self.release(name);
                self.decisions.push(Decision::Unplace {
                    unit: name.to_owned(),
                    machine,
                    reason,
                });
            }
        }
        self.move_groups_with_their_evicted();
    }

    /// Pass 2: every unplaced unit that should run, in name order; a unit replaced by one just
    /// placed goes back into the queue.
    fn place_the_rest(&mut self) {
        let mut queue: Vec<&str> = self
            .jobs
            .values()
            .filter(|j| {
                j.desired != JobState::Inactive && !self.placement.contains_key(j.name.as_str())
            })
            .map(|j| j.name.as_str())
            .collect();
        queue.reverse();
        let mut requeued = BTreeSet::new();
        while let Some(name) = queue.pop() {
            let job = self.jobs[name];
            if self.placement.contains_key(name) {
                // Placed with its group.
                continue;
            }
            if self.groups.of(name).is_some() {
                self.place_group(name);
                continue;
            }
            let waiting = match (self.evicted.contains(name), &job.hold) {
                (true, _) => job
                    .evict
                    .clone()
                    .map(|why| format!("{why}; waiting for it to stop there")),
                (false, hold) => hold.clone(),
            };
            if let Some(reason) = waiting {
                self.decisions.push(Decision::Unplaceable {
                    unit: name.to_owned(),
                    reason,
                });
                continue;
            }
            match self.choose(job) {
                Ok(machine) => {
                    for replaced in self.replaced_on(job, &machine) {
                        self.release(replaced);
                        self.decisions.push(Decision::Unplace {
                            unit: replaced.to_owned(),
                            machine: machine.clone(),
                            reason: format!("replaced by {name}"),
                        });
                        if requeued.insert(replaced) {
                            queue.push(replaced);
                        }
                    }
                    self.assign(name, machine.clone());
                    self.decisions.push(Decision::Place {
                        unit: name.to_owned(),
                        machine,
                    });
                }
                Err(reason) => self.decisions.push(Decision::Unplaceable {
                    unit: name.to_owned(),
                    reason,
                }),
            }
        }
    }

    /// The least-loaded machine that can take `job` (machines hosting a unit it replaces
    /// first), or why none can.
    fn choose(&self, job: &JobInfo) -> Result<MachineId, String> {
        if self.machines.is_empty() {
            return Err("no machines in the cluster".into());
        }
        // Where its MachineOf peers are is the only place it can go: try that first, and
        // look at every machine only to explain a refusal.
        if let Some(machine) = self.peers_machine(job) {
            if self.refusal(job, machine).is_none() {
                return Ok(machine.id.clone());
            }
        }
        let replacing: Vec<&MachineId> = match job.constraints.replaces.is_empty() {
            true => Vec::new(),
            false => self
                .by_load
                .iter()
                .map(|(_, m)| *m)
                .filter(|m| !self.replaced_on(job, m).is_empty())
                .collect(),
        };
        // Machines where it failed lately come last: the unit goes back to one only when no
        // other machine can take it.
        let by_load = self
            .by_load
            .iter()
            .map(|(_, m)| *m)
            .filter(|m| !replacing.contains(m));
        let fresh = by_load.clone().filter(|m| !job.avoid.contains(*m));
        let failed_on = by_load.filter(|m| job.avoid.contains(*m));
        let in_order = replacing.iter().copied().chain(fresh).chain(failed_on);
        // The first machine that takes it, passing over those a conflict surely keeps it out
        // of; the refusals of every machine are gathered only to explain a failure.
        for id in in_order.clone() {
            if self.conflicts.keeps_out(&job.name, id) {
                continue;
            }
            if self.refusal(job, self.machines[id]).is_none() {
                return Ok(id.clone());
            }
        }
        let mut refusals = Vec::new();
        for id in in_order {
            match self.refusal(job, self.machines[id]) {
                None => return Ok(id.clone()),
                Some(refusal) => refusals.push((id.clone(), refusal)),
            }
        }
        Err(explain(job, &refusals))
    }

    /// The machine of `job`'s first MachineOf peer, if that peer is placed on a machine of
    /// the cluster.
    fn peers_machine(&self, job: &JobInfo) -> Option<&'a MachineInfo> {
        let peer = job.constraints.peers.first()?;
        let machine = self.placement.get(peer.as_str())?;
        self.machines.get(machine).copied()
    }

    /// Units on `machine` that `job` replaces.
    fn replaced_on(&self, job: &JobInfo, machine: &MachineId) -> Vec<&'a str> {
        if job.constraints.replaces.is_empty() {
            return Vec::new();
        }
        self.hosted
            .get(machine)
            .into_iter()
            .flatten()
            .filter(|name| **name != job.name && job.constraints.replaces_unit(name))
            .copied()
            .collect()
    }

    /// fleet's `AbleToRun`: why `machine` cannot take `job`, if it cannot.
    fn refusal(&self, job: &JobInfo, machine: &MachineInfo) -> Option<Refusal> {
        let c = &job.constraints;
        if let Some(id) = &c.machine_id {
            if !machine.id.matches(id) {
                return Some(Refusal::OtherMachine(id.clone()));
            }
        }
        if !metadata_satisfies(&machine.metadata, &c.metadata) {
            return Some(Refusal::Metadata);
        }
        for peer in &c.peers {
            match self.placement.get(peer.as_str()) {
                // A peer of its group is placed with it.
                None if self.groups.together(&job.name, peer) => {}
                None => return Some(Refusal::PeerNotPlaced(peer.clone())),
                Some(m) if *m != machine.id => return Some(Refusal::PeerElsewhere(peer.clone())),
                Some(_) => {}
            }
        }
        for other in self.groups.of(&job.name).into_iter().flatten() {
            match self.placement.get(*other) {
                Some(m) if *other != job.name && *m != machine.id => {
                    return Some(Refusal::GroupElsewhere((*other).to_owned()))
                }
                _ => {}
            }
        }
        // A unit with patterns of its own is checked against every unit there; one without,
        // only against those holding patterns (no other can refuse it).
        let others = match c.conflicts.is_empty() {
            true => self.constrained.get(&machine.id),
            false => self.hosted.get(&machine.id),
        };
        for other in others.into_iter().flatten() {
            if *other == job.name {
                continue;
            }
            let other_constraints = &self.jobs[other].constraints;
            if c.conflicts_with(other) || other_constraints.conflicts_with(&job.name) {
                return Some(Refusal::Conflict((*other).to_owned()));
            }
            if other_constraints.replaces_unit(&job.name) {
                return Some(Refusal::ReplacedBy((*other).to_owned()));
            }
        }
        None
    }
}

/// Whether a unit holds `Conflicts=` or `Replaces=` patterns.
fn holds_patterns(job: &JobInfo) -> bool {
    !job.constraints.conflicts.is_empty() || !job.constraints.replaces.is_empty()
}

fn describe(refusal: &Refusal) -> String {
    match refusal {
        Refusal::OtherMachine(id) => format!("requires machine {id}"),
        Refusal::Metadata => "lacks the required metadata".into(),
        Refusal::PeerNotPlaced(peer) => format!("MachineOf unit {peer} is not placed"),
        Refusal::PeerElsewhere(peer) => format!("MachineOf unit {peer} is elsewhere"),
        Refusal::GroupElsewhere(other) => format!("runs with {other}, which is elsewhere"),
        Refusal::Conflict(other) => format!("conflicts with {other}"),
        Refusal::ReplacedBy(other) => format!("replaced by {other}"),
    }
}

/// One sentence for why no machine can take `job`.
fn explain(job: &JobInfo, refusals: &[(MachineId, Refusal)]) -> String {
    let first = std::mem::discriminant(&refusals[0].1);
    if refusals
        .iter()
        .all(|(_, r)| std::mem::discriminant(r) == first)
    {
        match &refusals[0].1 {
            Refusal::OtherMachine(id) => return format!("no machine with ID {id}"),
            Refusal::Metadata => {
                return format!("no machine has {}", metadata_text(&job.constraints))
            }
            Refusal::PeerNotPlaced(peer) => {
                return format!("waiting for MachineOf unit {peer} to be placed")
            }
            Refusal::Conflict(_) => {
                let others: BTreeSet<&str> = refusals
                    .iter()
                    .filter_map(|(_, r)| match r {
                        Refusal::Conflict(o) => Some(o.as_str()),
                        _ => None,
                    })
                    .collect();
                let others: Vec<&str> = others.into_iter().collect();
                return format!("conflicts with {} on every machine", others.join(", "));
            }
            _ => {}
        }
    }
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = refusals
        .iter()
        .take(SHOWN)
        .map(|(machine, refusal)| format!("{machine}: {}", describe(refusal)))
        .collect();
    if refusals.len() > SHOWN {
        parts.push(format!("and {} more", refusals.len() - SHOWN));
    }
    format!("no machine fits ({})", parts.join("; "))
}

/// `region=eu or region=us and disk=ssd`.
fn metadata_text(constraints: &Constraints) -> String {
    constraints
        .metadata
        .iter()
        .map(|(key, values)| {
            values
                .iter()
                .map(|v| format!("{key}={v}"))
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use fleet_unit::{Requirements, UnitFile};

    use super::*;

    /// `"m1"` or `"m1 region=eu disk=ssd"`.
    fn machine(spec: &str) -> MachineInfo {
        let mut words = spec.split_whitespace();
        let id = MachineId::new(words.next().unwrap()).unwrap();
        let metadata = words
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        MachineInfo { id, metadata }
    }

    /// `"a.service launched @m1 | Conflicts=b* | MachineOf=c.service"`: name, desired state,
    /// optional placement, then [X-Fleet] lines.
    fn job(spec: &str) -> JobInfo {
        let mut parts = spec.split('|').map(str::trim);
        let mut head = parts.next().unwrap().split_whitespace();
        let name = head.next().unwrap().to_owned();
        let desired = head.next().unwrap().parse().unwrap();
        let mut placed = None;
        let (mut evict, mut hold, mut avoid) = (None, None, BTreeSet::new());
        for word in head {
            match word {
                "evict" => evict = Some("failed there".to_owned()),
                "hold" => hold = Some("waiting for it to stop elsewhere".to_owned()),
                _ if word.starts_with('@') => placed = MachineId::new(&word[1..]).ok(),
                _ if word.starts_with('~') => {
                    avoid.insert(MachineId::new(&word[1..]).unwrap());
                }
                other => panic!("unknown word {other} in {spec}"),
            }
        }
        // `[Unit]` relations first, then `[X-Fleet]` lines.
        let lines: Vec<&str> = parts.collect();
        let (relations, x_fleet): (Vec<&str>, Vec<&str>) = lines.into_iter().partition(|l| {
            fleet_unit::relations::PLACED_TOGETHER
                .iter()
                .any(|key| l.starts_with(&format!("{key}=")))
        });
        let mut text = String::from("[Unit]\n");
        for line in relations {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("[Service]\nExecStart=/bin/true\n[X-Fleet]\n");
        for line in x_fleet {
            text.push_str(line);
            text.push('\n');
        }
        let unit = UnitFile::parse(&text).unwrap();
        let constraints = Requirements::for_unit(&unit, &name).constraints();
        let with =
            fleet_unit::relations::related(&unit, &name, fleet_unit::relations::PLACED_TOGETHER);
        JobInfo {
            name,
            desired,
            constraints,
            placed,
            evict,
            hold,
            avoid,
            with,
        }
    }

    fn check(machines: &[&str], jobs: &[&str], expected: &[&str]) {
        let machines: Vec<MachineInfo> = machines.iter().map(|m| machine(m)).collect();
        let jobs: Vec<JobInfo> = jobs.iter().map(|j| job(j)).collect();
        let decisions: Vec<String> = schedule(&machines, &jobs)
            .into_iter()
            .map(|d| match d {
                Decision::Place { unit, machine } => format!("place {unit} {machine}"),
                Decision::Unplace {
                    unit,
                    machine,
                    reason,
                } => format!("unplace {unit} {machine}: {reason}"),
                Decision::Unplaceable { unit, reason } => format!("unplaceable {unit}: {reason}"),
            })
            .collect();
        assert_eq!(decisions, expected, "machines {machines:?}");
    }

    #[test]
    fn least_loaded_with_deterministic_ties() {
        check(
            &["m2", "m1", "m3"],
            &[
                "a.service launched",
                "b.service loaded",
                "c.service launched",
                "d.service launched",
                "off.service inactive",
            ],
            &[
                "place a.service m1",
                "place b.service m2",
                "place c.service m3",
                "place d.service m1",
            ],
        );
        check(
            &["m1", "m2"],
            &["x.service launched @m1", "y.service launched"],
            &["place y.service m2"],
        );
        check(
            &[],
            &["a.service launched"],
            &["unplaceable a.service: no machines in the cluster"],
        );
    }

    #[test]
    fn machine_id_full_or_short() {
        let long = "0123456789abcdef0123456789abcdef";
        check(
            &[long, "m2"],
            &[
                "a.service launched | MachineID=01234567",
                "b.service launched | MachineID=nope",
            ],
            &[
                &format!("place a.service {long}"),
                "unplaceable b.service: no machine with ID nope",
            ],
        );
    }

    #[test]
    fn metadata_and_or() {
        check(
            &[
                "m1 region=us disk=hdd",
                "m2 region=eu disk=ssd",
                "m3 region=us disk=ssd",
            ],
            &[
                "a.service launched | MachineMetadata=region=us | MachineMetadata=disk=ssd",
                "b.service launched | MachineMetadata=\"region=eu\" \"region=ap\"",
                "c.service launched | MachineMetadata=region=mars",
            ],
            &[
                "place a.service m3",
                "place b.service m2",
                "unplaceable c.service: no machine has region=mars",
            ],
        );
    }

    #[test]
    fn machine_of_follows_its_target() {
        check(
            &["m1", "m2"],
            &[
                "db.service launched @m2",
                "side.service launched | MachineOf=db.service",
            ],
            &["place side.service m2"],
        );
        check(
            &["m1", "m2"],
            &[
                "side.service launched | MachineOf=db.service",
                "db.service inactive",
            ],
            &["unplaceable side.service: waiting for MachineOf unit db.service to be placed"],
        );
        // The target is placed in the same round, before its follower (name order): it follows.
        check(
            &["m1", "m2"],
            &[
                "a-db.service launched",
                "b-side.service launched | MachineOf=a-db.service",
            ],
            &["place a-db.service m1", "place b-side.service m1"],
        );
    }

    #[test]
    fn conflicts_both_ways_with_globs() {
        check(
            &["m1", "m2"],
            &["web@1.service launched | Conflicts=web@*.service", "web@2.service launched | Conflicts=web@*.service", "web@3.service launched | Conflicts=web@*.service"],
            &[
                "place web@1.service m1",
                "place web@2.service m2",
                "unplaceable web@3.service: conflicts with web@1.service, web@2.service on every machine",
            ],
        );
        // Only the placed unit names the conflict: it still applies to the newcomer.
        check(
            &["m1"],
            &[
                "a.service launched @m1 | Conflicts=b.service",
                "b.service launched",
            ],
            &["unplaceable b.service: conflicts with a.service on every machine"],
        );
    }

    #[test]
    fn replaces_moves_the_replaced_unit_away() {
        check(
            &["m1", "m2"],
            &[
                "old.service launched @m1",
                "new.service launched | Replaces=old.service",
            ],
            &[
                "unplace old.service m1: replaced by new.service",
                "place new.service m1",
                "place old.service m2",
            ],
        );
        check(
            &["m1"],
            &[
                "old.service launched @m1",
                "new.service launched | Replaces=old.service",
            ],
            &[
                "unplace old.service m1: replaced by new.service",
                "place new.service m1",
                "unplaceable old.service: no machine fits (m1: replaced by new.service)",
            ],
        );
    }

    #[test]
    fn placed_units_leave_when_they_must() {
        check(
            &["m1", "m2"],
            &[
                "a.service inactive @m1",
                "b.service launched @gone",
                "c.service launched @m1 | MachineMetadata=role=db",
            ],
            &[
                "unplace a.service m1: desired state is inactive",
                "unplace b.service gone: machine gone went away",
                "unplace c.service m1: no longer fits machine m1: lacks the required metadata",
                "place b.service m1",
                "unplaceable c.service: no machine has role=db",
            ],
        );
    }

    #[test]
    fn failed_units_move_and_avoid_where_they_failed() {
        let rows: &[(&[&str], &[&str], &[&str])] = &[
            // Due to move: it leaves its machine, and waits for it to stop there.
            (
                &["m1", "m2"],
                &["a.service launched @m1 evict ~m1"],
                &[
                    "unplace a.service m1: failed there",
                    "unplaceable a.service: failed there; waiting for it to stop there",
                ],
            ),
            // Stopped there: placed where it has not failed, even on the busier machine.
            (
                &["m1", "m2"],
                &["a.service launched ~m1", "b.service launched @m2"],
                &["place a.service m2"],
            ),
            (
                &["m1", "m2"],
                &["a.service launched ~m1 ~m2", "b.service launched @m2"],
                &["place a.service m1"],
            ),
            // The only machine: back where it failed.
            (
                &["m1"],
                &["a.service launched ~m1"],
                &["place a.service m1"],
            ),
            // Held while the machine it left still has it.
            (
                &["m1", "m2"],
                &["a.service launched hold ~m1"],
                &["unplaceable a.service: waiting for it to stop elsewhere"],
            ),
            // Constraints still hold: a machine it may not run on is no choice.
            (
                &["m1 role=db", "m2"],
                &["a.service launched ~m1 | MachineMetadata=role=db"],
                &["place a.service m1"],
            ),
        ];
        for (machines, jobs, expected) in rows {
            check(machines, jobs, expected);
        }
    }

    #[test]
    fn global_units_are_left_to_agents() {
        check(&["m1"], &["g.service launched | Global=true"], &[]);
    }

    #[test]
    fn mixed_refusals_are_listed_per_machine() {
        check(
            &["m1 region=eu", "m2 region=us", "m3 region=us"],
            &["a.service launched @m3", "b.service launched | MachineMetadata=region=us | Conflicts=a.service | MachineOf=c.service", "c.service launched @m3"],
            &["unplaceable b.service: no machine fits (m1: lacks the required metadata; m2: MachineOf unit c.service is elsewhere; m3: conflicts with a.service)"],
        );
    }

    #[test]
    fn related_units_are_placed_together() {
        let group = "the units a.service, b.service run on one machine (Requires=, BindsTo=, Wants=, Requisite=, PartOf=), and none takes them all";
        // The sidekick pattern: a group goes to the least-loaded machine that takes it all.
        check(
            &["m1", "m2"],
            &[
                "apache@1.service launched",
                "disc@1.service launched | BindsTo=apache@%i.service",
                "other.service launched @m1",
            ],
            &["place apache@1.service m2", "place disc@1.service m2"],
        );
        // One of it placed: the rest follows it.
        check(
            &["m1", "m2"],
            &[
                "a.service launched @m2",
                "b.service launched | Requires=a.service",
            ],
            &["place b.service m2"],
        );
        // A cycle is one group.
        check(
            &["m1", "m2"],
            &[
                "a.service launched | Wants=b.service",
                "b.service launched | Wants=a.service",
                "c.service launched @m1",
            ],
            &["place a.service m2", "place b.service m2"],
        );
        // Units that are not fleet units are the machine's business.
        check(
            &["m1"],
            &["a.service launched | Requires=docker.service network-online.target"],
            &["place a.service m1"],
        );
        // No machine takes the group: each unit says which one refused where.
        check(
            &["m1 disk=ssd", "m2"],
            &[
                "a.service launched | Requires=b.service | MachineMetadata=disk=ssd",
                "b.service launched | MachineMetadata=disk=hdd",
            ],
            &[
                &format!("unplaceable a.service: {group} (m1: b.service lacks the required metadata; m2: a.service lacks the required metadata)"),
                &format!("unplaceable b.service: {group} (m1: b.service lacks the required metadata; m2: a.service lacks the required metadata)"),
            ],
        );
        // Units of a group placed apart (the relation came later) are brought together.
        check(
            &["m1", "m2"],
            &["a.service launched @m1", "b.service launched @m2 | PartOf=a.service"],
            &[
                "unplace a.service m1: no longer fits machine m1: runs with b.service, which is elsewhere",
                "place a.service m2",
            ],
        );
        // A unit wanted inactive is in no group.
        check(
            &["m1", "m2"],
            &[
                "a.service inactive",
                "b.service launched | Requires=a.service",
                "c.service launched",
            ],
            &["place b.service m1", "place c.service m2"],
        );
        // A unit moved after a failure takes its group along, and the group waits with it.
        check(
            &["m1", "m2"],
            &[
                "a.service launched @m1 evict ~m1",
                "b.service launched @m1 | BindsTo=a.service",
            ],
            &[
                "unplace a.service m1: failed there",
                "unplace b.service m1: moves with a.service, which runs with it",
                "unplaceable a.service: failed there; waiting for it to stop there",
                "unplaceable b.service: waiting with a.service, which runs with it: failed there; waiting for it to stop there",
            ],
        );
        // Then placed together where none of it failed.
        check(
            &["m1", "m2"],
            &[
                "a.service launched ~m1",
                "b.service launched | BindsTo=a.service",
            ],
            &["place a.service m2", "place b.service m2"],
        );
    }
}
