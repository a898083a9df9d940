//! The native supervisor: loads units into a units directory, starts one shim per running
//! unit, and finds them again after a restart. It holds no state a restart could lose: loaded
//! units are files in `units_dir`, running ones are shims with run directories in `run_dir`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleet_unit::{UnitFile, UnitName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::log::{rfc3339, LogFiles};
use crate::unit_files::units_in;

use super::plan::{start_plan, stop_plan, unbound, Graph};
use super::process::{session_members, signal_each};
use super::service::{Relations, Service};
use super::shim::{connect, read_state, write_state, ShimSpec, PID, SOCKET, SPEC, STATE};
use super::specifiers::SpecifierContext;
use super::status::{RunResult, SubState, UnitStatus};
use super::watchers::{Lookup, ShimWatchers};
use super::zygote::Zygote;

/// Where a supervisor keeps things and what its units are told about the machine.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub units_dir: PathBuf,
    /// The running shims' directories: in the runtime directory (memory, on most machines),
    /// as what they hold lives no longer than the processes do.
    pub run_dir: PathBuf,
    /// The units' logs, on persistent storage (see `log`).
    pub log_dir: PathBuf,
    /// The program and arguments that start a shim; the run directory is appended.
    pub shim_command: Vec<String>,
    /// Where shims are forked instead, when fleetd has one (the command is the way when
    /// the zygote cannot answer).
    pub zygote: Option<Arc<Zygote>>,
    pub machine_id: String,
    pub public_ip: String,
    pub hostname: String,
    pub boot_id: String,
    pub log_max_bytes: u64,
    /// Units of the machine outside fleet (`native_host_units=`): a unit that requires one
    /// takes it as active; any other required unit that is not loaded refuses the start.
    pub host_units: std::collections::BTreeSet<String>,
}

impl SupervisorConfig {
    /// Everything under `dir` (`units/`, `run/`, `logs/`), shims started as `shim_program
    /// shim`, no zygote, and a stand-in machine: for tests and benchmarks, which set what
    /// matters to them over it.
    pub fn under(dir: &Path, shim_program: &Path) -> SupervisorConfig {
        SupervisorConfig {
            units_dir: dir.join("units"),
            run_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            shim_command: vec![shim_program.display().to_string(), "shim".into()],
            zygote: None,
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            public_ip: String::new(),
            hostname: "host1".into(),
            boot_id: "b1".into(),
            log_max_bytes: 64 * 1024,
            host_units: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    NotLoaded(String),
    /// The start cannot happen, in systemd's words ("Unit x.service not found.").
    Refused(String),
    Io(String),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::NotLoaded(name) => write!(f, "Unit {name} not loaded."),
            SupervisorError::Refused(why) => f.write_str(why),
            SupervisorError::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SupervisorError {}

fn io(context: &str, path: &Path, e: std::io::Error) -> SupervisorError {
    SupervisorError::Io(format!("{context} {}: {e}", path.display()))
}

/// A unit as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded` or `not-found`.
    pub load: &'static str,
    pub active: &'static str,
    pub sub: &'static str,
    pub status: Option<UnitStatus>,
}

pub struct Supervisor {
    config: SupervisorConfig,
    loaded: Mutex<BTreeMap<UnitName, Loaded>>,
    watchers: ShimWatchers,
    /// Units found running on paper with no shim behind them, not yet told to the agent.
    lost: Mutex<BTreeSet<UnitName>>,
    /// Units with a start under way (systemd: a start job), counted per start that includes
    /// them: a unit bound to one of them is not stopped for it being inactive yet.
    starting: Mutex<BTreeMap<UnitName, usize>>,
    /// Every live shim is watched (`changes` was asked for): a unit without a watcher has no
    /// shim, and its run directory need not be read to know it.
    watching: std::sync::atomic::AtomicBool,
    /// One start or stop of a unit's shim at a time (two starts that both include a unit,
    /// a sidekick's and its main unit's, must not spawn two shims for it).
    shim_locks: Mutex<BTreeMap<UnitName, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// Counts a start's units as starting until the start is over, however it ends.
struct Starting<'a> {
    jobs: &'a Mutex<BTreeMap<UnitName, usize>>,
    units: Vec<UnitName>,
}

impl<'a> Starting<'a> {
    fn new(jobs: &'a Mutex<BTreeMap<UnitName, usize>>, units: Vec<UnitName>) -> Starting<'a> {
        let mut table = jobs.lock().unwrap_or_else(|e| e.into_inner());
        for unit in &units {
            *table.entry(unit.clone()).or_default() += 1;
        }
        drop(table);
        Starting { jobs, units }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut table = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for unit in &self.units {
            if let Some(count) = table.get_mut(unit) {
                *count -= 1;
                if *count == 0 {
                    table.remove(unit);
                }
            }
        }
    }
}

/// Why a unit that was running on paper is failed: found so when fleetd started.
pub const GONE_AT_START: &str = "the unit's processes were gone when fleetd started";

/// A loaded unit, with what is read of it once, when it was loaded.
#[derive(Clone)]
struct Loaded {
    unit: UnitFile,
    /// The file's hash, computed once: the agent asks for every unit's at every report.
    hash: fleet_unit::UnitHash,
    relations: Relations,
    /// `Description=`, its specifiers resolved for this machine (as systemd shows it).
    description: String,
}

impl Loaded {
    /// A unit that does not load has no relations and no description (its start fails in
    /// its shim, with the reason).
    fn new(config: &SupervisorConfig, name: &UnitName, unit: UnitFile) -> Loaded {
        let service = Service::load(&unit, &specifier_context(config, name)).ok();
        let (relations, description) = service
            .map(|service| (service.relations, service.description))
            .unwrap_or_default();
        Loaded {
            relations,
            description,
            hash: unit.hash(),
            unit,
        }
    }
}

/// Makes the unit's run directory be read again when dropped (see `ShimWatchers::invalidate`).
struct Reread<'a> {
    watchers: &'a ShimWatchers,
    name: &'a UnitName,
}

impl Drop for Reread<'_> {
    fn drop(&mut self) {
        self.watchers.invalidate(self.name);
    }
}

/// The loaded units as the planner sees them.
struct LoadedUnits<'a> {
    loaded: &'a BTreeMap<UnitName, Loaded>,
    starting: &'a BTreeMap<UnitName, usize>,
    supervisor: &'a Supervisor,
    /// Every live shim is watched: a unit without a watcher is not active.
    watching: bool,
}

impl Graph for LoadedUnits<'_> {
    fn relations(&self, name: &str) -> Option<&Relations> {
        self.loaded.get(name).map(|loaded| &loaded.relations)
    }

    /// A watched shim's last word costs nothing; only units without one (not running, as a
    /// rule) are looked up on disk, and only before every shim is watched.
    fn active(&self, name: &str) -> bool {
        let Some((name, _)) = self.loaded.get_key_value(name) else {
            return false;
        };
        self.starting.contains_key(name)
            || match self.supervisor.watchers.is_live(name) {
                Some(live) => live,
                None if self.watching => false,
                None => is_active(&self.supervisor.run_dir(name)),
            }
    }

    fn each(&self) -> Box<dyn Iterator<Item = (&str, &Relations)> + '_> {
        Box::new(
            self.loaded
                .iter()
                .map(|(name, loaded)| (name.as_str(), &loaded.relations)),
        )
    }

    fn is_host(&self, name: &str) -> bool {
        self.supervisor.config.host_units.contains(name)
    }
}

/// How long a shim may take to write its first state.
const SHIM_START: Duration = Duration::from_secs(10);
/// The longest a stop is waited for: beyond every default stop timeout of a unit.
const SHIM_STOP: Duration = Duration::from_secs(300);
/// How long a shim that no longer answers may take to exit before that is an error.
const SHIM_ENDING: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Opens the directories, reloading the units a previous run had loaded. Running shims
    /// need nothing: they are found by their run directories when asked about.
    pub fn open(config: SupervisorConfig) -> Result<Supervisor, SupervisorError> {
        for dir in [&config.units_dir, &config.run_dir, &config.log_dir] {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        }
        let loaded: BTreeMap<UnitName, Loaded> = units_in(&config.units_dir)
            .map_err(|e| io("cannot read", &config.units_dir, e))?
            .into_iter()
            .map(|(name, unit)| {
                let loaded = Loaded::new(&config, &name, unit);
                (name, loaded)
            })
            .collect();
        // A unit is re-adopted only where its shim lives; what an earlier run left without
        // one (fleetd, shims and units killed together, a crash, a reboot) is said as it is.
        let mut lost = BTreeSet::new();
        for name in loaded.keys() {
            let dir = config.run_dir.join(name.as_str());
            if let Some(status) = orphaned_status(&dir) {
                mark_lost(name, &dir, status, GONE_AT_START);
                lost.insert(name.clone());
            }
        }
        Ok(Supervisor {
            config,
            loaded: Mutex::new(loaded),
            watchers: ShimWatchers::default(),
            lost: Mutex::new(lost),
            starting: Mutex::default(),
            watching: std::sync::atomic::AtomicBool::new(false),
            shim_locks: Mutex::default(),
        })
    }

    /// The units found running on paper with no shim since last asked; they are failed now,
    /// with the reason.
    pub fn take_lost(&self) -> Vec<UnitName> {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *lost).into_iter().collect()
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, BTreeMap<UnitName, Loaded>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run directory of a unit: its shim's files.
    pub fn run_dir(&self, name: &UnitName) -> PathBuf {
        // A valid unit name is one path component, never `.` or `..`.
        self.config.run_dir.join(name.as_str())
    }

    /// The files of a unit's log.
    pub fn log_files(&self, name: &UnitName) -> LogFiles {
        LogFiles::of(&self.config.log_dir, name.as_str())
    }

    /// Writes the unit file and makes it known (replacing an earlier version).
    pub fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<(), SupervisorError> {
        crate::unit_files::write_unit_file(&self.config.units_dir, name, unit)
            .map_err(|e| SupervisorError::Io(e.to_string()))?;
        let loaded = Loaded::new(&self.config, name, unit.clone());
        self.loaded().insert(name.clone(), loaded);
        Ok(())
    }

    /// Stops the unit if it runs, then forgets it.
    pub async fn unload(&self, name: &UnitName) -> Result<(), SupervisorError> {
        self.stop_one(name).await?;
        let path = self.config.units_dir.join(name.as_str());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path, e)),
        }
        self.loaded().remove(name);
        self.watchers.remove(name);
        // What an ended shim left is of no use to anyone once its unit is gone (the log is
        // kept elsewhere), and the runtime directory is memory.
        let dir = self.run_dir(name);
        if shim_pid(&dir).is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    /// The `Description=` of a loaded unit, its specifiers resolved for this machine (as
    /// systemd shows it); `None` when it has none or does not load.
    pub fn description(&self, name: &UnitName) -> Option<String> {
        let description = self.loaded().get(name)?.description.clone();
        Some(description).filter(|d| !d.is_empty())
    }

    pub fn loaded_units(&self) -> Vec<UnitName> {
        self.loaded().keys().cloned().collect()
    }

    /// Each loaded unit with the hash of its file.
    pub fn loaded_hashes(&self) -> BTreeMap<UnitName, fleet_unit::UnitHash> {
        self.loaded()
            .iter()
            .map(|(name, loaded)| (name.clone(), loaded.hash))
            .collect()
    }

    /// Starts a unit with what it pulls in (Requires=, Wants=, BindsTo=, and units installed
    /// into it with WantedBy=/RequiredBy=), after stopping what conflicts with it, in
    /// After=/Before= order. A unit whose required, earlier-ordered unit fails is not started:
    /// it stays inactive (dead), as in systemd, with the reason (result `dependency`).
    pub async fn start(&self, name: &UnitName) -> Result<(), SupervisorError> {
        if !self.loaded().contains_key(name) {
            return Err(SupervisorError::NotLoaded(name.to_string()));
        }
        let plan = self
            .plan(|units| start_plan(units, name.as_str()))
            .map_err(SupervisorError::Refused)?;
        let units = plan
            .start
            .iter()
            .map(|unit| unit_name(unit))
            .collect::<Result<Vec<_>, _>>()?;
        let _starting = Starting::new(&self.starting, units);
        for conflicting in &plan.stop {
            self.stop_one(&unit_name(conflicting)?).await?;
        }
        let of = |table: &BTreeMap<String, Vec<String>>, unit: &UnitName| {
            table.get(unit.as_str()).cloned().unwrap_or_default()
        };
        for unit in &plan.start {
            let unit = unit_name(unit)?;
            let needed = of(&plan.needs, &unit);
            let mut failed = None;
            for earlier in of(&plan.waits, &unit) {
                let active = self.settled_active(&unit_name(&earlier)?).await;
                if !active && needed.contains(&earlier) {
                    failed = Some(earlier);
                    break;
                }
            }
            match failed {
                Some(dependency) => self.mark_dependency_failed(&unit, &dependency)?,
                None => self.start_one(&unit).await?,
            }
        }
        Ok(())
    }

    /// Stops a unit and every active unit that requires it, is bound to it or is part of it.
    pub async fn stop(&self, name: &UnitName) -> Result<(), SupervisorError> {
        for unit in self.plan(|units| stop_plan(units, name.as_str())) {
            self.stop_one(&unit_name(&unit)?).await?;
        }
        Ok(())
    }

    /// Stops the active units bound (BindsTo=) to a unit that is no longer active, as systemd
    /// does when the bound-to unit stops or fails. Call it when states change.
    pub async fn enforce_bindings(&self) -> Result<(), SupervisorError> {
        for (unit, bound_to) in self.plan(|units| unbound(units)) {
            let unit = unit_name(&unit)?;
            self.stop_one(&unit).await?;
            self.note_why_ended(
                &unit,
                &format!("Stopped: the unit it is bound to (BindsTo=) is not active: {bound_to}."),
            );
        }
        Ok(())
    }

    /// Adds `why` to the final state of a unit whose shim has ended (it stopped for another
    /// unit's sake, which its own state cannot tell).
    fn note_why_ended(&self, name: &UnitName, why: &str) {
        let dir = self.run_dir(name);
        if shim_pid(&dir).is_some() {
            return;
        }
        if let Ok(Some(mut status)) = read_state(&dir) {
            if !status.sub.is_live() && status.reason.is_none() {
                status.reason = Some(why.to_owned());
                if write_state(&dir.join(STATE), &status).is_ok() {
                    // After the write: a read that raced it is refused (a new epoch).
                    self.watchers.invalidate(name);
                }
            }
        }
    }

    /// Enforces `BindsTo=` whenever a unit's state changes, and every `period` besides, forever
    /// (run it as a task): a sidekick stops as soon as its bound unit dies, even when nobody
    /// asks.
    pub async fn keep_bindings(&self, period: Duration) {
        let mut changes = self.changes();
        loop {
            if let Err(e) = self.enforce_bindings().await {
                tracing::warn!(error = %e, "cannot stop a unit whose bound unit is gone");
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Told whenever a running unit's state changes or its shim ends. Watches the shims an
    /// earlier fleetd started, too.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<()> {
        let mut watched_all = tokio::runtime::Handle::try_current().is_ok();
        for name in self.loaded_units() {
            let dir = self.run_dir(&name);
            if let Some(shim) = shim_pid(&dir) {
                self.watchers.watch(&name, dir, shim, None);
                // Its watcher is in the table from now on, before its first status line.
                watched_all &= self.watchers.is_live(&name).is_some();
            }
        }
        self.watching
            .fetch_or(watched_all, std::sync::atomic::Ordering::AcqRel);
        self.watchers.subscribe()
    }

    /// Runs `planner` over the loaded units (under the table's lock: planners are quick and
    /// never wait).
    fn plan<T>(&self, planner: impl FnOnce(&LoadedUnits<'_>) -> T) -> T {
        let loaded = self.loaded();
        let starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        planner(&LoadedUnits {
            loaded: &loaded,
            starting: &starting,
            supervisor: self,
            watching: self.watching.load(std::sync::atomic::Ordering::Acquire),
        })
    }

    /// Waits (bounded) until a starting unit has come up or given up; whether it is active.
    async fn settled_active(&self, name: &UnitName) -> bool {
        let deadline = Instant::now() + SHIM_STOP;
        loop {
            let state = self.state(name).await;
            let sub = state.status.map_or(SubState::Dead, |s| s.sub);
            match sub {
                SubState::Running | SubState::Exited | SubState::Reload => return true,
                SubState::StartPre
                | SubState::Start
                | SubState::StartPost
                | SubState::AutoRestart
                    if Instant::now() < deadline => {}
                _ => return false,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Records that `name` was not started because `dependency` did not come up: inactive
    /// (dead), as systemd leaves a unit whose start job failed for a dependency (it never ran),
    /// with the reason.
    fn mark_dependency_failed(
        &self,
        name: &UnitName,
        dependency: &str,
    ) -> Result<(), SupervisorError> {
        let dir = self.run_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        let status = UnitStatus {
            sub: SubState::Dead,
            result: RunResult::Dependency,
            main_pid: None,
            exit: None,
            reason: Some(format!(
                "Dependency failed for {name}: {dependency} is not active."
            )),
            restarts: 0,
            since: rfc3339(SystemTime::now()),
        };
        let written =
            write_state(&dir.join(STATE), &status).map_err(|e| io("cannot write", &dir, e));
        // After the write: a read that raced it is refused (a new epoch), not kept.
        self.watchers.invalidate(name);
        written
    }

    /// The lock on `name`'s shim.
    fn shim_lock(&self, name: &UnitName) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.shim_locks.lock().unwrap_or_else(|e| e.into_inner());
        // Locks of units no one holds go, so the table stays as small as what is under way.
        locks.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        std::sync::Arc::clone(locks.entry(name.clone()).or_default())
    }

    /// Starts the unit's shim unless one runs already; returns once the shim has reported.
    async fn start_one(&self, name: &UnitName) -> Result<(), SupervisorError> {
        let lock = self.shim_lock(name);
        let _held = lock.lock().await;
        // However the start ends (done, failed, or dropped half-way), what was known of the
        // unit before it no longer holds; a new shim is watched, which this leaves alone.
        let _reread = Reread {
            watchers: &self.watchers,
            name,
        };
        self.spawn_shim(name).await
    }

    /// [`Supervisor::start_one`] under the unit's shim lock.
    async fn spawn_shim(&self, name: &UnitName) -> Result<(), SupervisorError> {
        let unit = self
            .loaded()
            .get(name)
            .map(|loaded| loaded.unit.clone())
            .ok_or_else(|| SupervisorError::NotLoaded(name.to_string()))?;
        let dir = self.run_dir(name);
        if is_active(&dir) {
            return Ok(());
        }
        // What a killed shim left running goes first: never two copies of a unit.
        self.settle_orphan(name, &dir).await;
        let before = match self.watchers.lookup(name) {
            Lookup::Settled(status) => status,
            Lookup::Watched(_) | Lookup::Unknown(_) => read_state(&dir).ok().flatten(),
        };
        self.watchers.starting(name, before);
        // A shim that has written its final state is about to exit: let it, then start anew.
        let deadline = Instant::now() + SHIM_START;
        while shim_pid(&dir).is_some() {
            if Instant::now() > deadline {
                return Err(SupervisorError::Io(format!(
                    "the previous shim of {name} did not exit within {SHIM_START:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        let _ = std::fs::remove_file(dir.join(STATE));
        let spec = ShimSpec {
            unit_name: name.to_string(),
            unit_text: unit.serialize(),
            machine_id: self.config.machine_id.clone(),
            public_ip: self.config.public_ip.clone(),
            hostname: self.config.hostname.clone(),
            boot_id: self.config.boot_id.clone(),
            log_dir: self.config.log_dir.clone(),
            log_max_bytes: self.config.log_max_bytes,
        };
        let spec_path = dir.join(SPEC);
        let json = serde_json::to_vec(&spec).map_err(|e| SupervisorError::Io(e.to_string()))?;
        std::fs::write(&spec_path, json).map_err(|e| io("cannot write", &spec_path, e))?;
        let (shim, reported) = self.launch_shim(name, &dir).await?;
        // The shim says on its standard output when it has written its first state (or
        // closes it, when it ends before): no polling of its run directory.
        let report = async {
            let mut byte = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut { reported }, &mut byte).await;
        };
        let reported = tokio::time::timeout(SHIM_START, report).await.is_ok();
        let first = read_state(&dir).ok().flatten();
        if !reported || first.is_none() {
            return Err(SupervisorError::Io(format!(
                "the shim of {name} did not report within {SHIM_START:?}"
            )));
        }
        self.watchers.watch(name, dir, shim, first);
        Ok(())
    }

    /// Starts the shim of `name` in `dir`, forked by the zygote where there is one, else
    /// executed: its PID and the pipe it reports its first state on.
    async fn launch_shim(
        &self,
        name: &UnitName,
        dir: &Path,
    ) -> Result<(u32, tokio::net::unix::pipe::Receiver), SupervisorError> {
        if let Some(zygote) = self.config.zygote.as_ref().filter(|z| z.is_working()) {
            match fork_shim(zygote, dir).await {
                Ok(launched) => return Ok(launched),
                Err(e) => tracing::warn!(
                    unit = %name,
                    error = %e,
                    zygote = zygote.pid(),
                    "the zygote cannot fork shims; executing them from now on"
                ),
            }
        }
        let (program, args) = self
            .config
            .shim_command
            .split_first()
            .ok_or_else(|| SupervisorError::Io("no shim command configured".into()))?;
        let (reading, writing) = report_pipe()?;
        let mut child = Command::new(program)
            .args(args)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(writing)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| SupervisorError::Io(format!("cannot start the shim {program}: {e}")))?;
        let shim = child
            .id()
            .ok_or_else(|| SupervisorError::Io(format!("the shim of {name} ended at once")))?;
        // Reap the shim when it ends, should it end while we still run (it outlives us
        // otherwise, re-parented to init or our own subreaper).
        tokio::spawn(async move { child.wait().await });
        Ok((shim, reading))
    }

    /// Asks the unit's shim to stop the unit and waits until the shim has gone. The shim
    /// bounds each stop step by the unit's own timeouts; this wait is bounded by `SHIM_STOP`.
    async fn stop_one(&self, name: &UnitName) -> Result<(), SupervisorError> {
        let lock = self.shim_lock(name);
        let _held = lock.lock().await;
        let dir = self.run_dir(name);
        let Some(pid) = shim_pid(&dir) else {
            self.settle_orphan(name, &dir).await;
            return Ok(());
        };
        let deadline = Instant::now() + SHIM_STOP;
        // The shim closes the connection once it has written the final state; then it only
        // flushes its log and exits.
        let stopped = tokio::time::timeout(SHIM_STOP, stop_and_hear_the_end(&dir)).await;
        match stopped {
            Ok(Ok(())) => {}
            // Gone, or going, between the look at its PID and the request (a shim closes its
            // socket once its unit has ended, then exits): nothing left to stop.
            Ok(Err(e)) => {
                if !ends_within(pid, &dir, SHIM_ENDING).await {
                    return Err(e);
                }
            }
            Err(_) => {
                return Err(SupervisorError::Io(format!(
                    "{name} did not finish stopping within {SHIM_STOP:?} (shim PID {pid})"
                )))
            }
        }
        if !ends_within(
            pid,
            &dir,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            return Err(SupervisorError::Io(format!(
                "{name} did not finish stopping within {SHIM_STOP:?} (shim PID {pid})"
            )));
        }
        self.watchers.forget(name, pid);
        Ok(())
    }

    /// What the machine knows of a unit: a watched shim's last word, or what its run
    /// directory said when last read (read again only after something happened to it).
    pub async fn state(&self, name: &UnitName) -> UnitState {
        let is_loaded = self.loaded().contains_key(name);
        let load = if is_loaded { "loaded" } else { "not-found" };
        let dir = self.run_dir(name);
        let status = match is_loaded.then(|| self.watchers.lookup(name)) {
            Some(Lookup::Watched(Some(status))) => Some(status),
            Some(Lookup::Settled(status)) => status,
            Some(Lookup::Unknown(epoch)) if shim_pid(&dir).is_none() => {
                let status = self.observed_status(name, &dir).await;
                self.watchers.settle(name, epoch, status.clone());
                status
            }
            Some(Lookup::Watched(None) | Lookup::Unknown(_)) | None => {
                self.observed_status(name, &dir).await
            }
        };
        let sub = status.as_ref().map_or(SubState::Dead, |s| s.sub);
        UnitState {
            load,
            active: sub.active(),
            sub: sub.as_str(),
            status,
        }
    }
}

impl Supervisor {
    /// A unit's status from its live shim, else the last one a shim left in its run
    /// directory, unless that says it runs: without a shim nothing runs it (the shim was
    /// killed), so it is failed, its leftover processes stopped, and the agent told.
    async fn observed_status(&self, name: &UnitName, dir: &Path) -> Option<UnitStatus> {
        if shim_pid(dir).is_some() {
            return match request(dir, "status").await {
                Ok(status) => Some(status),
                Err(_) => read_state(dir).ok().flatten(),
            };
        }
        match self.settle_orphan(name, dir).await {
            Some(failed) => Some(failed),
            None => read_state(dir).ok().flatten(),
        }
    }

    /// Fails a unit whose run directory says it runs although no shim does, stopping what of
    /// it still runs unsupervised and telling the agent; its status then, if it was so.
    async fn settle_orphan(&self, name: &UnitName, dir: &Path) -> Option<UnitStatus> {
        let status = orphaned_status(dir)?;
        let shim = recorded_shim(dir);
        let reason = match shim {
            Some(pid) => format!("the unit's shim (PID {pid}) ended unexpectedly"),
            None => "the unit's shim ended unexpectedly".to_owned(),
        };
        let (lost_name, lost_dir) = (name.clone(), dir.to_owned());
        // Stopping leftovers waits for them (bounded): not on the runtime's threads.
        let failed =
            tokio::task::spawn_blocking(move || mark_lost(&lost_name, &lost_dir, status, &reason))
                .await
                .ok()?;
        self.watchers.invalidate(name);
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        Some(failed)
    }
}

/// The state a run directory claims when that claim is false: live, but no shim runs it.
fn orphaned_status(dir: &Path) -> Option<UnitStatus> {
    if shim_pid(dir).is_some() {
        return None;
    }
    read_state(dir)
        .ok()
        .flatten()
        .filter(|status| status.sub.is_live())
}

/// The PID the unit's shim wrote, alive or not.
fn recorded_shim(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes down that a unit whose shim is gone is failed, after stopping whatever of it still
/// runs unsupervised (SIGTERM, SIGKILL after [`LEFTOVER_STOP`]); the failed status.
fn mark_lost(name: &UnitName, dir: &Path, was: UnitStatus, reason: &str) -> UnitStatus {
    let mut reason = reason.to_owned();
    if let Some(shim) = recorded_shim(dir) {
        let left = stop_session(shim);
        if left > 0 {
            reason = format!(
                "{reason}; {left} process(es) of the unit ran on unsupervised and were stopped"
            );
        }
    }
    tracing::warn!(unit = %name, reason, "native supervisor: the unit runs no more");
    let status = UnitStatus {
        sub: SubState::Failed,
        result: RunResult::Resources,
        main_pid: None,
        exit: was.exit,
        reason: Some(reason),
        restarts: was.restarts,
        since: rfc3339(SystemTime::now()),
    };
    if let Err(error) = write_state(&dir.join(STATE), &status) {
        tracing::warn!(unit = %name, %error, "native supervisor: cannot record the unit's state");
    }
    let _ = std::fs::remove_file(dir.join(PID));
    status
}

/// How long the leftover processes of a unit whose shim died get to end after SIGTERM.
const LEFTOVER_STOP: Duration = Duration::from_secs(5);

/// Ends every process of the session a dead shim led (the unit's processes: the shim made
/// the session, and its commands keep it); how many there were.
fn stop_session(session: u32) -> usize {
    use nix::sys::signal::Signal;
    let members = session_members(session);
    if members.is_empty() {
        return 0;
    }
    signal_each(&members, Signal::SIGTERM);
    let deadline = Instant::now() + LEFTOVER_STOP;
    while Instant::now() < deadline && !session_members(session).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_each(&session_members(session), Signal::SIGKILL);
    members.len()
}

/// What specifiers resolve to for `name` on this machine, outside its shim (which knows the
/// user it runs as too).
fn specifier_context(config: &SupervisorConfig, name: &UnitName) -> SpecifierContext {
    SpecifierContext {
        unit_name: name.to_string(),
        machine_id: config.machine_id.clone(),
        boot_id: config.boot_id.clone(),
        hostname: config.hostname.clone(),
        ..SpecifierContext::default()
    }
}

fn unit_name(name: &str) -> Result<UnitName, SupervisorError> {
    UnitName::new(name).map_err(|e| SupervisorError::Refused(format!("{name}: {e}")))
}

/// Whether a unit is up or on its way: its shim lives and its last state says so (a shim
/// writes the final state a moment before it exits).
fn is_active(dir: &Path) -> bool {
    shim_pid(dir).is_some()
        && read_state(dir)
            .ok()
            .flatten()
            .is_some_and(|s| s.sub.is_live())
}

/// The PID of the live shim of the run directory `dir`, if there is one.
fn shim_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid, dir).then_some(pid)
}

/// Whether `pid` is still the shim of `dir` (not a reused PID, not a zombie): a shim works in
/// its run directory (its command line says nothing: a forked shim has fleetd's).
fn alive(pid: u32, dir: &Path) -> bool {
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    let ours = cwd == dir || std::fs::canonicalize(dir).is_ok_and(|dir| cwd == dir);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    ours && !zombie
}

/// Asks a shim to stop its unit and reads what it says until it closes the connection, which
/// it does once the unit's final state is written.
async fn stop_and_hear_the_end(dir: &Path) -> Result<(), SupervisorError> {
    let path = dir.join(SOCKET);
    let exchange = async {
        let mut stream = connect(dir).await?;
        stream.write_all(b"stop\n").await?;
        let mut lines = BufReader::new(stream).lines();
        while lines.next_line().await?.is_some() {}
        Ok::<(), std::io::Error>(())
    };
    exchange.await.map_err(|e| io("shim socket", &path, e))
}

/// Whether the shim `pid` of run directory `dir` has ended, or does within `limit`.
async fn ends_within(pid: u32, dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid, dir) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// One request to a shim's control socket; its status answer.
async fn request(dir: &Path, line: &str) -> Result<UnitStatus, SupervisorError> {
    let path = dir.join(SOCKET);
    let exchange = async {
        let mut stream = connect(dir).await?;
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        serde_json::from_str::<UnitStatus>(&answer).map_err(std::io::Error::other)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(io("shim socket", &path, e)),
        Err(_) => Err(SupervisorError::Io(format!(
            "{}: no answer within 5 s",
            path.display()
        ))),
    }
}

/// A pipe for a shim's first report: fleetd's end to await, the shim's end to hand over.
fn report_pipe() -> Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd), SupervisorError>
{
    let (reading, writing) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SupervisorError::Io(format!("cannot make a pipe for a shim: {e}")))?;
    let reading = tokio::net::unix::pipe::Receiver::from_owned_fd(reading)
        .map_err(|e| SupervisorError::Io(format!("cannot watch a shim's pipe: {e}")))?;
    Ok((reading, writing))
}

/// Has the zygote fork the shim of `dir`.
async fn fork_shim(
    zygote: &Zygote,
    dir: &Path,
) -> Result<(u32, tokio::net::unix::pipe::Receiver), SupervisorError> {
    let (reading, writing) = report_pipe()?;
    let pid = zygote
        .spawn(dir, writing)
        .await
        .map_err(|e| SupervisorError::Io(e.to_string()))?;
    Ok((pid, reading))
}
