//! A real etcd (Debian's `etcd-server`) on free loopback ports, with its data in a temp dir.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh etcd may take to become healthy on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Prefer /dev/shm: etcd fsyncs every commit, and tmpfs makes that free.
fn temp_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("fleet-etcd-")
            .tempdir_in(&shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("fleet-etcd-")
        .tempdir()
        .expect("a temp dir")
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it is healthy. Panics with etcd's own
    /// output if it does not come up in time (a test cannot go on without it).
    pub fn start() -> EtcdServer {
        let mut last_error = String::new();
        // Ports are picked by binding and closing; another process may take one in between.
        for _ in 0..3 {
            let mut server = EtcdServer {
                child: None,
                dir: temp_dir(),
                client_port: free_port(),
                peer_port: free_port(),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("etcd log: {e}"))?;
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "s1", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("s1={peer}")])
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run etcd (is etcd-server installed?): {e}"))?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("etcd exited with {status}: {}", self.log()));
                }
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "etcd not healthy within {START_TIMEOUT:?}: {}",
            self.log()
        ))
    }

    fn healthy(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.contains("\"health\":\"true\"")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same member again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch()
            .unwrap_or_else(|e| panic!("etcd did not restart: {e}"));
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl EtcdServer {
    /// Compacts etcd's history up to `revision` (with etcd's own client), as an operator's
    /// auto-compaction would.
    pub fn compact(&self, revision: i64) {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoint(),
                "compact",
                &revision.to_string(),
            ])
            .output()
            .expect("etcdctl (package etcd-client) runs");
        assert!(
            output.status.success(),
            "etcdctl compact failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
