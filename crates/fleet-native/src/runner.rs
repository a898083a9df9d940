//! One service's lifecycle, as systemd's service state machine runs it: `ExecStartPre=`,
//! `ExecStart=` (by `Type=`), `ExecStartPost=`, running, `ExecStop=`, SIGTERM and SIGKILL to
//! every process of the unit, `ExecStopPost=`, then `Restart=` within the start limit.
//!
//! It runs inside a shim, the parent (or subreaper) of every process of the unit, so "the
//! unit's processes" are the shim's descendants. Exits come from the [`Reaper`]; output goes to
//! the log task; every change of state is published on a `watch` channel.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::command::ExecCommand;
use super::log::{rfc3339, Stream};
use super::process::{descendants, resolve_executable, signal_each, spawn, Identity, Launch};
use super::reaper::Reaper;
use super::service::{KillMode, RestartPolicy, Service, ServiceType};
use super::status::{Exit, RunResult, SubState, UnitStatus};

/// What the supervisor can ask of a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    Reload,
}

/// Everything a run needs besides the service itself.
pub struct RunContext {
    pub environment: BTreeMap<String, String>,
    pub working_directory: PathBuf,
    /// The identity to switch to for commands without the `+`/`!` prefix.
    pub identity: Option<Identity>,
    pub reaper: Reaper,
    pub log: mpsc::Sender<(Stream, String)>,
    /// How often to look for the unit's processes while stopping.
    pub poll: Duration,
    /// `$NOTIFY_SOCKET` for a `Type=notify` service: a path, or `@name` for an abstract socket.
    pub notify_socket: Option<String>,
}

pub struct Runner {
    service: Service,
    context: RunContext,
    status: watch::Sender<UnitStatus>,
    controls: mpsc::Receiver<Control>,
    starts: VecDeque<Instant>,
    restarts: u32,
}

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// A command failed: how, and the words for it.
    Failed(RunResult, Option<Exit>, String),
    /// A stop was asked for meanwhile.
    Stopped,
}

/// How the processes signalled to stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    InTime,
    /// Past `TimeoutStopSec=`: SIGKILLed, unless `SendSIGKILL=no`.
    TimedOut,
}

impl Runner {
    pub fn new(
        service: Service,
        context: RunContext,
        status: watch::Sender<UnitStatus>,
        controls: mpsc::Receiver<Control>,
    ) -> Runner {
        Runner {
            service,
            context,
            status,
            controls,
            starts: VecDeque::new(),
            restarts: 0,
        }
    }

    /// Starts the service and runs it until it is dead or failed for good (restarts
    /// included); returns the final status.
    pub async fn run(mut self) -> UnitStatus {
        loop {
            if self.start_limit_hit() {
                let reason = format!(
                    "Start request repeated too quickly ({} starts within {:?}).",
                    self.service.start_limit_burst, self.service.start_limit_interval
                );
                self.note(&reason).await;
                self.set(
                    SubState::Failed,
                    RunResult::StartLimitHit,
                    None,
                    None,
                    Some(reason),
                );
                return self.current();
            }
            let (result, exit, reason, stop_requested) = self.activation().await;
            let clean = result == RunResult::Success;
            let final_sub = if clean {
                SubState::Dead
            } else {
                SubState::Failed
            };
            if stop_requested || !self.should_restart(result, exit) {
                self.set(final_sub, result, None, exit, reason);
                return self.current();
            }
            self.set(SubState::AutoRestart, result, None, exit, reason);
            let wait = self.service.restart_sec;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                control = self.controls.recv() => {
                    if matches!(control, Some(Control::Stop) | None) {
                        self.set(final_sub, result, None, exit, None);
                        return self.current();
                    }
                }
            }
            self.restarts += 1;
            self.note(&format!(
                "Scheduled restart job, restart counter is at {}.",
                self.restarts
            ))
            .await;
        }
    }

    /// One start-to-end: (result, exit, reason, whether a stop was asked for).
    async fn activation(&mut self) -> (RunResult, Option<Exit>, Option<String>, bool) {
        self.starts.push_back(Instant::now());
        let deadline = self
            .service
            .timeout_start
            .map(|t| tokio::time::Instant::now() + t);
        let started = self.start(deadline).await;
        let started_up = started.is_ok();
        let (mut result, mut exit, mut reason, stop_requested) = match started {
            Ok((main, exited)) => match self.running(main, exited).await {
                Ok(ended) => ended,
                Err(failure) => failure_parts(failure),
            },
            Err(failure) => failure_parts(failure),
        };
        let outcome = (result, exit);
        if let Err(Failure::Failed(r, e, why)) = self.stop_sequence(started_up, outcome).await {
            if result == RunResult::Success {
                (result, exit, reason) = (r, e, Some(why));
            }
        }
        if stop_requested && result == RunResult::Success {
            reason = None;
        }
        (result, exit, reason, stop_requested)
    }

    /// Runs the start commands; returns the main process if the type has one, else how a
    /// oneshot's last `ExecStart=` ended (systemd's main process status for it).
    async fn start(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Option<u32>, Option<Exit>), Failure> {
        self.set_main_pid(None);
        let pre = self.service.exec_start_pre.clone();
        self.set(SubState::StartPre, RunResult::Success, None, None, None);
        self.run_all(&pre, deadline).await?;
        self.set(SubState::Start, RunResult::Success, None, None, None);
        let start = self.service.exec_start.clone();
        let (main, exited) = match self.service.service_type {
            ServiceType::Oneshot => (None, self.run_all(&start, deadline).await?),
            ServiceType::Forking => {
                self.run_all(&start, deadline).await?;
                (self.forked_main_pid(), None)
            }
            ServiceType::Simple | ServiceType::Exec => (Some(self.launch(&start[0])?), None),
            ServiceType::Notify => (Some(self.launch_notify(&start[0], deadline).await?), None),
        };
        self.set_main_pid(main);
        self.set(SubState::StartPost, RunResult::Success, main, None, None);
        let post = self.service.exec_start_post.clone();
        self.run_all(&post, deadline).await?;
        Ok((main, exited))
    }

    /// `$MAINPID` for the commands that run beside the main process (ExecStartPost=,
    /// ExecReload=, ExecStop=), as systemd sets it; none once it has ended.
    fn set_main_pid(&mut self, main: Option<u32>) {
        match main {
            Some(pid) => self
                .context
                .environment
                .insert("MAINPID".into(), pid.to_string()),
            None => self.context.environment.remove("MAINPID"),
        };
    }

    /// Starts the main process of a `Type=notify` service and waits for its `READY=1` on
    /// `$NOTIFY_SOCKET` (bounded by the start timeout; a main process that exits first fails
    /// the start).
    async fn launch_notify(
        &mut self,
        command: &ExecCommand,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<u32, Failure> {
        let failed = |why: String| Failure::Failed(RunResult::Resources, None, why);
        let address = self
            .context
            .notify_socket
            .clone()
            .ok_or_else(|| failed("Type=notify needs a notify socket".into()))?;
        let socket = notify_socket(&address)
            .map_err(|e| failed(format!("cannot create the notify socket {address}: {e}")))?;
        self.context
            .environment
            .insert("NOTIFY_SOCKET".into(), address);
        let pid = self.launch(command)?;
        let exited = self.context.reaper.wait(pid);
        tokio::pin!(exited);
        let timeout = until(deadline);
        tokio::pin!(timeout);
        let mut buffer = vec![0u8; 4096];
        loop {
            tokio::select! {
                received = socket.recv(&mut buffer) => {
                    let Ok(size) = received else { continue };
                    let message = String::from_utf8_lossy(&buffer[..size]);
                    if message.lines().any(|l| l.trim() == "READY=1") {
                        return Ok(pid);
                    }
                }
                exit = &mut exited => {
                    let exit = exit.unwrap_or(Exit::Code(0));
                    let why = format!("Main process exited before READY=1, {}.", describe(exit));
                    self.note(&why).await;
                    let result = match judge(exit).0 {
                        RunResult::Success => RunResult::Resources,
                        other => other,
                    };
                    return Err(Failure::Failed(result, Some(exit), why));
                }
                _ = &mut timeout => {
                    signal_each(&[pid], Signal::SIGTERM);
                    let why = "Start operation timed out (no READY=1).".to_string();
                    self.note(&why).await;
                    return Err(Failure::Failed(RunResult::Timeout, None, why));
                }
                control = self.controls.recv() => {
                    if matches!(control, Some(Control::Stop) | None) {
                        return Err(Failure::Stopped);
                    }
                }
            }
        }
    }

    /// The main PID of a forking service: from `PIDFile=`, else the only process left.
    fn forked_main_pid(&self) -> Option<u32> {
        if let Some(path) = &self.service.pid_file {
            let text = std::fs::read_to_string(path).ok()?;
            return text.trim().parse().ok();
        }
        match descendants(std::process::id()).as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// Running: until the main process exits (or, without one, until told to stop).
    /// Returns how it ended (`exited`: how a oneshot's command ended).
    async fn running(
        &mut self,
        main: Option<u32>,
        exited: Option<Exit>,
    ) -> Result<(RunResult, Option<Exit>, Option<String>, bool), Failure> {
        let remain = self.service.service_type == ServiceType::Oneshot;
        if remain && !self.service.remain_after_exit {
            return Ok((RunResult::Success, exited, None, false));
        }
        let sub = if main.is_some() {
            SubState::Running
        } else {
            SubState::Exited
        };
        self.set(sub, RunResult::Success, main, None, None);
        let waiter = main.map(|pid| self.context.reaper.wait(pid));
        let main_exited = async move {
            match waiter {
                Some(waiter) => waiter.await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::pin!(main_exited);
        loop {
            tokio::select! {
                exit = &mut main_exited => {
                    let exit = exit.unwrap_or(Exit::Code(0));
                    self.set_main_pid(None);
                    self.note(&format!("Main process exited, {}.", describe(exit))).await;
                    let (result, reason) = judge(exit);
                    return Ok((result, Some(exit), reason, false));
                }
                control = self.controls.recv() => match control {
                    Some(Control::Reload) => {
                        let reload = self.service.exec_reload.clone();
                        self.set(SubState::Reload, RunResult::Success, main, None, None);
                        if let Err(Failure::Failed(_, _, why)) = self.run_all(&reload, None).await {
                            self.note(&format!("Reload failed: {why}")).await;
                        }
                        self.set(sub, RunResult::Success, main, None, None);
                    }
                    Some(Control::Stop) | None => return Ok((RunResult::Success, exited, None, true)),
                },
            }
        }
    }

    /// When a stop phase begun now must be over (`TimeoutStopSec=`, per phase as in systemd).
    fn stop_deadline(&self) -> Option<tokio::time::Instant> {
        self.service
            .timeout_stop
            .map(|t| tokio::time::Instant::now() + t)
    }

    /// `ExecStop=` (when the start had succeeded: also after the main process ended on its
    /// own, as systemd does), then the signals, then `ExecStopPost=`; each told how the unit
    /// fared so far, as systemd tells them (`$SERVICE_RESULT`, and `$EXIT_CODE` and
    /// `$EXIT_STATUS` once the main process has ended).
    async fn stop_sequence(
        &mut self,
        started_up: bool,
        (result, exit): (RunResult, Option<Exit>),
    ) -> Result<(), Failure> {
        let main = self.status.borrow().main_pid;
        // A main process still running ends during the stop: how it ended is told to
        // ExecStopPost= (systemd: `killed`, `TERM` after a plain stop).
        let main_exit = match exit {
            None => main.map(|pid| self.context.reaper.wait(pid)),
            Some(_) => None,
        };
        let mut outcome = Ok(());
        if started_up && !self.service.exec_stop.is_empty() {
            self.set_sub(SubState::Stop);
            let stop = self.service.exec_stop.clone();
            outcome = self.run_stop_commands(&stop, result, exit).await;
        }
        let mut result = result;
        let ended = self.kill_remaining(main).await;
        self.set_main_pid(None);
        let mut exit = exit;
        if let Some(main_exit) = main_exit {
            // Gone means reaped, so its exit is there (none when it outlived the stop).
            let reaped = tokio::time::timeout(Duration::from_millis(100), main_exit).await;
            exit = reaped.ok().and_then(Result::ok);
        }
        if ended == Ended::TimedOut {
            // systemd: a unit that outlived its stop timeout failed with `timeout`, and its
            // ExecStopPost= is told so.
            let why = "State 'stop-sigterm' timed out.".to_owned();
            outcome = outcome.and(Err(Failure::Failed(RunResult::Timeout, None, why)));
            if result == RunResult::Success {
                result = RunResult::Timeout;
            }
        }
        self.set_sub(SubState::StopPost);
        let post = self.service.exec_stop_post.clone();
        let post_outcome = self.run_stop_commands(&post, result, exit).await;
        self.kill_remaining(None).await;
        outcome.and(post_outcome)
    }

    /// Runs stop commands (each phase bounded by `TimeoutStopSec=`) with the unit's
    /// environment and what systemd tells them of how the unit fared.
    async fn run_stop_commands(
        &mut self,
        commands: &[ExecCommand],
        result: RunResult,
        exit: Option<Exit>,
    ) -> Result<(), Failure> {
        let unit_environment = self.context.environment.clone();
        self.context
            .environment
            .extend(stop_environment(result, exit));
        let deadline = self.stop_deadline();
        let outcome = self.run_all_unstoppable(commands, deadline).await;
        self.context.environment = unit_environment;
        outcome
    }

    /// SIGTERM (the `KillSignal=`), then after `TimeoutStopSec=` SIGKILL, to the processes
    /// `KillMode=` selects; whether they ended within the timeout.
    async fn kill_remaining(&mut self, main: Option<u32>) -> Ended {
        let me = std::process::id();
        let targets = |mode: KillMode, main: Option<u32>| -> Vec<u32> {
            match mode {
                KillMode::ControlGroup => descendants(me),
                KillMode::Process | KillMode::Mixed => main.into_iter().collect(),
                KillMode::None => Vec::new(),
            }
        };
        let mode = self.service.kill_mode;
        let first = targets(mode, main);
        if first.is_empty() && mode != KillMode::Mixed {
            return Ended::InTime;
        }
        self.set_sub(SubState::StopSigterm);
        let signal = Signal::try_from(self.service.kill_signal).unwrap_or(Signal::SIGTERM);
        signal_each(&first, signal);
        let ended = match self.wait_gone(&first, self.service.timeout_stop).await {
            true => Ended::InTime,
            false => Ended::TimedOut,
        };
        if ended == Ended::InTime && mode != KillMode::Mixed {
            return ended;
        }
        if !self.service.send_sigkill {
            if ended == Ended::TimedOut {
                self.note("State 'stop-sigterm' timed out. Skipping SIGKILL.")
                    .await;
            }
            return ended;
        }
        let rest = match mode {
            KillMode::Mixed | KillMode::ControlGroup => descendants(me),
            _ => first.clone(),
        };
        if rest.is_empty() {
            return ended;
        }
        if ended == Ended::TimedOut {
            self.note("State 'stop-sigterm' timed out. Killing.").await;
        }
        self.set_sub(SubState::StopSigkill);
        signal_each(&rest, Signal::SIGKILL);
        self.wait_gone(&rest, Some(Duration::from_secs(10))).await;
        ended
    }

    /// Whether every one of `pids` has ended within `timeout`.
    async fn wait_gone(&self, pids: &[u32], timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let alive = descendants(std::process::id());
            if !pids.iter().any(|pid| alive.contains(pid)) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            tokio::time::sleep(self.context.poll).await;
        }
    }

    /// Runs `commands` one after another; a stop request aborts. How the last one ended.
    async fn run_all(
        &mut self,
        commands: &[ExecCommand],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Exit>, Failure> {
        let mut last = None;
        for command in commands {
            last = self.run_one(command, deadline, true).await?;
        }
        Ok(last)
    }

    /// Runs `commands` one after another, not interruptible (stop commands).
    async fn run_all_unstoppable(
        &mut self,
        commands: &[ExecCommand],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Failure> {
        let mut outcome = Ok(());
        for command in commands {
            if let Err(failure) = self.run_one(command, deadline, false).await {
                outcome = outcome.and(Err(failure));
            }
        }
        outcome
    }

    /// Runs one command to its end; how it ended (nothing when it could not start and that
    /// is ignored). A `-` command's failure is logged and ignored.
    async fn run_one(
        &mut self,
        command: &ExecCommand,
        deadline: Option<tokio::time::Instant>,
        stoppable: bool,
    ) -> Result<Option<Exit>, Failure> {
        let pid = match self.launch(command) {
            Ok(pid) => pid,
            Err(failure) if command.ignore_failure => {
                self.note(&format!("{failure:?} (ignored)")).await;
                return Ok(None);
            }
            Err(failure) => return Err(failure),
        };
        let exited = self.context.reaper.wait(pid);
        tokio::pin!(exited);
        let timeout = until(deadline);
        tokio::pin!(timeout);
        let exit = loop {
            tokio::select! {
                exit = &mut exited => break exit.unwrap_or(Exit::Code(0)),
                _ = &mut timeout => {
                    signal_each(&[pid], Signal::SIGKILL);
                    let why = format!("{} timed out.", command.display());
                    self.note(&why).await;
                    return Err(Failure::Failed(RunResult::Timeout, None, why));
                }
                control = self.controls.recv(), if stoppable => {
                    if matches!(control, Some(Control::Stop) | None) {
                        signal_each(&[pid], Signal::SIGTERM);
                        return Err(Failure::Stopped);
                    }
                }
            }
        };
        if exit == Exit::Code(0) {
            return Ok(Some(exit));
        }
        let why = format!("{} exited, {}.", command.display(), describe(exit));
        if command.ignore_failure {
            self.note(&format!("{why} (ignored)")).await;
            return Ok(Some(exit));
        }
        self.note(&why).await;
        let (result, _) = judge(exit);
        Err(Failure::Failed(result, Some(exit), why))
    }

    /// Spawns a command with the unit's environment, its output piped to the log.
    fn launch(&mut self, command: &ExecCommand) -> Result<u32, Failure> {
        let (path, argv) = command.expand(&self.context.environment);
        let failed = |why: String| Failure::Failed(RunResult::Resources, None, why);
        let program = resolve_executable(&path).map_err(failed)?;
        let identity = match command.privileged {
            true => None,
            false => self.context.identity.clone(),
        };
        let launch = Launch {
            program,
            argv,
            environment: self.context.environment.clone(),
            working_directory: self.context.working_directory.clone(),
            identity,
        };
        let mut child = spawn(&launch).map_err(|e| {
            failed(format!(
                "Failed to execute {}: {e}",
                launch.program.display()
            ))
        })?;
        for (stream, pipe) in [
            (Stream::Stdout, child.stdout.take().map(OwnedFd::from)),
            (Stream::Stderr, child.stderr.take().map(OwnedFd::from)),
        ] {
            if let Some(fd) = pipe {
                forward(stream, fd, self.context.log.clone());
            }
        }
        Ok(child.id())
    }

    fn start_limit_hit(&mut self) -> bool {
        let interval = self.service.start_limit_interval;
        let burst = self.service.start_limit_burst as usize;
        if interval.is_zero() || burst == 0 {
            return false;
        }
        let now = Instant::now();
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > interval)
        {
            self.starts.pop_front();
        }
        self.starts.len() >= burst
    }

    fn should_restart(&self, result: RunResult, exit: Option<Exit>) -> bool {
        let clean = result == RunResult::Success;
        let unclean_signal = matches!(exit, Some(Exit::Signal(s)) if !matches!(s, 1 | 2 | 13 | 15));
        match self.service.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnSuccess => clean,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::OnAbnormal => unclean_signal || result == RunResult::Timeout,
            RestartPolicy::OnAbort => unclean_signal,
            RestartPolicy::OnWatchdog => false,
        }
    }

    fn current(&self) -> UnitStatus {
        self.status.borrow().clone()
    }

    fn set(
        &self,
        sub: SubState,
        result: RunResult,
        main_pid: Option<u32>,
        exit: Option<Exit>,
        reason: Option<String>,
    ) {
        let restarts = self.restarts;
        self.status.send_modify(|status| {
            *status = UnitStatus {
                sub,
                result,
                main_pid,
                exit: exit.or(status.exit),
                reason: reason.or_else(|| status.reason.clone().filter(|_| sub.is_live())),
                restarts,
                since: rfc3339(SystemTime::now()),
            };
        });
    }

    fn set_sub(&self, sub: SubState) {
        self.status.send_modify(|status| {
            status.sub = sub;
            status.since = rfc3339(SystemTime::now());
        });
    }

    async fn note(&self, text: &str) {
        let _ = self
            .context
            .log
            .send((Stream::Supervisor, text.to_owned()))
            .await;
    }
}

/// Binds `$NOTIFY_SOCKET`: `@name` is an abstract socket, anything else a path.
fn notify_socket(address: &str) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let socket = match address.strip_prefix('@') {
        Some(name) => {
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            std::os::unix::net::UnixDatagram::bind_addr(&address)?
        }
        None => {
            let _ = std::fs::remove_file(address);
            std::os::unix::net::UnixDatagram::bind(address)?
        }
    };
    socket.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(socket)
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn failure_parts(failure: Failure) -> (RunResult, Option<Exit>, Option<String>, bool) {
    match failure {
        Failure::Failed(result, exit, why) => (result, exit, Some(why), false),
        Failure::Stopped => (RunResult::Success, None, None, true),
    }
}

/// What systemd tells `ExecStop=`/`ExecStopPost=` of how the unit fared: `SERVICE_RESULT`,
/// and once the main process has ended `EXIT_CODE` (`exited`, `killed`) and `EXIT_STATUS` (the
/// status, or the signal's name without `SIG`).
fn stop_environment(result: RunResult, exit: Option<Exit>) -> Vec<(String, String)> {
    let mut environment = vec![("SERVICE_RESULT".to_owned(), result.as_str().to_owned())];
    let ended = match exit {
        Some(Exit::Code(code)) => Some(("exited", code.to_string())),
        Some(Exit::Signal(signal)) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().trim_start_matches("SIG").to_owned())
                .unwrap_or_else(|_| signal.to_string());
            Some(("killed", name))
        }
        None => None,
    };
    if let Some((code, status)) = ended {
        environment.push(("EXIT_CODE".to_owned(), code.to_owned()));
        environment.push(("EXIT_STATUS".to_owned(), status));
    }
    environment
}

/// systemd's verdict on an exit: clean are status 0 and SIGHUP, SIGINT, SIGTERM, SIGPIPE.
fn judge(exit: Exit) -> (RunResult, Option<String>) {
    match exit {
        Exit::Code(0) => (RunResult::Success, None),
        Exit::Signal(1 | 2 | 13 | 15) => (RunResult::Success, None),
        Exit::Code(code) => (
            RunResult::ExitCode,
            Some(format!("exited with status {code}")),
        ),
        Exit::Signal(signal) => (
            RunResult::Signal,
            Some(format!("killed by signal {signal}")),
        ),
    }
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("code=exited, status={code}"),
        Exit::Signal(signal) => format!("code=killed, signal={signal}"),
    }
}

/// The longest record a unit's output becomes: a longer line (or output that never ends a
/// line) is cut into records of this size, as journald's `LineMax=` does, so a unit's output
/// never grows the shim.
pub const LINE_MAX: usize = 48 * 1024;

/// Copies a process's output, line by line, to the log task until the pipe closes. Bytes
/// that are not UTF-8 are shown as U+FFFD; the pipe is read to its end whatever comes, so
/// the unit never dies of SIGPIPE for what it wrote.
fn forward(stream: Stream, fd: OwnedFd, log: mpsc::Sender<(Stream, String)>) {
    let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(8192, pipe);
        let mut line = Vec::with_capacity(256);
        loop {
            let buffer = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(buffer) => buffer,
            };
            let room = LINE_MAX - line.len();
            let (taken, complete) = match buffer.iter().take(room).position(|b| *b == b'\n') {
                Some(end) => (end + 1, true),
                None => (
                    buffer.len().min(room),
                    line.len() + buffer.len() >= LINE_MAX,
                ),
            };
            line.extend_from_slice(&buffer[..taken]);
            reader.consume(taken);
            if complete {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                let record = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if log.send((stream, record)).await.is_err() {
                    // Nobody writes the log any more: keep draining, never SIGPIPE the unit.
                    drain(reader).await;
                    return;
                }
            }
        }
        if !line.is_empty() {
            let _ = log
                .send((stream, String::from_utf8_lossy(&line).into_owned()))
                .await;
        }
    });
}

/// Reads a pipe to its end, discarding what comes.
async fn drain(mut reader: BufReader<tokio::net::unix::pipe::Receiver>) {
    loop {
        match reader.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(buffer) => {
                let size = buffer.len();
                reader.consume(size);
            }
        }
    }
}
