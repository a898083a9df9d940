//! The one place a shim waits for children: it reaps every child on `SIGCHLD` (its own and
//! the daemons re-parented to it as a subreaper), so no zombie stays, and hands each exit to
//! whoever waits for that PID. Nothing else in the process may call `wait`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use super::status::Exit;

/// Exits nobody asked for yet (a fast process may end before its spawner waits for it);
/// the oldest are forgotten past this many (escaped daemons nobody will ask for).
const UNCLAIMED: usize = 1024;

#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<u32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<u32, Exit>,
    order: VecDeque<u32>,
}

impl Reaper {
    /// Starts reaping in a background task. Needs a tokio runtime with signal support.
    pub fn start() -> std::io::Result<Reaper> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let inner = Arc::clone(&reaper.inner);
        tokio::spawn(async move {
            loop {
                reap(&inner);
                // SIGCHLDs coalesce, but one that arrives after the stream exists always
                // wakes the next `recv`, and `reap` collects every child that has ended: no
                // timer is needed, so an idle shim never wakes.
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Resolves when `pid` (a child of this process) exits.
    pub fn wait(&self, pid: u32) -> oneshot::Receiver<Exit> {
        let (sender, receiver) = oneshot::channel();
        let mut inner = lock(&self.inner);
        match inner.unclaimed.remove(&pid) {
            Some(exit) => {
                let _ = sender.send(exit);
            }
            None => {
                inner.waiters.insert(pid, sender);
            }
        }
        drop(inner);
        // The child may have ended before anyone listened for SIGCHLD.
        reap(&self.inner);
        receiver
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Collects every child that has ended.
fn reap(inner: &Mutex<Inner>) {
    loop {
        let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return,
        };
        let pid = pid.as_raw() as u32;
        let mut inner = lock(inner);
        match inner.waiters.remove(&pid) {
            Some(waiter) => {
                let _ = waiter.send(exit);
            }
            None => {
                inner.unclaimed.insert(pid, exit);
                inner.order.push_back(pid);
                while inner.order.len() > UNCLAIMED {
                    if let Some(old) = inner.order.pop_front() {
                        inner.unclaimed.remove(&old);
                    }
                }
            }
        }
    }
}
