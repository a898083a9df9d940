//! Wiring: from a configuration to a running fleetd — registry (etcd, or the embedded store
//! when no etcd is configured), unit manager, engine and agent — until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet_agent::agent::{self, AgentConfig};
use fleet_agent::manager::{ManagerKind, UnitManager};
use fleet_agent::native::supervisor::{Supervisor, SupervisorConfig};
use fleet_engine::reconciler::{self, EngineConfig};
use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{KvStore, Registry};
use fleet_unit::MachineId;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{Config, UnitManagerChoice};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs fleetd until it is told to stop; an `Err` is why it could not start.
pub async fn run(config: Config) -> Result<(), String> {
    let machine = machine_id(&config)?;
    let public_ip = match config.public_ip.is_empty() {
        true => detect_public_ip().unwrap_or_default(),
        false => config.public_ip.clone(),
    };
    tracing::info!(%machine, public_ip, "fleetd {VERSION} starting");
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    let store = open_registry(&config).await?;
    let registry = Registry::open(store).await.map_err(|e| e.to_string())?;
    let manager = unit_manager(&config, &machine, &public_ip)?;

    let (stop, shutdown) = watch::channel(false);
    let mut tasks = Vec::new();
    if !config.disable_engine {
        let engine = EngineConfig {
            machine: machine.clone(),
            lease_ttl: config.engine_reconcile_interval * 5,
            resync: config.engine_reconcile_interval,
            version: VERSION.into(),
        };
        tasks.push(tokio::spawn(reconciler::run(
            registry.clone(),
            engine,
            shutdown.clone(),
        )));
    }
    let capabilities = vec![manager.kind().as_str().to_owned()];
    let agent = AgentConfig {
        machine: machine.clone(),
        record: MachineRecord {
            public_ip,
            metadata: config.metadata.clone(),
            version: VERSION.into(),
            capabilities,
        },
        ttl: config.agent_ttl,
        lease_file: config.data_dir.join("machine-lease"),
        state_poll: Duration::from_millis(500),
        resync: config.engine_reconcile_interval * 5,
    };
    tasks.push(tokio::spawn(agent::run(
        registry.clone(),
        manager,
        agent,
        shutdown,
    )));

    wait_for_stop_signal().await?;
    tracing::info!("fleetd stopping; units keep running (restart fleetd to reattach)");
    let _ = stop.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    Ok(())
}

async fn wait_for_stop_signal() -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// The configured machine ID, else `/etc/machine-id`.
fn machine_id(config: &Config) -> Result<MachineId, String> {
    if !config.machine_id.is_empty() {
        return MachineId::new(config.machine_id.clone()).map_err(|e| e.to_string());
    }
    let text = std::fs::read_to_string("/etc/machine-id").map_err(|e| {
        format!(
            "cannot read /etc/machine-id ({e}); set machine_id in fleet.conf or FLEET_MACHINE_ID"
        )
    })?;
    MachineId::new(text.trim()).map_err(|e| format!("/etc/machine-id: {e}"))
}

/// The source address of the default route (a UDP "connect" sends nothing).
fn detect_public_ip() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

async fn open_registry(config: &Config) -> Result<Arc<dyn KvStore>, String> {
    if config.etcd_servers.is_empty() {
        let path = config.data_dir.join("registry.redb");
        tracing::info!(path = %path.display(), "registry: embedded");
        let store = LocalStore::open(&path).map_err(|e| e.to_string())?;
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
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn unit_manager(
    config: &Config,
    machine: &MachineId,
    public_ip: &str,
) -> Result<Arc<dyn UnitManager>, String> {
    let configured = match config.unit_manager {
        UnitManagerChoice::Auto => None,
        UnitManagerChoice::Native => Some(ManagerKind::Native),
        UnitManagerChoice::Systemd => Some(ManagerKind::Systemd),
    };
    match ManagerKind::select(configured, Path::new("/")) {
        ManagerKind::Systemd => Err(
            "this machine runs systemd, but the systemd unit manager is not built yet; set unit_manager=native"
                .into(),
        ),
        ManagerKind::Native => {
            let shim = std::env::current_exe().map_err(|e| format!("cannot find fleetd's own binary: {e}"))?;
            let supervisor = Supervisor::open(SupervisorConfig {
                units_dir: config.units_directory.clone(),
                run_dir: config.data_dir.join("run"),
                shim_command: vec![shim.display().to_string(), "shim".into()],
                machine_id: machine.to_string(),
                public_ip: public_ip.to_owned(),
                hostname: hostname(),
                boot_id: boot_id(),
                log_max_bytes: 4 * 1024 * 1024,
            })
            .map_err(|e| e.to_string())?;
            tracing::info!(units = %config.units_directory.display(), "unit manager: native supervisor");
            Ok(Arc::new(supervisor))
        }
    }
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").replace('-', "")
}

fn read_trimmed(path: impl Into<PathBuf>) -> String {
    std::fs::read_to_string(path.into())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
