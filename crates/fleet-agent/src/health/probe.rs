//! Running one health check: an HTTP GET (2xx and 3xx are healthy), a TCP connection, or a
//! command (exit 0 is healthy). Every probe ends within its timeout; a command that outlives
//! it is killed with its process group, and of what it prints only a bounded tail is kept.

use std::process::Stdio;
use std::time::Duration;

use fleet_unit::health::Check;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a check's output kept (its tail).
pub const OUTPUT_TAIL: usize = 4096;

/// What a probe found: whether it passed, and what it said (a status line, an error, the
/// tail of a command's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub passed: bool,
    pub output: String,
}

impl Probed {
    fn failed(output: impl Into<String>) -> Probed {
        Probed {
            passed: false,
            output: output.into(),
        }
    }
}

/// Runs `check` (specifiers expanded), giving up after `timeout`.
pub async fn probe(check: &Check, timeout: Duration) -> Probed {
    let network = match check {
        // Bounded by itself: at its timeout it kills the command's whole process group.
        Check::Exec { command } => return exec(command, timeout).await,
        Check::Http { host, port, path } => {
            tokio::time::timeout(timeout, http(host, port, path)).await
        }
        Check::Tcp { host, port } => {
            let connected = tokio::time::timeout(timeout, connect(host, port)).await;
            connected.map(|c| {
                c.map(|_| Probed {
                    passed: true,
                    output: format!("connected to {host}:{port}"),
                })
            })
        }
    };
    match network {
        Ok(Ok(probed)) => probed,
        Ok(Err(error)) => Probed::failed(error),
        Err(_) => Probed::failed(format!("{check}: no answer within {timeout:?}")),
    }
}

async fn connect(host: &str, port: &str) -> Result<TcpStream, String> {
    // `host:port` as written: a name, an IPv4 address, or an IPv6 one in brackets.
    let address = format!("{host}:{port}");
    TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

async fn http(host: &str, port: &str, path: &str) -> Result<Probed, String> {
    let mut stream = connect(host, port).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: fleetd-health-check\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http://{host}:{port}{path}: {e}"))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|e| format!("http://{host}:{port}{path}: {e}"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default().trim().to_owned();
    let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    Ok(match status {
        Some(200..=399) => Probed {
            passed: true,
            output: line,
        },
        Some(_) => Probed::failed(line),
        None => Probed::failed(format!(
            "http://{host}:{port}{path}: not an HTTP answer: {line:?}"
        )),
    })
}

/// Runs `command` (an `Exec*=`-style line) in a process group of its own; kills the group at
/// `timeout`.
async fn exec(command: &str, timeout: Duration) -> Probed {
    let parsed = match fleet_native::command::parse_exec(command) {
        Ok(commands) if commands.len() == 1 => commands.into_iter().next(),
        Ok(_) => return Probed::failed(format!("exec:{command}: one command only")),
        Err(e) => return Probed::failed(format!("exec:{command}: {e}")),
    };
    let Some(parsed) = parsed else {
        return Probed::failed(format!("exec:{command}: no command"));
    };
    let mut child = match tokio::process::Command::new(&parsed.path)
        .args(parsed.argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            return Probed::failed(format!("exec:{command}: cannot run {}: {e}", parsed.path))
        }
    };
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let outputs = async {
        let (out, err) = tokio::join!(tail(stdout), tail(stderr));
        [out, err].concat()
    };
    let waited = async { tokio::join!(child.wait(), outputs) };
    match tokio::time::timeout(timeout, waited).await {
        Ok((Ok(status), output)) => {
            let output = String::from_utf8_lossy(&output).trim_end().to_owned();
            let said = match output.is_empty() {
                true => status.to_string(),
                false => output,
            };
            Probed {
                passed: status.success(),
                output: said,
            }
        }
        Ok((Err(e), _)) => Probed::failed(format!("exec:{command}: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Probed::failed(format!("exec:{command}: killed after {timeout:?}"))
        }
    }
}

/// The last [`OUTPUT_TAIL`] bytes a stream gives until it ends.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 2 * OUTPUT_TAIL {
            kept.drain(..kept.len() - OUTPUT_TAIL);
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(check: &str, timeout_ms: u64, passed: bool, says: &str) {
        let parsed = Check::parse(check).unwrap();
        let started = std::time::Instant::now();
        let probed = probe(&parsed, Duration::from_millis(timeout_ms)).await;
        assert_eq!(probed.passed, passed, "{check}: {probed:?}");
        assert!(probed.output.contains(says), "{check}: {probed:?}");
        assert!(
            started.elapsed() < Duration::from_millis(timeout_ms + 1000),
            "{check} took {:?}",
            started.elapsed()
        );
        assert!(
            probed.output.len() <= OUTPUT_TAIL,
            "{check}: {} bytes",
            probed.output.len()
        );
    }

    /// A server on loopback answering every request with `status`; its port.
    async fn http_server(status: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn probes_pass_fail_and_end_in_time() {
        let ok = http_server("200 OK").await;
        let moved = http_server("302 Found").await;
        let broken = http_server("503 Service Unavailable").await;
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let quiet = silent.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let rows: Vec<(String, u64, bool, &str)> = vec![
            (
                format!("http://127.0.0.1:{ok}/health"),
                2000,
                true,
                "200 OK",
            ),
            (format!("http://127.0.0.1:{moved}/"), 2000, true, "302"),
            (
                format!("http://127.0.0.1:{broken}/"),
                2000,
                false,
                "503 Service Unavailable",
            ),
            (
                format!("http://127.0.0.1:{quiet}/"),
                300,
                false,
                "no answer within 300ms",
            ),
            (
                format!("http://127.0.0.1:{closed}/"),
                2000,
                false,
                "cannot connect to 127.0.0.1",
            ),
            (format!("tcp://127.0.0.1:{quiet}"), 2000, true, "connected"),
            (
                format!("tcp://127.0.0.1:{closed}"),
                2000,
                false,
                "Connection refused",
            ),
            ("exec:/bin/true".into(), 2000, true, "exit status: 0"),
            (
                "exec:/bin/sh -c 'echo sick; exit 3'".into(),
                2000,
                false,
                "sick",
            ),
            (
                "exec:/bin/sh -c 'sleep 30 & sleep 30'".into(),
                300,
                false,
                "killed after 300ms",
            ),
            (
                "exec:/bin/sh -c 'head -c 1000000 /dev/zero | tr \"\\\\0\" x; echo END'".into(),
                5000,
                true,
                "xEND",
            ),
            (
                "exec:/no/such/program".into(),
                2000,
                false,
                "cannot run /no/such/program",
            ),
        ];
        for (text, timeout, passed, says) in rows {
            check(&text, timeout, passed, says).await;
        }
        drop(silent);
    }
}
