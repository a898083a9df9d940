//! The systemd unit manager: units go to the machine's systemd over D-Bus (zbus, no libdbus),
//! as fleet's agent handed them over. Unit files are written into the units directory and
//! linked (runtime, force); units with an `[Install]` section are enabled too, so `WantedBy=`
//! works. systemd reads a new unit's file when the unit is first asked for, so only a unit it
//! already holds (a copy replaced) needs a `Reload`, shared by the loads of one round. States
//! come from systemd's `PropertiesChanged` signals into a cache (with `ListUnitsByNames`
//! after a reload and, in one call, for the units loaded since the last look), so reading
//! them costs no D-Bus call. Units whose files are not in
//! the units directory are never touched; after a restart, the files there (and their hashes)
//! are what fleetd loaded before, and their units are left running.

pub mod bus;
pub mod jobs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use fleet_unit::{SystemdState, UnitFile, UnitHash, UnitName};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use zbus::OwnedVariant;

use crate::manager::{
    killed_outside, ManagerError, ManagerKind, Relations, Result, UnitManager, UnitStatus,
};
use bus::{unit_name_of_path, ManagerProxy, UNIT_PATH_PREFIX};
use fleet_native::log::rfc3339;
use fleet_native::unit_files::{units_in, write_unit_file};
use jobs::JobTracker;

/// How to reach systemd and where unit files go.
#[derive(Debug, Clone)]
pub struct SystemdConfig {
    /// A D-Bus address (`unix:path=...`); `None`: the system bus, or the session bus with `user`.
    pub address: Option<String>,
    /// The user's systemd instance (`systemd_user`).
    pub user: bool,
    /// `units_directory`: fleet's unit files, and nothing else.
    pub units_dir: PathBuf,
    /// What `systemctl` and `journalctl` run under to reach this systemd: nothing on a real
    /// machine; `nsenter -t PID -a` for a systemd in another namespace (tests).
    pub command_prefix: Vec<String>,
    /// Where systemd's root is in fleetd's view: `/` on a machine; the sandbox's root when
    /// fleetd runs outside it (tests). Links under `/run/systemd` are made and removed
    /// through it.
    pub root: PathBuf,
}

/// How far apart a job's `JobRemoved` and its unit's `PropertiesChanged` may be seen.
const SIGNALS_APART: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a start or stop waits for its unit to get there before leaving the rest to
/// systemd.
const JOB_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// systemd's error for a unit it does not know.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// How long `systemctl status` or `journalctl` may take before the answer is an error.
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SystemdManager {
    /// Replaced when the connection is made again.
    bus: std::sync::RwLock<ManagerProxy<'static>>,
    config: SystemdConfig,
    known: Arc<Mutex<Known>>,
    /// Sent to whenever a state in `known` changes.
    changed: watch::Sender<()>,
    /// Held for a `Reload` and the resync after it: calls made meanwhile wait for it, so
    /// that none asks systemd about a unit whose file it has not read yet.
    reloading: tokio::sync::Mutex<()>,
    /// fleetd's jobs in systemd, at most [`jobs::MAX_JOBS`].
    jobs: Arc<JobTracker>,
    /// The names systemd held objects for at a recent look, and when: the loads of one round
    /// share one `ListUnits` instead of a `GetUnit` each.
    held: tokio::sync::Mutex<Option<(std::time::Instant, std::collections::HashSet<String>)>>,
}

/// How long a look at the units systemd holds serves the loads that follow. An object made
/// meanwhile can only be a stub for a unit another names, which systemd reads afresh once
/// its file appears.
const HELD_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// What fleetd knows of its units in systemd.
#[derive(Default)]
struct Known {
    /// The units loaded from the units directory, by the hash of their files.
    loaded: BTreeMap<UnitName, UnitHash>,
    /// Their last states, kept current by signals.
    states: BTreeMap<String, SystemdState>,
    /// Unit files changed since the last `Reload`.
    reload_pending: bool,
    /// Units loaded since, whose states systemd has not been asked for: asked together, as
    /// every first look after a new link makes systemd read all its unit directories again.
    unread: BTreeSet<String>,
    /// When each unit last left `active`, as signals told: a job that ended since then and
    /// left it inactive is what stopped it.
    left_active: HashMap<String, std::time::Instant>,
    /// How each unit's main process last ended (`ExecMainCode`, `ExecMainStatus`), as
    /// signals told, and when they told.
    main_exits: HashMap<String, (i32, i32, std::time::Instant)>,
}

fn bus_error(what: &str, e: zbus::Error) -> ManagerError {
    ManagerError(format!("systemd: {what}: {e}"))
}

/// A connection to systemd's bus: the Manager interface, subscribed, and the signals fleetd
/// follows on it.
struct Connection {
    bus: ManagerProxy<'static>,
    /// `PropertiesChanged` of units.
    signals: zbus::MessageStream,
    /// systemd itself leaving the bus and coming back (dbus-daemon disconnects a client that
    /// passes its limits, and systemd reconnects): its subscription to our signals is gone
    /// then, and the states we hold may be stale.
    owners: zbus::MessageStream,
    /// `JobRemoved`, which gives a job's permit back.
    removals: zbus::MessageStream,
}

impl Connection {
    async fn open(config: &SystemdConfig) -> Result<Connection> {
        let where_ = match (&config.address, config.user) {
            (Some(address), _) => address.clone(),
            (None, true) => "the session bus".into(),
            (None, false) => "the system bus".into(),
        };
        let unreachable =
            |e: zbus::Error| ManagerError(format!("systemd is not reachable on {where_}: {e}"));
        let connection = match (&config.address, config.user) {
            (Some(address), _) => zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .map_err(unreachable)?,
            (None, true) => zbus::Connection::session().await.map_err(unreachable)?,
            (None, false) => zbus::Connection::system().await.map_err(unreachable)?,
        };
        let bus = ManagerProxy::new(&connection).await.map_err(unreachable)?;
        bus.system_state().await.map_err(unreachable)?;
        let stream = |rule: zbus::MatchRule<'static>| {
            zbus::MessageStream::for_match_rule(rule, &connection, None)
        };
        let signals = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace(UNIT_PATH_PREFIX.trim_end_matches('/'))
            .build()
            .map_err(unreachable)?;
        let owners = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .add_arg("org.freedesktop.systemd1")
            .build()
            .map_err(unreachable)?;
        let removals = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.systemd1.Manager")
            .member("JobRemoved")
            .path("/org/freedesktop/systemd1")
            .build()
            .map_err(unreachable)?;
        let connection = Connection {
            signals: stream(signals).await.map_err(unreachable)?,
            owners: stream(owners).await.map_err(unreachable)?,
            removals: stream(removals).await.map_err(unreachable)?,
            bus,
        };
        connection.bus.subscribe().await.map_err(unreachable)?;
        Ok(connection)
    }
}

impl SystemdManager {
    /// Connects, subscribes to unit changes and reads what earlier runs loaded. Fails with the
    /// reason when systemd cannot be reached; a connection lost later is made again.
    pub async fn connect(config: SystemdConfig) -> Result<Arc<SystemdManager>> {
        let connection = Connection::open(&config).await?;
        std::fs::create_dir_all(&config.units_dir).map_err(|e| {
            ManagerError(format!("cannot create {}: {e}", config.units_dir.display()))
        })?;
        let loaded = units_in(&config.units_dir)
            .map_err(|e| ManagerError(format!("cannot read {}: {e}", config.units_dir.display())))?
            .into_iter()
            .map(|(name, unit)| (name, unit.hash()))
            .collect();
        let manager = Arc::new(SystemdManager {
            bus: std::sync::RwLock::new(connection.bus.clone()),
            config,
            known: Arc::new(Mutex::new(Known {
                loaded,
                ..Known::default()
            })),
            changed: watch::Sender::new(()),
            reloading: tokio::sync::Mutex::new(()),
            jobs: Arc::new(JobTracker::default()),
            held: tokio::sync::Mutex::new(None),
        });
        manager.resync().await?;
        tokio::spawn(follow_bus(Arc::downgrade(&manager), connection));
        Ok(manager)
    }

    /// The Manager interface on the current connection.
    fn bus(&self) -> ManagerProxy<'static> {
        self.bus
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A `UnitName` is one path component (never `.` or `..`): the file stays in the units
    /// directory.
    fn path(&self, name: &UnitName) -> PathBuf {
        self.config.units_dir.join(name.as_str())
    }

    /// `program` (systemctl or journalctl) for this systemd: under the command prefix, with
    /// `--user` for the user's instance.
    fn tool(&self, program: &str) -> tokio::process::Command {
        let mut command = match self.config.command_prefix.split_first() {
            Some((first, rest)) => {
                let mut command = tokio::process::Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => tokio::process::Command::new(program),
        };
        if self.config.user {
            command.arg("--user");
        }
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// journalctl for the unit's entries as JSON, with `extra` arguments.
    fn journalctl(&self, name: &UnitName, extra: &[&str]) -> tokio::process::Command {
        let mut command = self.tool("journalctl");
        command
            .args(["--no-pager", "--output=json", "--unit", name.as_str()])
            .args(extra);
        command
    }

    /// The one `Reload` for the unit files changed since the last, then fresh states; or,
    /// with no `Reload` due, the states of the units loaded since the last look, in one call.
    async fn settle(&self) -> Result<()> {
        let _reloading = self.reloading.lock().await;
        if !std::mem::take(&mut self.known().reload_pending) {
            return self.read_new_states().await;
        }
        let begun = std::time::Instant::now();
        if let Err(e) = self.bus().reload().await {
            self.known().reload_pending = true;
            return Err(bus_error("Reload", e));
        }
        let reloaded_in = begun.elapsed();
        self.known().unread.clear();
        let result = self.resync().await;
        tracing::info!(
            ?reloaded_in,
            resynced_in = ?begun.elapsed() - reloaded_in,
            units = self.known().loaded.len(),
            "systemd: unit files read again"
        );
        result
    }

    async fn read_new_states(&self) -> Result<()> {
        let unread: Vec<String> = std::mem::take(&mut self.known().unread)
            .into_iter()
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = unread.iter().map(String::as_str).collect();
        let rows = match self.bus().list_units_by_names(&names).await {
            Ok(rows) => rows,
            Err(e) => {
                self.known().unread.extend(unread);
                return Err(bus_error("ListUnitsByNames", e));
            }
        };
        let mut known = self.known();
        for row in rows {
            let ours = UnitName::new(&row.0).is_ok_and(|name| known.loaded.contains_key(&name));
            if ours {
                let state = SystemdState::new(&row.2, &row.3, &row.4);
                known.states.insert(row.0, state);
            }
        }
        self.changed.send_replace(());
        Ok(())
    }

    /// Queues a start or a stop of `name` (`StartUnit` or `StopUnit`, mode `replace`) once
    /// fleetd has fewer than [`jobs::MAX_JOBS`] jobs in systemd.
    async fn queue(&self, name: &UnitName, start: bool) -> zbus::Result<()> {
        let permit = match start {
            true => self.jobs.for_start(name.as_str()).await,
            false => self.jobs.for_stop(name.as_str()).await,
        };
        let job = match start {
            true => self.bus().start_unit(name.as_str(), "replace").await?,
            false => self.bus().stop_unit(name.as_str(), "replace").await?,
        };
        self.jobs.queued(job.as_str(), permit);
        Ok(())
    }

    /// Waits, at most [`JOB_SETTLE`], until `name` is in one of the `done` active states, as
    /// its job has left it; a slow unit is left to systemd after the bound (its job still
    /// holds its permit).
    async fn until_settled(
        &self,
        name: &UnitName,
        mut changes: watch::Receiver<()>,
        done: &[&str],
    ) {
        let settled = async {
            loop {
                let active = self
                    .known()
                    .states
                    .get(name.as_str())
                    .map(|s| s.active.clone());
                if active.is_some_and(|a| done.contains(&a.as_str())) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(JOB_SETTLE, settled).await;
    }

    /// Where a runtime `LinkUnitFiles` puts the link to `name`'s file, as fleetd sees it:
    /// systemd's runtime unit directory, if it is there.
    fn link_path(&self, name: &UnitName) -> Option<PathBuf> {
        let runtime = match self.config.user {
            false => PathBuf::from("run/systemd/system"),
            true => PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("systemd/user"),
        };
        let dir = self
            .config
            .root
            .join(runtime.strip_prefix("/").unwrap_or(&runtime));
        dir.is_dir().then(|| dir.join(name.as_str()))
    }

    /// Links `name`'s file into systemd's runtime unit directory, replacing what was there,
    /// as `LinkUnitFiles` (runtime, force) does, which takes systemd itself over a millisecond
    /// with a thousand units; `false` when it cannot (then systemd is asked to).
    fn create_link(&self, name: &UnitName) -> bool {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let Some(link) = self.link_path(name) else {
            return false;
        };
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary =
            link.with_file_name(format!(".fleet-link-{}-{serial}.tmp", std::process::id()));
        let linked = std::os::unix::fs::symlink(self.path(name), &temporary)
            .and_then(|()| std::fs::rename(&temporary, &link));
        if linked.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        linked.is_ok()
    }

    /// Removes the runtime link to `name`'s file, if it is there and points to it; `false`
    /// when it is not (then systemd is asked to).
    fn remove_link(&self, name: &UnitName) -> bool {
        let Some(link) = self.link_path(name) else {
            return false;
        };
        match std::fs::read_link(&link) {
            Ok(target) if target == self.path(name) => std::fs::remove_file(&link).is_ok(),
            _ => false,
        }
    }

    /// Whether systemd has an object for `name` (when in doubt, that it has), from a look at
    /// every unit it holds no older than [`HELD_FRESH`].
    async fn systemd_holds(&self, name: &UnitName) -> bool {
        let mut held = self.held.lock().await;
        let fresh = held
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < HELD_FRESH);
        if !fresh {
            *held = match self.bus().list_units().await {
                Ok(rows) => Some((
                    std::time::Instant::now(),
                    rows.into_iter().map(|row| row.0).collect(),
                )),
                Err(_) => return true,
            };
        }
        match held.as_mut() {
            // From now on systemd may hold it: it is loaded.
            Some((_, names)) => !names.insert(name.to_string()),
            None => true,
        }
    }

    /// The unit's state as systemd has it, loading it if need be.
    async fn state_from_systemd(&self, name: &UnitName) -> Result<SystemdState> {
        let rows = self
            .bus()
            .list_units_by_names(&[name.as_str()])
            .await
            .map_err(|e| bus_error("ListUnitsByNames", e))?;
        Ok(rows
            .into_iter()
            .next()
            .map(|row| SystemdState::new(&row.2, &row.3, &row.4))
            .unwrap_or_else(|| SystemdState::new("not-found", "inactive", "dead")))
    }

    /// Every loaded unit's state from `ListUnitsByNames`.
    async fn resync(&self) -> Result<()> {
        let names: Vec<String> = self.known().loaded.keys().map(|n| n.to_string()).collect();
        if names.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows = self
            .bus()
            .list_units_by_names(&refs)
            .await
            .map_err(|e| bus_error("ListUnitsByNames", e))?;
        let mut known = self.known();
        for row in rows {
            let restarts = known.states.get(&row.0).map_or(0, |s| s.restarts);
            let state = SystemdState {
                restarts,
                ..SystemdState::new(&row.2, &row.3, &row.4)
            };
            known.states.insert(row.0, state);
        }
        self.changed.send_replace(());
        Ok(())
    }
}

/// How long the first attempt to connect again waits, and the longest between attempts.
const RECONNECT_FIRST: std::time::Duration = std::time::Duration::from_millis(200);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the connection's signals for as long as the manager lives; when the connection is
/// lost (dbus-daemon restarted, or it threw fleetd off), connects again, subscribes and reads
/// every state afresh. Nothing is restarted: the units run in systemd meanwhile.
async fn follow_bus(manager: Weak<SystemdManager>, mut connection: Connection) {
    loop {
        {
            let Some(current) = manager.upgrade() else {
                return;
            };
            let (known, changed, jobs) = (
                Arc::downgrade(&current.known),
                current.changed.clone(),
                Arc::downgrade(&current.jobs),
            );
            drop(current);
            tokio::select! {
                _ = follow_signals(connection.signals, known, changed) => {}
                _ = jobs::follow_removals(connection.removals, jobs) => {}
                _ = follow_systemd(connection.owners, manager.clone()) => {}
            }
        }
        let mut pause = RECONNECT_FIRST;
        connection = loop {
            let Some(current) = manager.upgrade() else {
                return;
            };
            tracing::warn!("systemd: the connection to the bus is lost; connecting again");
            tokio::time::sleep(pause).await;
            match Connection::open(&current.config).await {
                Ok(connection) => {
                    *current
                        .bus
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = connection.bus.clone();
                    // The jobs fleetd waited for were tracked on the old connection.
                    current.jobs.forget_all();
                    match current.resync().await {
                        Ok(()) => {
                            tracing::info!("systemd: connected again; every state read afresh")
                        }
                        Err(error) => {
                            tracing::warn!(%error, "systemd: connected again, but cannot read the units' states")
                        }
                    }
                    break connection;
                }
                Err(error) => {
                    tracing::warn!(%error, "systemd: cannot connect again yet");
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        };
    }
}

/// Whenever systemd takes its name on the bus anew (it was disconnected and came back), asks
/// it again for signals and reads every unit's state afresh: nothing is restarted, and no
/// state goes stale.
async fn follow_systemd(mut owners: zbus::MessageStream, manager: Weak<SystemdManager>) {
    while let Some(message) = owners.next().await {
        let Ok(message) = message else { continue };
        let Ok((_, _, new_owner)) = message.body().deserialize::<(String, String, String)>() else {
            continue;
        };
        let Some(manager) = manager.upgrade() else {
            return;
        };
        // The jobs fleetd waited for went with systemd's connection, or come back with
        // their own signals, which nothing waits for then.
        manager.jobs.forget_all();
        if new_owner.is_empty() {
            tracing::warn!("systemd left the bus; waiting for it to come back");
            continue;
        }
        tracing::warn!(
            owner = new_owner,
            "systemd is back on the bus; subscribing again and reading every state"
        );
        if let Err(error) = manager.bus().subscribe().await {
            tracing::warn!(%error, "systemd: Subscribe failed");
        }
        if let Err(error) = manager.resync().await {
            tracing::warn!(%error, "systemd: cannot read the units' states");
        }
    }
}

/// Applies systemd's `PropertiesChanged` signals for units to the cache, for as long as the
/// manager lives, telling `told` of every change.
async fn follow_signals(
    mut signals: zbus::MessageStream,
    known: Weak<Mutex<Known>>,
    told: watch::Sender<()>,
) {
    while let Some(message) = signals.next().await {
        let Some(known) = known.upgrade() else {
            return;
        };
        let Ok(message) = message else {
            continue;
        };
        let header = message.header();
        let Some(name) = header.path().and_then(|p| unit_name_of_path(p.as_str())) else {
            continue;
        };
        let Ok((interface, changed, _)) =
            message
                .body()
                .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
        else {
            continue;
        };
        let text = |key: &str| changed.get(key).and_then(|v| String::try_from(&**v).ok());
        let mut guard = known.lock().unwrap_or_else(|p| p.into_inner());
        let known = &mut *guard;
        let Some(state) = known.states.get_mut(&name) else {
            continue;
        };
        let new = match interface.as_str() {
            "org.freedesktop.systemd1.Unit" => {
                let (load, active, sub) =
                    (text("LoadState"), text("ActiveState"), text("SubState"));
                SystemdState {
                    restarts: state.restarts,
                    ..SystemdState::new(
                        load.as_deref().unwrap_or(&state.load),
                        active.as_deref().unwrap_or(&state.active),
                        sub.as_deref().unwrap_or(&state.sub),
                    )
                }
            }
            // The restarts its own `Restart=` made since it was last started (a crash loop
            // never shows failed).
            "org.freedesktop.systemd1.Service" => {
                let number = |key: &str| changed.get(key).and_then(|v| i32::try_from(&**v).ok());
                // How its main process last ended (a kill outside fleet leaves no job).
                if let (Some(code), Some(status)) =
                    (number("ExecMainCode"), number("ExecMainStatus"))
                {
                    let at = std::time::Instant::now();
                    known.main_exits.insert(name.clone(), (code, status, at));
                }
                let Some(restarts) = changed
                    .get("NRestarts")
                    .and_then(|v| u32::try_from(&**v).ok())
                else {
                    continue;
                };
                SystemdState {
                    restarts,
                    ..state.clone()
                }
            }
            _ => continue,
        };
        if *state != new {
            if state.active == "active" && new.active != "active" {
                known
                    .left_active
                    .insert(name.clone(), std::time::Instant::now());
            }
            *state = new;
            told.send_replace(());
        }
    }
}

#[async_trait]
impl UnitManager for SystemdManager {
    fn kind(&self) -> ManagerKind {
        ManagerKind::Systemd
    }

    async fn load(&self, name: &UnitName, unit: &UnitFile) -> Result<()> {
        let path = self.path(name);
        // Written whole under another name first: systemd never reads half a file.
        write_unit_file(&self.config.units_dir, name, unit)
            .map_err(|e| ManagerError(e.to_string()))?;
        let path_text = path.display().to_string();
        if !self.create_link(name) {
            self.bus()
                .link_unit_files(&[&path_text], true, true)
                .await
                .map_err(|e| bus_error(&format!("LinkUnitFiles {name}"), e))?;
        }
        let installed = unit.has_section("Install");
        if installed {
            if let Err(e) = self
                .bus()
                .enable_unit_files(&[&path_text], true, true)
                .await
            {
                let _ = self.unload(name).await;
                return Err(bus_error(&format!("EnableUnitFiles {name}"), e));
            }
        }
        // systemd reads the file of a unit it has no object for when the unit is first asked
        // for; only an object it holds already (an earlier copy, or a stub left by a
        // dependency) and the targets an `[Install]` section adds to need a `Reload`, which
        // takes systemd a second with a thousand units and holds up every other call.
        // Asked also for an `[Install]` unit: a copy loaded after it must see it held.
        let held = self.systemd_holds(name).await;
        let reload = installed || held;
        let mut known = self.known();
        known.loaded.insert(name.clone(), unit.hash());
        match reload {
            true => known.reload_pending = true,
            false => {
                known.unread.insert(name.to_string());
            }
        }
        Ok(())
    }

    async fn unload(&self, name: &UnitName) -> Result<()> {
        let path = self.path(name);
        // Stopping a unit systemd does not know is not an error here; any other failure is
        // (the unit would run on, unloaded, where nothing watches it).
        let changes = self.changed.subscribe();
        match self.queue(name, false).await {
            Ok(()) => {
                self.until_settled(name, changes, &["inactive", "failed"])
                    .await;
            }
            Err(zbus::Error::MethodError(error, _, _)) if error.as_str() == NO_SUCH_UNIT => {}
            Err(e) => return Err(bus_error(&format!("StopUnit {name}"), e)),
        }
        // The link goes, and the `[Install]` symlinks with `DisableUnitFiles`, which takes
        // systemd 80 ms at a thousand units (it walks every unit directory), so a unit without
        // an `[Install]` section has its link removed by fleetd. No `Reload` follows: the stopped
        // unit, its file gone, is garbage-collected by systemd, and a later copy under the
        // same name is loaded with one.
        let installed = match UnitFile::parse(std::fs::read(&path).unwrap_or_default()) {
            Ok(unit) => unit.has_section("Install"),
            Err(_) => true,
        };
        // A unit systemd no longer knows is gone already; any other refusal is an error (its
        // `[Install]` links would stay and pull it in again), and the agent tries again.
        let refused = |e: &zbus::Error| !matches!(e, zbus::Error::MethodError(error, _, _) if error.as_str() == NO_SUCH_UNIT);
        if installed || !self.remove_link(name) {
            match self.bus().disable_unit_files(&[name.as_str()], true).await {
                Err(e) if refused(&e) => {
                    return Err(bus_error(&format!("DisableUnitFiles {name}"), e));
                }
                _ => {}
            }
        }
        // Only what systemd shows of the unit's last run: not worth failing the unload for.
        match self.bus().reset_failed_unit(name.as_str()).await {
            Err(e) if refused(&e) => {
                tracing::warn!(unit = %name, error = %e, "systemd: cannot reset the failed state");
            }
            _ => {}
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ManagerError(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )))
            }
        }
        let mut known = self.known();
        known.loaded.remove(name);
        known.states.remove(name.as_str());
        known.unread.remove(name.as_str());
        known.left_active.remove(name.as_str());
        known.main_exits.remove(name.as_str());
        Ok(())
    }

    /// Queues the start and returns: systemd runs it (in `After=` order with the other jobs
    /// queued), and its states come by signal. Waiting for each would keep systemd's job
    /// queue to what the agent has under way and halve its rate; the queued jobs are bounded
    /// by [`jobs::MAX_JOBS`] instead.
    async fn start(&self, name: &UnitName) -> Result<()> {
        self.settle().await?;
        self.queue(name, true)
            .await
            .map_err(|e| bus_error(&format!("StartUnit {name}"), e))
    }

    async fn stop(&self, name: &UnitName) -> Result<()> {
        self.settle().await?;
        let changes = self.changed.subscribe();
        self.queue(name, false)
            .await
            .map_err(|e| bus_error(&format!("StopUnit {name}"), e))?;
        self.until_settled(name, changes, &["inactive", "failed"])
            .await;
        Ok(())
    }

    async fn loaded(&self) -> Result<BTreeMap<UnitName, UnitHash>> {
        self.settle().await?;
        Ok(self.known().loaded.clone())
    }

    /// A unit fleet has not loaded (or has unloaded: systemd may hold the stopped unit a
    /// moment longer, until it collects it) is `not-found`, as for fleet it is.
    async fn state(&self, name: &UnitName) -> Result<SystemdState> {
        self.settle().await?;
        if !self.known().loaded.contains_key(name) {
            return Ok(SystemdState::new("not-found", "inactive", "dead"));
        }
        if let Some(state) = self.known().states.get(name.as_str()) {
            return Ok(state.clone());
        }
        let state = self.state_from_systemd(name).await?;
        if self.known().loaded.contains_key(name) {
            self.known().states.insert(name.to_string(), state.clone());
        }
        Ok(state)
    }

    async fn states(&self) -> Result<BTreeMap<UnitName, (UnitHash, SystemdState)>> {
        self.settle().await?;
        let (mut states, unseen) = {
            let known = self.known();
            let mut states = BTreeMap::new();
            let mut unseen = Vec::new();
            for (name, hash) in &known.loaded {
                match known.states.get(name.as_str()) {
                    Some(state) => {
                        states.insert(name.clone(), (*hash, state.clone()));
                    }
                    None => unseen.push((name.clone(), *hash)),
                }
            }
            (states, unseen)
        };
        for (name, hash) in unseen {
            if let Ok(state) = self.state(&name).await {
                states.insert(name, (hash, state));
            }
        }
        Ok(states)
    }

    async fn journal(&self, name: &UnitName, lines: usize) -> Result<Vec<String>> {
        let output = bounded(
            "journalctl",
            self.journalctl(name, &[&format!("--lines={lines}")])
                .output(),
        )
        .await?;
        if !output.status.success() {
            return Err(ManagerError(format!(
                "journalctl: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(journal_record)
            .collect())
    }

    /// `systemctl status` as systemd shows it, with the last ten lines of the unit's log.
    async fn status(&self, name: &UnitName) -> Result<Option<UnitStatus>> {
        let output = bounded(
            "systemctl status",
            self.tool("systemctl")
                .args(["status", "--full", "--no-pager", "--lines=10", "--"])
                .arg(name.as_str())
                .output(),
        )
        .await?;
        Ok(Some(UnitStatus {
            text: String::from_utf8_lossy(&output.stdout).into_owned(),
            // 3 for a unit that is not active, as systemctl says; fleetctl passes it on.
            code: output.status.code().unwrap_or(1),
        }))
    }

    /// A stop job fleetd did not queue (`systemctl stop`), or a main process killed without
    /// one (`kill`); not a unit systemd stopped with one it needs, for one it conflicts
    /// with, or because the machine is shutting down.
    async fn ended_outside(
        &self,
        name: &UnitName,
        relations: &Relations,
        since: std::time::Instant,
    ) -> Option<String> {
        // What fleetd saw first (no call to systemd for a unit that ended by itself).
        let (left, exit) = {
            let known = self.known();
            (
                known.left_active.get(name.as_str()).copied(),
                known.main_exits.get(name.as_str()).copied(),
            )
        };
        // The job's signal and the unit's own come on two streams, in either order: a stop
        // job told up to a moment before the unit was seen leaving active stopped it.
        let stopped = left.is_some_and(|left| {
            let not_before = left.checked_sub(SIGNALS_APART).unwrap_or(left).max(since);
            self.jobs.stopped_by_another(name.as_str(), not_before)
        });
        let what = match exit {
            _ if stopped => {
                "stopped outside fleet (a stop job fleetd did not queue: systemctl stop)".to_owned()
            }
            // `CLD_KILLED`, `CLD_DUMPED`.
            Some((2 | 3, signal, at)) if at >= since => killed_outside(signal),
            _ => return None,
        };
        // Not outside fleet after all: systemd stopped it with a unit it needs, for one it
        // conflicts with, or with the machine.
        let others: Vec<&str> = relations
            .needs
            .iter()
            .chain(&relations.conflicts)
            .map(String::as_str)
            .collect();
        if !others.is_empty() {
            let rows = self.bus().list_units_by_names(&others).await.ok()?;
            for row in rows {
                let needed = relations.needs.contains(&row.0);
                let active = matches!(row.3.as_str(), "active" | "activating" | "reloading");
                if (needed && row.2 == "loaded" && !active) || (!needed && active) {
                    return None;
                }
            }
        }
        if self.bus().system_state().await.ok()? == "stopping" {
            return None;
        }
        Some(what)
    }

    fn changes(&self) -> Option<watch::Receiver<()>> {
        Some(self.changed.subscribe())
    }

    async fn follow(&self, name: &UnitName) -> Result<mpsc::Receiver<String>> {
        use tokio::io::AsyncBufReadExt;
        let mut child = self
            .journalctl(name, &["--lines=0", "--follow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ManagerError(format!("cannot run journalctl: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ManagerError("journalctl: no output".into()))?;
        let (records, receiver) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => {
                            if let Some(record) = journal_record(&line) {
                                if records.send(record).await.is_err() {
                                    break;
                                }
                            }
                        }
                        _ => break,
                    },
                    _ = records.closed() => break,
                }
            }
            drop(child);
        });
        Ok(receiver)
    }
}

/// The output of `tool` (systemctl, journalctl), or why there is none within `TOOL_TIMEOUT`.
async fn bounded(
    tool: &str,
    output: impl std::future::Future<Output = std::io::Result<std::process::Output>>,
) -> Result<std::process::Output> {
    match tokio::time::timeout(TOOL_TIMEOUT, output).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(ManagerError(format!("cannot run {tool}: {e}"))),
        Err(_) => Err(ManagerError(format!(
            "{tool} gave no answer within {TOOL_TIMEOUT:?}"
        ))),
    }
}

/// A journal entry (journalctl's JSON) as a log record: `<RFC 3339 time> stdout <message>`.
fn journal_record(json: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(json).ok()?;
    let micros: u64 = entry.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    let message = match entry.get("MESSAGE")? {
        serde_json::Value::String(text) => text.clone(),
        // Messages that are not UTF-8 come as arrays of bytes.
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    Some(format!(
        "{} stdout {}",
        rfc3339(at),
        message.replace('\n', " ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_become_records() {
        let rows = [
            (
                r#"{"__REALTIME_TIMESTAMP":"1763756594123456","MESSAGE":"hello"}"#,
                Some("2025-11-21T20:23:14.123456Z stdout hello"),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1763756594000000","MESSAGE":[104,105]}"#,
                Some("2025-11-21T20:23:14.000000Z stdout hi"),
            ),
            (r#"{"MESSAGE":"no time"}"#, None),
            ("not json", None),
        ];
        for (json, expected) in rows {
            assert_eq!(journal_record(json).as_deref(), expected, "{json}");
        }
    }
}
