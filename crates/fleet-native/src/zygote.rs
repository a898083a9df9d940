//! Shims forked from a small process made for it, not executed anew: executing fleetd's
//! binary for every unit (mapping 17 MB, relocating it, starting its runtime) was most of
//! what a native start cost (1.3 ms of CPU against 0.4 ms for `/bin/true`), and at 1,000
//! units the two cores did little else.
//!
//! fleetd forks the zygote first thing, while it still has one thread (a fork of a threaded
//! process may only exec). The zygote waits for requests on a socket pair: a run directory and
//! a pipe to report on (passed as SCM_RIGHTS); it forks a child that becomes the shim, with the
//! pipe as its standard output, and answers with the child's PID. It ends when fleetd does
//! (the socket closes; a parent-death signal besides), and its shims live on, as executed
//! ones do.

// fork, and signal dispositions around it, are unsafe calls; each is explained where made.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{fork, ForkResult};

/// How long fleetd waits for the zygote to answer a request (a fork takes well under a
/// millisecond): past it, the shim is executed the ordinary way.
const ANSWER: Duration = Duration::from_secs(5);

/// A request: its number (8 bytes) and a run directory (a path, so at most `PATH_MAX`).
const MAX_REQUEST: usize = 8 + 4096;

/// An answer: the request's number and the shim's PID (or the fork's `-errno`), 8 bytes each.
const ANSWER_BYTES: usize = 16;

/// fleetd's end of the zygote.
pub struct Zygote {
    /// The socket as made before the runtime, until the first request moves it into it.
    made: std::sync::Mutex<Option<UnixDatagram>>,
    /// One request at a time: the answer read is the one to the request sent.
    socket: tokio::sync::OnceCell<tokio::sync::Mutex<tokio::net::UnixDatagram>>,
    pid: u32,
    /// Cleared by the first request that fails: the zygote is not asked again, and shims are
    /// executed from then on.
    working: AtomicBool,
    /// The number of the next request. An answer carries its request's: one to a request
    /// whose asker gave up (its future dropped between asking and hearing) is passed over.
    requests: AtomicU64,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote").field("pid", &self.pid).finish()
    }
}

impl Zygote {
    /// Forks the zygote, which runs `shim` (the shim's whole life, its exit code returned)
    /// in each child it forks.
    ///
    /// # Safety
    /// The calling process must have one thread: call it before any runtime or thread starts.
    pub unsafe fn start(shim: fn(&Path) -> i32) -> io::Result<Zygote> {
        let (ours, theirs) = UnixDatagram::pair()?;
        let parent = std::process::id();
        // SAFETY: the caller guarantees one thread, so the child may do anything.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Child => {
                drop(ours);
                let code = serve(&theirs, parent, shim);
                std::process::exit(code);
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                ours.set_nonblocking(true)?;
                Ok(Zygote {
                    made: std::sync::Mutex::new(Some(ours)),
                    socket: tokio::sync::OnceCell::new(),
                    pid: child.as_raw() as u32,
                    working: AtomicBool::new(true),
                    requests: AtomicU64::new(0),
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether every request so far was answered.
    pub fn is_working(&self) -> bool {
        self.working.load(Ordering::Acquire)
    }

    /// Forks a shim for the run directory `dir`, whose standard output is `report`; the
    /// shim's PID. Bounded by [`ANSWER`].
    pub async fn spawn(&self, dir: &Path, report: OwnedFd) -> io::Result<u32> {
        let spawned = self.ask(dir, report).await;
        if spawned.is_err() {
            self.working.store(false, Ordering::Release);
            // A zygote that died is fleetd's child: reaped here, not left a zombie.
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        spawned
    }

    async fn ask(&self, dir: &Path, report: OwnedFd) -> io::Result<u32> {
        let socket = self
            .socket
            .get_or_try_init(|| async {
                let made = self.made.lock().unwrap_or_else(|e| e.into_inner()).take();
                let made = made.ok_or_else(|| io::Error::other("the zygote's socket is gone"))?;
                tokio::net::UnixDatagram::from_std(made).map(tokio::sync::Mutex::new)
            })
            .await?;
        let number = self.requests.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        let exchange = async {
            let socket = socket.lock().await;
            let fds = [report.as_raw_fd()];
            let request = [
                IoSlice::new(&number),
                IoSlice::new(dir.as_os_str().as_bytes()),
            ];
            socket
                .async_io(tokio::io::Interest::WRITABLE, || {
                    sendmsg::<()>(
                        socket.as_raw_fd(),
                        &request,
                        &[ControlMessage::ScmRights(&fds)],
                        MsgFlags::MSG_DONTWAIT,
                        None,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            loop {
                let mut answer = [0u8; ANSWER_BYTES];
                let read = socket.recv(&mut answer).await?;
                if read != ANSWER_BYTES {
                    return Err(io::Error::other("the zygote answered in pieces"));
                }
                let (to, pid) = answer.split_at(8);
                if to == number {
                    let pid: [u8; 8] = pid.try_into().expect("8 of 16 bytes");
                    return Ok(i64::from_le_bytes(pid));
                }
            }
        };
        let answer = tokio::time::timeout(ANSWER, exchange).await.map_err(|_| {
            io::Error::other(format!("the zygote did not answer within {ANSWER:?}"))
        })??;
        drop(report);
        match u32::try_from(answer) {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(io::Error::from_raw_os_error(-answer as i32)),
        }
    }
}

/// The zygote's life: a request, a fork, an answer, until fleetd has gone.
fn serve(socket: &UnixDatagram, parent: u32, shim: fn(&Path) -> i32) -> i32 {
    // Ended with fleetd's main thread, should the socket's closing not reach it.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if std::os::unix::process::parent_id() != parent {
        return 0;
    }
    // Its children are reaped by the kernel: the zygote never waits for a shim.
    // SAFETY: no handler is installed, only a disposition.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    let mut request = vec![0u8; MAX_REQUEST];
    loop {
        let (received, report) = match receive(socket, &mut request) {
            Ok(Some(received)) => received,
            Ok(None) => return 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return 1,
        };
        let Some((number, dir)) = received.split_first_chunk::<8>() else {
            return 1;
        };
        // SAFETY: the zygote has one thread.
        let answer: i64 = match unsafe { fork() } {
            Ok(ForkResult::Child) => become_shim(socket, dir, report, shim),
            Ok(ForkResult::Parent { child }) => i64::from(child.as_raw()),
            Err(errno) => -(errno as i64),
        };
        // The zygote's copy of the pipe closes here: only the shim holds it now.
        drop(report);
        let mut reply = [0u8; ANSWER_BYTES];
        reply[..8].copy_from_slice(number);
        reply[8..].copy_from_slice(&answer.to_le_bytes());
        if socket.send(&reply).is_err() {
            return 1;
        }
    }
}

/// One request: the run directory, and the pipe the shim reports on. `None` once fleetd
/// has closed its end.
fn receive(socket: &UnixDatagram, buffer: &mut [u8]) -> io::Result<Option<(Vec<u8>, OwnedFd)>> {
    let mut fds = nix::cmsg_space!(RawFd);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut fds),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let length = message.bytes;
    let mut report = None;
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = control {
            for fd in received {
                // SAFETY: the kernel just gave this process the descriptor; nothing else
                // owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                report.get_or_insert(owned);
            }
        }
    }
    if length == 0 && report.is_none() {
        return Ok(None);
    }
    let report = report.ok_or_else(|| io::Error::other("a request without its pipe"))?;
    Ok(Some((buffer[..length].to_vec(), report)))
}

/// In the forked child: sheds the zygote's state and runs the shim; never returns.
fn become_shim(socket: &UnixDatagram, dir: &[u8], report: OwnedFd, shim: fn(&Path) -> i32) -> ! {
    // The shim waits for its unit's processes, and they must not inherit an ignored SIGCHLD.
    // SAFETY: only a disposition, restored to the default.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
    let _ = nix::sys::prctl::set_pdeathsig(None::<Signal>);
    // SAFETY: the zygote's socket is this process's copy; closing it is all that is done.
    unsafe { nix::libc::close(socket.as_raw_fd()) };
    let redirected = (|| {
        nix::unistd::dup2_stdout(report.as_fd())?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        nix::unistd::dup2_stdin(&null)?;
        nix::unistd::dup2_stderr(&null)
    })();
    drop(report);
    let code = match redirected {
        Ok(()) => shim(Path::new(std::ffi::OsStr::from_bytes(dir))),
        Err(_) => 1,
    };
    std::process::exit(code)
}
