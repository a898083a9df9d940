//! Wiring: from a configuration to a running fleetd — registry (etcd, or the embedded store
//! when no etcd is configured), unit manager, engine and agent — until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::manager::{ManagerKind, UnitManager};
use fleet_agent::systemd::{SystemdConfig, SystemdManager};
use fleet_api::server::{router_with_access, Access, ApiState, AuditSink};
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_native::supervisor::{Supervisor, SupervisorConfig};
use fleet_native::zygote::Zygote;
use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::Continuity;
use fleet_registry::{KvStore, Registry};
use fleet_unit::MachineId;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::audit_log::AuditLog;
use crate::config::{Config, ConfigError, UnitManagerChoice};
use crate::listeners::{activated_listeners, api_tokens, serve, Listener};
use crate::start_error::StartError;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reads the configuration again (SIGHUP).
pub type Reload = Box<dyn Fn() -> Result<(Config, Vec<String>), ConfigError> + Send + Sync>;

/// Runs fleetd until it is told to stop; an `Err` is why it could not start.
/// `zygote`, when fleetd made one, is where the native supervisor forks its shims.
pub async fn run(
    config: Config,
    reload: Reload,
    zygote: Option<Arc<Zygote>>,
) -> Result<(), StartError> {
    // Before anything can be seen from outside: a stop signal must never find fleetd
    // without its handlers (and die of the default action).
    let mut signals = StopSignals::install()?;
    raise_open_files_limit();
    let machine = machine_id(&config)?;
    let public_ip = match config.public_ip.is_empty() {
        true => detect_public_ip().unwrap_or_default(),
        false => config.public_ip.clone(),
    };
    tracing::info!(%machine, public_ip, "fleetd {VERSION} starting");
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        StartError::setting(
            format!("data_dir {}", config.data_dir.display()),
            format!("cannot create it: {e}"),
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let private = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(&config.data_dir, private).map_err(|e| {
            StartError::setting(
                format!("data_dir {}", config.data_dir.display()),
                format!("cannot make it private (0700): {e}"),
            )
        })?;
    }
    // Each of these may wait (for etcd, for systemd): a stop signal ends the wait.
    let Some(store) = signals.unless_stopped(open_registry(&config)).await? else {
        return Ok(());
    };
    let opened = async {
        let known = config.data_dir.join(KNOWN_REGISTRY_FILE);
        let continuity = Arc::new(Continuity::open(store, &known).await?);
        let registry = Registry::open(Arc::clone(&continuity) as Arc<dyn KvStore>).await?;
        Ok::<_, StartError>((registry, continuity))
    };
    let Some((registry, continuity)) = signals.unless_stopped(opened).await? else {
        return Ok(());
    };
    let manager = unit_manager(&config, &machine, &public_ip, zygote);
    let Some(manager) = signals.unless_stopped(manager).await? else {
        return Ok(());
    };
    let manager_for_exit = Arc::clone(&manager);

    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    if !config.disable_engine {
        let engine = EngineConfig {
            machine: machine.clone(),
            lease_ttl: config.engine_lease(),
            resync: config.engine_reconcile_interval,
            version: VERSION.into(),
            machine_grace: config.agent_ttl,
            collect_unit_files: COLLECT_UNIT_FILES,
            reschedule_failed_units: config.reschedule_failed_units,
        };
        tasks.push(tokio::spawn(reconciler::run(
            registry.clone(),
            engine,
            shutdown.clone(),
        )));
    }
    let capabilities = vec![manager.kind().as_str().to_owned()];
    let record = MachineRecord {
        public_ip,
        metadata: config.metadata.clone(),
        version: VERSION.into(),
        capabilities,
    };
    let (announce, updates) = watch::channel(record.clone());
    let agent = AgentConfig {
        machine: machine.clone(),
        record,
        updates: Some(updates),
        ttl: config.agent_ttl,
        lease_file: config.data_dir.join(LEASE_FILE),
        started_file: Some(config.data_dir.join(STARTED_FILE)),
        state_poll: Duration::from_millis(500),
        health: Default::default(),
        reschedule_failed_units: config.reschedule_failed_units,
        resync: config.engine_reconcile_interval * 5,
    };
    let agent_config = agent.clone();
    let mut agent_task = tokio::spawn(agent::run(
        registry.clone(),
        manager,
        agent,
        shutdown.clone(),
    ));
    let token_limit = config.token_limit;
    let local = Arc::new(ManagerUnits {
        machine: machine.to_string(),
        manager: Arc::clone(&manager_for_exit),
        health: Arc::clone(&agent_config.health),
    });
    let api = ApiState::with_local_units(
        registry.clone(),
        token_limit,
        VERSION,
        local,
        shutdown.clone(),
    );
    // Sockets systemd passed (socket activation) replace api_listen, as fleet's socket unit did.
    let mut listeners = activated_listeners()?;
    if listeners.is_empty() {
        for url in &config.api_listen {
            listeners.push(Listener::bind(url, &config).await?);
            tracing::info!(url, "api: listening");
        }
    } else {
        tracing::info!(
            count = listeners.len(),
            "api: listening on sockets passed by systemd"
        );
    }
    let tokens = api_tokens(&config)?.map(Arc::new);
    for listener in &listeners {
        listener.check_authenticated(tokens.is_some(), &config)?;
    }
    let audit = config.audit_log().map(|path| {
        tracing::info!(path = %path.display(), "api: changes are recorded in the audit log");
        Arc::new(AuditLog::new(path)) as Arc<dyn AuditSink>
    });
    for listener in listeners {
        let access = Access {
            tokens: tokens.clone().filter(|_| listener.is_tcp()),
            audit: audit.clone(),
        };
        let router = router_with_access(Arc::clone(&api), access);
        tasks.push(tokio::spawn(serve(listener, router, shutdown.clone())));
    }

    notify_ready();
    let how = loop {
        tokio::select! {
            signal = signals.wait() => match signal {
                Signal::Stop(how) => break how,
                Signal::Reload => apply_reload(&config, &reload, &announce),
            },
            ended = &mut agent_task => {
                // The agent only ends on its own for what no retry fixes.
                let _ = stop.send(true);
                continuity.flush();
                return Err(match ended {
                    Ok(Err(why)) => StartError::Agent(why),
                    Ok(Ok(())) => StartError::AgentEnded("the agent stopped unexpectedly".into()),
                    Err(e) => StartError::AgentEnded(format!("the agent failed: {e}")),
                });
            }
        }
    };
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent_task).await;
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    match how {
        Stop::Leave => fleet_agent::leave(&registry, &*manager_for_exit, &agent_config).await,
        Stop::Detach => {
            tracing::info!("fleetd stopped; units keep running for the next fleetd to reattach")
        }
    }
    continuity.flush();
    Ok(())
}

/// Tells systemd (when it started fleetd as `Type=notify`) that fleetd is ready: listeners
/// bound, engine and agent running.
fn notify_ready() {
    let Ok(address) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        match address.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let target = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(b"READY=1", &target)?;
            }
            None => {
                socket.send_to(b"READY=1", &address)?;
            }
        }
        Ok(())
    })();
    if let Err(error) = sent {
        tracing::warn!(%error, address, "cannot notify systemd of readiness");
    }
}

/// This machine's unit logs for the API, from its unit manager.
/// This machine's units as the API shows them: through the unit manager.
struct ManagerUnits {
    machine: String,
    manager: Arc<dyn UnitManager>,
    health: Arc<fleet_agent::health::HealthCounters>,
}

#[async_trait::async_trait]
impl fleet_api::server::LocalUnits for ManagerUnits {
    fn machine(&self) -> String {
        self.machine.clone()
    }

    fn metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let checks = |result: &str, counter: &std::sync::atomic::AtomicU64| {
            format!(
                "fleet_health_checks_total{{result=\"{result}\"}} {}\n",
                counter.load(Relaxed)
            )
        };
        format!(
            "# HELP fleet_health_checks_total Health check rounds run on this machine, by result.\n\
             # TYPE fleet_health_checks_total counter\n{}{}\
             # HELP fleet_health_restarts_total Units restarted on this machine because their checks failed.\n\
             # TYPE fleet_health_restarts_total counter\n\
             fleet_health_restarts_total {}\n",
            checks("passed", &self.health.passed),
            checks("failed", &self.health.failed),
            self.health.restarts.load(Relaxed)
        )
    }

    async fn lines(&self, unit: &fleet_unit::UnitName, lines: usize) -> Option<Vec<String>> {
        self.manager.journal(unit, lines).await.ok()
    }

    async fn follow(
        &self,
        unit: &fleet_unit::UnitName,
    ) -> Option<tokio::sync::mpsc::Receiver<String>> {
        self.manager.follow(unit).await.ok()
    }

    async fn status(&self, unit: &fleet_unit::UnitName) -> Result<Option<(String, i32)>, String> {
        match self.manager.status(unit).await {
            Ok(status) => Ok(status.map(|s| (s.text, s.code))),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn description(&self, unit: &fleet_unit::UnitName) -> Option<String> {
        self.manager.description(unit).await
    }
}

/// How fleetd was asked to stop.
enum Stop {
    /// SIGTERM or SIGINT: leave the cluster as fleet did — stop and unload this machine's
    /// units (the engine places them elsewhere) and withdraw the machine at once.
    Leave,
    /// SIGQUIT: stop fleetd only (an upgrade): units keep running, presence and states stay
    /// until the lease expires, and the next fleetd re-attaches to both.
    Detach,
}

struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, StartError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|e| StartError::Process(format!("cannot handle signals: {e}")))
        };
        Ok(StopSignals {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            quit: install(SignalKind::quit())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// `step` of the start, unless a stop signal comes first (then `None`: fleetd stops
    /// before it has started). A SIGHUP meanwhile changes nothing: nothing runs yet.
    async fn unless_stopped<T>(
        &mut self,
        step: impl std::future::Future<Output = Result<T, StartError>>,
    ) -> Result<Option<T>, StartError> {
        tokio::pin!(step);
        loop {
            tokio::select! {
                done = &mut step => return done.map(Some),
                signal = self.wait() => if let Signal::Stop(_) = signal {
                    tracing::info!("fleetd stopped while starting");
                    return Ok(None);
                },
            }
        }
    }

    async fn wait(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop(Stop::Leave),
            _ = self.interrupt.recv() => Signal::Stop(Stop::Leave),
            _ = self.quit.recv() => Signal::Stop(Stop::Detach),
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}

enum Signal {
    Stop(Stop),
    Reload,
}

/// SIGHUP: reads the configuration again. The machine's metadata and address are announced
/// anew at once; options that shape what fleetd is made of (registry, directories, listeners,
/// identity) are reported as needing a restart; listeners are never dropped.
fn apply_reload(running: &Config, reload: &Reload, announce: &watch::Sender<MachineRecord>) {
    let (config, warnings) = match reload() {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(%error, "configuration not reloaded; the running one stays");
            return;
        }
    };
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let needs_restart = [
        ("etcd_servers", running.etcd_servers != config.etcd_servers),
        (
            "etcd_key_prefix",
            running.etcd_key_prefix != config.etcd_key_prefix,
        ),
        ("data_dir", running.data_dir != config.data_dir),
        ("runtime_dir", running.runtime_dir != config.runtime_dir),
        (
            "units_directory",
            running.units_directory != config.units_directory,
        ),
        ("api_listen", running.api_listen != config.api_listen),
        ("machine_id", running.machine_id != config.machine_id),
        ("unit_manager", running.unit_manager != config.unit_manager),
        ("agent_ttl", running.agent_ttl != config.agent_ttl),
        (
            "engine_reconcile_interval",
            running.engine_reconcile_interval != config.engine_reconcile_interval,
        ),
        (
            "engine_lease_ttl",
            running.engine_lease() != config.engine_lease(),
        ),
        (
            "disable_engine",
            running.disable_engine != config.disable_engine,
        ),
    ];
    for (option, changed) in needs_restart {
        if changed {
            tracing::warn!(
                option,
                "changed in the configuration; takes effect when fleetd restarts"
            );
        }
    }
    let public_ip = match config.public_ip.is_empty() {
        true => detect_public_ip().unwrap_or_default(),
        false => config.public_ip.clone(),
    };
    announce.send_if_modified(|record| {
        let changed = record.metadata != config.metadata || record.public_ip != public_ip;
        record.metadata = config.metadata.clone();
        record.public_ip = public_ip.clone();
        changed
    });
    tracing::info!("configuration reloaded");
}

/// How often the engine leader collects unit files no job refers to any more.
const COLLECT_UNIT_FILES: Duration = Duration::from_secs(300);

/// In the data directory: the machine lease's ID, adopted by the next fleetd.
const LEASE_FILE: &str = "machine-lease";
/// Which registry this machine knows and the highest revision it saw (`Continuity`).
const KNOWN_REGISTRY_FILE: &str = "registry-known.json";
/// In the data directory: the units the agent started in this boot (`fleet_agent::started`).
const STARTED_FILE: &str = "started-units";

/// Lifts the soft limit of open files to the hard one (as Go's runtime does for fleet 1.0):
/// fleetd holds a connection to each running unit's shim, and a machine of thousands of
/// units would pass the usual soft limit of 1,024.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the limit of open files");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the limit of open files"),
    }
}

/// The configured machine ID, else `/etc/machine-id`.
fn machine_id(config: &Config) -> Result<MachineId, StartError> {
    if !config.machine_id.is_empty() {
        return valid_machine_id(&config.machine_id)
            .map_err(|e| StartError::setting("machine_id", e));
    }
    let text = std::fs::read_to_string("/etc/machine-id").map_err(|e| {
        StartError::setting(
            "/etc/machine-id",
            format!("cannot read it ({e}); set machine_id in fleet.conf or FLEET_MACHINE_ID"),
        )
    })?;
    valid_machine_id(text.trim()).map_err(|e| StartError::setting("/etc/machine-id", e))
}

/// A machine ID as systemd makes them (`/etc/machine-id`): 32 lowercase hexadecimal digits.
/// fleet took any text, and machines whose IDs differ only in case or length were a way to
/// end up with two machines that are one.
fn valid_machine_id(id: &str) -> Result<MachineId, String> {
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        return Err(format!(
            "{id:?} is not a machine ID: 32 lowercase hexadecimal digits, as in /etc/machine-id"
        ));
    }
    MachineId::new(id.to_owned()).map_err(|e| e.to_string())
}

/// The source address of the default route (a UDP "connect" sends nothing).
fn detect_public_ip() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

async fn open_registry(config: &Config) -> Result<Arc<dyn KvStore>, StartError> {
    if config.etcd_servers.is_empty() {
        let path = config.data_dir.join("registry.redb");
        tracing::info!(path = %path.display(), "registry: embedded");
        let store = LocalStore::open(&path)?;
        return Ok(Arc::new(store));
    }
    let mut etcd = EtcdConfig::new(config.etcd_servers.clone(), config.etcd_key_prefix.clone());
    etcd.request_timeout = config.etcd_request_timeout;
    if !config.etcd_username.is_empty() {
        etcd.username = Some(config.etcd_username.clone());
        etcd.password = Some(config.etcd_password.0.clone());
    }
    etcd.ca_file = config.etcd_cafile.clone();
    etcd.cert_file = config.etcd_certfile.clone();
    etcd.key_file = config.etcd_keyfile.clone();
    tracing::info!(endpoints = ?config.etcd_servers, "registry: etcd");
    let mut delay = Duration::from_millis(200);
    loop {
        match EtcdStore::connect(&etcd).await {
            Ok(store) => return Ok(Arc::new(store)),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "etcd unreachable; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn unit_manager(
    config: &Config,
    machine: &MachineId,
    public_ip: &str,
    zygote: Option<Arc<Zygote>>,
) -> Result<Arc<dyn UnitManager>, StartError> {
    let configured = match config.unit_manager {
        UnitManagerChoice::Auto => None,
        UnitManagerChoice::Native => Some(ManagerKind::Native),
        UnitManagerChoice::Systemd => Some(ManagerKind::Systemd),
    };
    match ManagerKind::select(configured, Path::new("/")) {
        ManagerKind::Systemd => {
            // The system bus (DBUS_SYSTEM_BUS_ADDRESS if set), or the user's with systemd_user.
            let systemd = SystemdManager::connect(SystemdConfig {
                address: None,
                user: config.systemd_user,
                units_dir: config.units_directory.clone(),
                command_prefix: Vec::new(),
                root: "/".into(),
            })
            .await
            .map_err(|e| {
                StartError::UnitManager(format!(
                    "{e} (unit_manager=native runs units without systemd)"
                ))
            })?;
            tracing::info!(units = %config.units_directory.display(), "unit manager: systemd");
            Ok(systemd)
        }
        ManagerKind::Native => {
            let shim = std::env::current_exe().map_err(|e| {
                StartError::UnitManager(format!("cannot find fleetd's own binary: {e}"))
            })?;
            let supervisor = Supervisor::open(SupervisorConfig {
                units_dir: config.units_directory.clone(),
                run_dir: config.runtime_dir.join("native"),
                log_dir: config.data_dir.join("logs"),
                shim_command: vec![shim.display().to_string(), "shim".into()],
                zygote,
                machine_id: machine.to_string(),
                public_ip: public_ip.to_owned(),
                hostname: fleet_native::host::hostname(),
                boot_id: fleet_native::host::boot_id(),
                log_max_bytes: 4 * 1024 * 1024,
                host_units: config.native_host_units.iter().cloned().collect(),
            })
            .map_err(|e| StartError::UnitManager(e.to_string()))?;
            tracing::info!(units = %config.units_directory.display(), "unit manager: native supervisor");
            let supervisor = Arc::new(supervisor);
            let bindings = Arc::clone(&supervisor);
            // BindsTo= is kept at every change of a unit's state; the period is a safety net.
            tokio::spawn(async move { bindings.keep_bindings(Duration::from_secs(10)).await });
            Ok(supervisor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_what_systemd_makes() {
        let check = |id: &str, valid: bool| {
            assert_eq!(valid_machine_id(id).is_ok(), valid, "{id:?}");
        };
        check("3d1219c7c4c5404aaa1f6d2a48adfda4", true);
        check("3D1219C7C4C5404AAA1F6D2A48ADFDA4", false);
        check("xyz", false);
        check("3d1219c7c4c5404aaa1f6d2a48adfda", false);
        check("3d1219c7c4c5404aaa1f6d2a48adfda4a", false);
        check("3d1219c7-c4c5-404a-aa1f-6d2a48adfda4", false);
        assert_eq!(
            valid_machine_id("xyz").unwrap_err(),
            "\"xyz\" is not a machine ID: 32 lowercase hexadecimal digits, as in /etc/machine-id"
        );
    }
}
