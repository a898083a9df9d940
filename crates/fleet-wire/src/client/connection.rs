//! The byte streams a request travels on: a unix socket, TCP, TLS over either, or the
//! stdin/stdout of a command (`ssh bastion fleetctl fd-forward ...` for `--tunnel`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A connection carrying one request and its response.
pub trait Connection: Read + Write + Send {}
impl<T: Read + Write + Send> Connection for T {}

/// A connection that fails every read and write once `deadline` has passed (each read is
/// also bounded by the socket's own timeout, so an exchange ends at most one read timeout
/// after the deadline).
pub struct Deadline {
    inner: Box<dyn Connection>,
    deadline: Instant,
}

impl Deadline {
    pub fn new(inner: Box<dyn Connection>, deadline: Instant) -> Deadline {
        Deadline { inner, deadline }
    }

    fn check(&self) -> io::Result<()> {
        match Instant::now() < self.deadline {
            true => Ok(()),
            false => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole answer within the request timeout",
            )),
        }
    }
}

impl Read for Deadline {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buffer)
    }
}

impl Write for Deadline {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.write(buffer)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn unix(path: &str, read_timeout: Duration) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(path)
        .map_err(|e| format!("dial unix {path}: {}", connect_error(&e)))?;
    stream
        .set_read_timeout(Some(read_timeout))
        .and_then(|()| stream.set_write_timeout(Some(read_timeout)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Connects within `timeout` too (`--request-timeout`): an address that drops packets would
/// hold a plain connect for minutes, in the kernel's SYN retries.
pub fn tcp(host: &str, timeout: Duration) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let dial = |e: &io::Error| format!("dial tcp {host}: {}", connect_error(e));
    let addresses: Vec<std::net::SocketAddr> =
        host.to_socket_addrs().map_err(|e| dial(&e))?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut connected = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = connected.ok_or_else(|| dial(&last))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "connect: no such file or directory".into(),
        io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        // Go's words for a dial that ran out of time.
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// TLS to `host` (`name:port`) over `inner`.
pub fn tls(
    config: std::sync::Arc<rustls::ClientConfig>,
    host: &str,
    inner: Box<dyn Connection>,
) -> Result<Box<dyn Connection>, String> {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| format!("{host}: {e}"))?;
    let connection =
        rustls::ClientConnection::new(config, name).map_err(|e| format!("{host}: {e}"))?;
    Ok(Box::new(rustls::StreamOwned::new(connection, inner)))
}

/// A command whose stdin and stdout are the connection. Its stderr is the caller's (ssh asks
/// there whether to trust a new host, and reports why it could not connect).
pub struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Output arrives through a thread, so that a read can give up after `read_timeout`
    /// (a pipe has no timeout of its own).
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    read_timeout: Duration,
    program: String,
}

pub fn command(argv: &[String], read_timeout: Duration) -> Result<Piped, String> {
    let (program, args) = argv.split_first().ok_or("an empty tunnel command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let (sender, chunks) = mpsc::sync_channel(16);
    std::thread::spawn(move || loop {
        let mut buffer = vec![0u8; 16 * 1024];
        match stdout.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                buffer.truncate(n);
                if sender.send(Ok(buffer)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = sender.send(Err(e));
                return;
            }
        }
    });
    Ok(Piped {
        child,
        stdin,
        chunks,
        pending: Vec::new(),
        read_timeout,
        program: program.clone(),
    })
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            match self.chunks.recv_timeout(self.read_timeout) {
                Ok(chunk) => self.pending = chunk?,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(0),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{} sent nothing for {:?}", self.program, self.read_timeout),
                    ))
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for Piped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stdin {
            Some(stdin) => stdin.write(buf),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => stdin.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Piped {
    /// Closes the command's stdin and gives it a moment to finish, then kills it: a tunnel
    /// never outlives its request.
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_a_connection_and_is_reaped() {
        let argv = ["cat".to_owned()];
        let mut piped = command(&argv, Duration::from_secs(5)).unwrap();
        piped.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        piped.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let pid = piped.child.id();
        drop(piped);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_silent_command_times_out_and_is_killed() {
        let argv = ["sleep".to_owned(), "30".to_owned()];
        let mut piped = command(&argv, Duration::from_millis(100)).unwrap();
        let error = piped.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(error.to_string(), "sleep sent nothing for 100ms");
        let started = Instant::now();
        drop(piped);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_named() {
        let argv = ["/nonexistent/ssh".to_owned()];
        let error = command(&argv, Duration::from_secs(1)).err().unwrap();
        assert!(
            error.starts_with("cannot run /nonexistent/ssh: "),
            "{error}"
        );
    }
}
