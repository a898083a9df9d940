//! The shim: one process per running unit (`fleetd shim <run dir>`), which owns the unit's
//! processes and outlives fleetd, so a fleetd restart neither restarts nor orphans a unit.
//!
//! Its run directory holds what the supervisor wrote (`spec.json`) and what the shim keeps
//! current: `state.json` (replaced atomically at every change), `shim.pid`, the control socket
//! `shim.sock` (one request per line: `status`, `stop`, `reload`, `watch`; answers are status
//! JSON lines) and the unit's log. The shim exits once the unit is dead or failed for good,
//! leaving `state.json` with the final state.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fleet_unit::UnitFile;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use super::log::{rfc3339, LogFiles, Stream, UnitLog};
use super::process::{identity, Identity};
use super::reaper::Reaper;
use super::runner::{Control, RunContext, Runner};
use super::service::{Service, WorkingDirectory};
use super::specifiers::{SpecifierContext, UserInfo};
use super::status::{RunResult, SubState, UnitStatus};
use super::unit_environment::{unit_environment, MachineEnvironment};

pub const SPEC: &str = "spec.json";
pub const STATE: &str = "state.json";
pub const SOCKET: &str = "shim.sock";
pub const PID: &str = "shim.pid";

/// Records of output waiting for the log file: with records of at most
/// [`super::runner::LINE_MAX`] bytes, a unit's output holds at most this many of them in the
/// shim's memory (the unit waits on its pipe meanwhile, as it would on journald).
const LOG_BACKLOG: usize = 128;

/// What the supervisor tells a shim to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimSpec {
    pub unit_name: String,
    pub unit_text: String,
    pub machine_id: String,
    pub public_ip: String,
    pub hostname: String,
    pub boot_id: String,
    /// Where the unit's log is kept (see `log`).
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
}

/// Runs a shim in `dir` until its unit is dead or failed. Call from a fresh process: it makes
/// that process a session leader and a child subreaper.
pub async fn run(dir: &Path) -> io::Result<UnitStatus> {
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
    // Before its PID is written: working in its run directory is how fleetd knows a shim
    // (a forked one has fleetd's command line).
    std::env::set_current_dir(dir)?;
    std::fs::write(dir.join(PID), std::process::id().to_string())?;
    let spec: ShimSpec = serde_json::from_slice(&std::fs::read(dir.join(SPEC))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{SPEC}: {e}")))?;

    let mut log = UnitLog::open(
        LogFiles::of(&spec.log_dir, &spec.unit_name),
        spec.log_max_bytes,
    )?;
    let (log_sender, mut records) = mpsc::channel::<(Stream, String)>(LOG_BACKLOG);
    let log_task = tokio::spawn(async move {
        while let Some((stream, line)) = records.recv().await {
            if let Err(e) = log.append(stream, &line, SystemTime::now()) {
                tracing::warn!(error = %e, "cannot write the unit log");
            }
        }
    });

    let (status, mut changes) = watch::channel(initial_status());
    let (controls, control_receiver) = mpsc::channel(16);
    // Bound by a relative name, from inside the run directory: a socket path is limited to
    // 108 bytes, and a run directory of a long unit name is longer.
    let listener = bind(Path::new(SOCKET))?;
    let server = tokio::spawn(serve(listener, controls, status.subscribe()));

    let state_path = dir.join(STATE);
    let mut reported = FirstReport::default();
    let final_status = match prepare(&spec, log_sender.clone()).await {
        Ok((service, context)) => {
            let runner = Runner::new(service, context, status, control_receiver);
            let run = tokio::spawn(runner.run());
            tokio::pin!(run);
            loop {
                tokio::select! {
                    finished = &mut run => {
                        break finished.map_err(|e| io::Error::other(e.to_string()))?;
                    }
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The runner is done; its result is next.
                            break (&mut run).await.map_err(|e| io::Error::other(e.to_string()))?;
                        }
                        let current = changes.borrow_and_update().clone();
                        write_state(&state_path, &current)?;
                        reported.tell();
                    }
                }
            }
        }
        Err(reason) => {
            let _ = log_sender.send((Stream::Supervisor, reason.clone())).await;
            UnitStatus {
                sub: SubState::Failed,
                result: RunResult::Resources,
                reason: Some(reason),
                ..initial_status()
            }
        }
    };
    write_state(&state_path, &final_status)?;
    server.abort();
    let _ = std::fs::remove_file(dir.join(SOCKET));
    drop(log_sender);
    let _ = tokio::time::timeout(Duration::from_secs(2), log_task).await;
    // shim.pid stays: it names a process that has ended (a reader checks), and the next shim
    // of the unit writes over it instead of making a new file.
    Ok(final_status)
}

/// Tells the supervisor, once, on standard output (a pipe it reads), that the first state is
/// written; standard output is closed then. A shim that ends sooner closes it by exiting.
#[derive(Default)]
struct FirstReport {
    told: bool,
}

impl FirstReport {
    fn tell(&mut self) {
        if std::mem::replace(&mut self.told, true) {
            return;
        }
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(b"reported\n").and_then(|()| out.flush());
    }
}

fn initial_status() -> UnitStatus {
    UnitStatus::initial(rfc3339(SystemTime::now()))
}

/// Loads the unit and everything its processes need; `Err` is the reason it cannot start.
async fn prepare(
    spec: &ShimSpec,
    log: mpsc::Sender<(Stream, String)>,
) -> Result<(Service, RunContext), String> {
    let unit = UnitFile::parse(&spec.unit_text).map_err(|e| e.message())?;
    let mut context = SpecifierContext {
        unit_name: spec.unit_name.clone(),
        machine_id: spec.machine_id.clone(),
        boot_id: spec.boot_id.clone(),
        hostname: spec.hostname.clone(),
        user: UserInfo::default(),
    };
    // User= decides %u, %h, ...: read it first, then load again with the user known.
    let first = Service::load(&unit, &context).map_err(|e| e.0)?;
    let who = identity(first.user.as_deref(), first.group.as_deref())?;
    context.user = UserInfo {
        name: who.user.clone(),
        uid: who.uid,
        home: who.home.clone(),
        shell: who.shell.clone(),
    };
    let service = Service::load(&unit, &context).map_err(|e| e.0)?;
    for warning in &service.warnings {
        let _ = log.send((Stream::Supervisor, warning.clone())).await;
    }
    // systemd's default is 0022, whatever fleetd's own (0077: its files hold unit secrets).
    let umask = service.umask.unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    let machine = MachineEnvironment {
        machine_id: spec.machine_id.clone(),
        public_ip: spec.public_ip.clone(),
    };
    let (environment, warnings) = unit_environment(&service, &who, &machine)?;
    for warning in warnings {
        let _ = log.send((Stream::Supervisor, warning)).await;
    }
    let working_directory = working_directory(&service, &who)?;
    let identity = service.user.is_some().then_some(who);
    Ok((
        service,
        RunContext {
            environment,
            working_directory,
            identity,
            reaper: Reaper::start().map_err(|e| format!("cannot watch child processes: {e}"))?,
            log,
            poll: Duration::from_millis(50),
            // Abstract (no path, so no length limit), unique to this shim.
            notify_socket: Some(format!("@fleet-notify/{}", std::process::id())),
        },
    ))
}

fn working_directory(service: &Service, who: &Identity) -> Result<PathBuf, String> {
    let missing = |path: &Path| {
        format!(
            "Changing to the requested working directory failed: {}: No such file or directory",
            path.display()
        )
    };
    match &service.working_directory {
        None => Ok(PathBuf::from("/")),
        Some(WorkingDirectory::Home) => Ok(PathBuf::from(&who.home)),
        Some(WorkingDirectory::Path { path, optional }) => match (path.is_dir(), optional) {
            (true, _) => Ok(path.clone()),
            (false, true) => Ok(PathBuf::from("/")),
            (false, false) => Err(missing(path)),
        },
    }
}

/// Replaces `state.json` atomically: a reader sees the old state or the new one, never half.
pub fn write_state(path: &Path, status: &UnitStatus) -> io::Result<()> {
    let json = serde_json::to_vec(status).map_err(io::Error::other)?;
    crate::replace_file(path, &path.with_extension("json.tmp"), &json)
}

/// Reads a unit's `state.json`; `None` if there is none yet.
pub fn read_state(dir: &Path) -> io::Result<Option<UnitStatus>> {
    match std::fs::read(dir.join(STATE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{STATE}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Connects to the control socket of the shim of run directory `dir`.
pub async fn connect(dir: &Path) -> io::Result<UnixStream> {
    // Through the directory's descriptor: the full path of a long unit name's socket would
    // pass the 108-byte limit of socket addresses.
    let directory = std::fs::File::open(dir)?;
    let short = format!("/proc/self/fd/{}/{SOCKET}", directory.as_raw_fd());
    UnixStream::connect(&short).await
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Only the supervisor (same user) talks to a shim.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

async fn serve(
    listener: UnixListener,
    controls: mpsc::Sender<Control>,
    status: watch::Receiver<UnitStatus>,
) {
    // Sessions end with the server (the shim aborts it once it has written its final state),
    // so a watcher that sees its connection close can read that state.
    let mut sessions = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        while sessions.try_join_next().is_some() {}
        sessions.spawn(session(stream, controls.clone(), status.clone()));
    }
}

/// One client: requests one per line, answers as status JSON lines.
async fn session(
    stream: UnixStream,
    controls: mpsc::Sender<Control>,
    mut status: watch::Receiver<UnitStatus>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(request)) = lines.next_line().await {
        let control = match request.trim() {
            "stop" => Some(Control::Stop),
            "reload" => Some(Control::Reload),
            "status" | "watch" => None,
            other => {
                let error = serde_json::json!({ "error": format!("unknown request {other:?}") });
                let _ = writer.write_all(format!("{error}\n").as_bytes()).await;
                continue;
            }
        };
        if let Some(control) = control {
            let _ = controls.send(control).await;
        }
        if request.trim() == "watch" {
            loop {
                let current = status.borrow_and_update().clone();
                if send(&mut writer, &current).await.is_err() {
                    return;
                }
                if status.changed().await.is_err() {
                    // The unit is done; the connection closes when the server is aborted.
                    std::future::pending::<()>().await;
                }
            }
        }
        let current = status.borrow().clone();
        if send(&mut writer, &current).await.is_err() {
            return;
        }
    }
}

async fn send(
    writer: &mut tokio::net::unix::OwnedWriteHalf,
    status: &UnitStatus,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(status).map_err(io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await
}
