//! What the benchmarks and process tests measure with: percentiles, a process's memory, the
//! floor of starting a process at all, and a minimal HTTP/1.1 exchange over a unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `p` quantile (0..=1) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A benchmark's latency table: one row per measure, with the median and p95 of its `sorted`
/// samples, the label column as wide as the longest label.
pub fn latency_table(rows: &[(String, &[Duration])]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut table = format!("{:<width$} {:>12} {:>12}\n", "measure", "median", "p95");
    for (label, sorted) in rows {
        table.push_str(&format!(
            "{label:<width$} {:>12?} {:>12?}\n",
            percentile(sorted, 0.5),
            percentile(sorted, 0.95)
        ));
    }
    table
}

/// A live process's memory in KiB, from /proc: all it has resident (`VmRSS`, which counts
/// the pages of its binary that every copy shares), its own (`RssAnon`, what one more copy
/// costs) and the most it has had resident (`VmHWM`).
pub fn memory_kib(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Memory {
        resident: field("VmRSS:")?,
        private: field("RssAnon:")?,
        peak: field("VmHWM:")?,
    })
}

/// The CPU time (user and system) so far of the process or thread whose stat file is `stat`
/// (`/proc/<pid>/stat`, `/proc/<pid>/task/<tid>/stat`), in seconds.
pub fn cpu_seconds(stat: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of stat: 12 and 13 after the command name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Counted in USER_HZ, which is 100 on every Linux architecture.
    Some(ticks as f64 / 100.0)
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its parent).
pub fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The live processes whose command line starts with `command`'s words (space-separated):
/// how tests and benchmarks count a unit's processes from outside.
pub fn processes_running(command: &str) -> std::collections::BTreeSet<u32> {
    let wanted: Vec<u8> = command.replace(' ', "\0").into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (cmdline.starts_with(&wanted) && is_live(pid)).then_some(pid)
        })
        .collect()
}

/// See [`memory_kib`].
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub resident: u64,
    pub private: u64,
    pub peak: u64,
}

/// The time to spawn `/bin/sleep` directly, `count` times, sorted: the floor any supervisor's
/// start time is compared with.
pub fn spawn_floor(count: usize) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..count)
        .map(|_| {
            let started = Instant::now();
            let mut child = Command::new("/bin/sleep")
                .arg("600")
                .spawn()
                .expect("/bin/sleep runs");
            let elapsed = started.elapsed();
            child.kill().ok();
            child.wait().ok();
            elapsed
        })
        .collect();
    times.sort();
    times
}

/// One HTTP/1.1 request over a unix socket, as fleetctl sends them (a JSON body gets a trailing
/// newline); the status and body of the answer. Panics when the socket does not answer within
/// 10 s: a test cannot go on without it.
pub fn http_unix(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    exchange_unix(socket, &request_text(method, path, body, None))
}

/// The same over TCP to `address` (`127.0.0.1:PORT`), with `Authorization: Bearer` when a
/// token is given.
pub fn http_tcp(
    address: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    bearer: Option<&str>,
) -> (u16, String) {
    let stream =
        std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    exchange(stream, &request_text(method, path, body, bearer))
}

/// A whole HTTP/1.1 request that asks to close the connection after its answer.
pub fn request_text(method: &str, path: &str, body: Option<&str>, bearer: Option<&str>) -> String {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: domain-sock\r\nConnection: close\r\n");
    if let Some(bearer) = bearer {
        request.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\n",
            body.len() + 1
        ));
    } else {
        request.push_str("\r\n");
    }
    request
}

/// Sends `request` (a whole HTTP/1.1 request that asks to close the connection) over a unix
/// socket; the status and body of the answer. Panics when the socket does not answer within
/// 10 s.
pub fn exchange_unix(socket: &Path, request: &str) -> (u16, String) {
    let stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    exchange(stream, request)
}

/// Sends `request` on a connected `stream`; the status and body of the answer. Panics when it
/// is not answered within 10 s.
pub fn exchange<S: Read + Write + TimedRead>(mut stream: S, request: &str) -> (u16, String) {
    stream.read_timeout(Duration::from_secs(10));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A stream whose reads can be bounded in time.
pub trait TimedRead {
    fn read_timeout(&mut self, timeout: Duration);
}

impl TimedRead for UnixStream {
    fn read_timeout(&mut self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
}

impl TimedRead for std::net::TcpStream {
    fn read_timeout(&mut self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
}

/// For a benchmark's `main`: the number after `--name` on the command line, or `default`;
/// exits with status 2 naming the option when it is not a number.
pub fn count_option(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == name) else {
        return default;
    };
    match args.get(at + 1).and_then(|n| n.parse().ok()) {
        Some(count) => count,
        None => {
            eprintln!("{name} needs a number");
            std::process::exit(2)
        }
    }
}

/// For a benchmark's `main`: the binary `name` of the same build (`target/<profile>/`, the
/// folder above the example's own); exits with status 2 when it was not built.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join(name);
    if !path.exists() {
        eprintln!("build {name} first ({} missing)", path.display());
        std::process::exit(2);
    }
    path
}
