//! A small blocking API v1 client for fleetctl: one HTTP/1.1 request per connection, over a
//! unix socket or TCP, sending what fleet 1.0's fleetctl sent (`?alt=json`, `Host:
//! domain-sock` on a socket, a JSON body with a trailing newline).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::schema::{ErrorBody, Machine, MachinePage, Unit, UnitPage, UnitState, UnitStatePage};

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    Http { host: String, prefix: String },
    Https { host: String, prefix: String },
}

impl Endpoint {
    /// `unix:///abs/path` or `http://host:port[/prefix]`; errors as fleetctl 1.0 worded them.
    pub fn parse(url: &str) -> std::result::Result<Endpoint, String> {
        let first = url.split(',').next().unwrap_or("").trim();
        if let Some(path) = first
            .strip_prefix("unix://")
            .or_else(|| first.strip_prefix("file://"))
        {
            if !path.starts_with('/') {
                let host = path.split('/').next().unwrap_or("");
                return Err(format!(
                    "unable to connect to host {host:?} with scheme \"unix\""
                ));
            }
            return Ok(Endpoint::Unix(path.to_owned()));
        }
        let (tls, rest) = match (
            first.strip_prefix("http://"),
            first.strip_prefix("https://"),
        ) {
            (Some(rest), _) => (false, Some(rest)),
            (_, Some(rest)) => (true, Some(rest)),
            _ => (false, None),
        };
        if let Some(rest) = rest {
            let (host, prefix) = match rest.find('/') {
                Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
                None => (rest, ""),
            };
            let (host, prefix) = (host.to_owned(), prefix.to_owned());
            return Ok(match tls {
                true => Endpoint::Https { host, prefix },
                false => Endpoint::Http { host, prefix },
            });
        }
        Err(format!(
            "unsupported endpoint {first:?} (use unix:///path or http://host:port)"
        ))
    }
}

/// Why a call failed: the transport, or the server's answer (fleetctl prints both as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    Transport(String),
    Api {
        code: u16,
        message: String,
        body: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Transport(why) => f.write_str(why),
            ClientError::Api { code, message, .. } if !message.is_empty() => {
                write!(f, "googleapi: Error {code}: {message}")
            }
            ClientError::Api { code, body, .. } => {
                write!(
                    f,
                    "googleapi: got HTTP response code {code} with body: {body}"
                )
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            timeout,
            tls: None,
            token: None,
        }
    }

    /// The TLS configuration for an `https://` endpoint.
    pub fn with_tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Client {
        self.tls = Some(config);
        self
    }

    /// A bearer token sent with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// `GET units/<name>`: `None` on 404.
    pub fn unit(&self, name: &str) -> Result<Option<Unit>> {
        self.get_optional(&format!("units/{}", escape(name)))
    }

    pub fn units(&self) -> Result<Vec<Unit>> {
        self.pages::<UnitPage, Unit>("units", |p| (p.units, p.next_page_token))
    }

    pub fn states(&self) -> Result<Vec<UnitState>> {
        self.pages::<UnitStatePage, UnitState>("state", |p| (p.states, p.next_page_token))
    }

    /// `GET state/<name>`: `None` on 404.
    pub fn state(&self, name: &str) -> Result<Option<UnitState>> {
        self.get_optional(&format!("state/{}", escape(name)))
    }

    pub fn machines(&self) -> Result<Vec<Machine>> {
        self.pages::<MachinePage, Machine>("machines", |p| (p.machines, p.next_page_token))
    }

    /// `PUT units/<name>` with `unit` as the body.
    pub fn put_unit(&self, unit: &Unit) -> Result<()> {
        let body = serde_json::to_vec(unit).map_err(|e| ClientError::Transport(e.to_string()))?;
        self.call("PUT", &format!("units/{}", escape(&unit.name)), Some(&body))?;
        Ok(())
    }

    /// `DELETE units/<name>`: `false` on 404.
    pub fn delete_unit(&self, name: &str) -> Result<bool> {
        match self.call("DELETE", &format!("units/{}", escape(name)), None) {
            Ok(_) => Ok(true),
            Err(ClientError::Api { code: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.call("GET", path, None) {
            Ok(body) => decode(&body).map(Some),
            Err(ClientError::Api { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn pages<P: DeserializeOwned, T>(
        &self,
        collection: &str,
        split: impl Fn(P) -> (Vec<T>, String),
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        let mut token = String::new();
        // A server that never ends its pages is cut off: 100,000 pages is far past any cluster.
        for _ in 0..100_000 {
            let path = match token.is_empty() {
                true => collection.to_owned(),
                false => format!("{collection}?nextPageToken={}", escape(&token)),
            };
            let (items, next) = split(decode(&self.call("GET", &path, None)?)?);
            all.extend(items);
            if next.is_empty() {
                return Ok(all);
            }
            token = next;
        }
        Err(ClientError::Transport(format!(
            "{collection}: the server never ended its pages"
        )))
    }

    /// One request; the body of a 2xx answer, else the API error.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>> {
        self.call_at("/fleet/v1/", method, path, body)
    }

    /// A unit's log from the fleetd of the machine that runs it (ours, outside fleet's API):
    /// the machine and the lines.
    pub fn journal(&self, name: &str, lines: usize) -> Result<(String, Vec<String>)> {
        #[derive(serde::Deserialize)]
        struct Journal {
            #[serde(rename = "machineID")]
            machine_id: String,
            lines: Vec<String>,
        }
        let path = format!("{}?lines={lines}", escape(name));
        let body = self.call_at(crate::server::JOURNAL, "GET", &path, None)?;
        let journal: Journal = decode(&body)?;
        Ok((journal.machine_id, journal.lines))
    }

    fn call_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let (host, prefix) = match &self.endpoint {
            Endpoint::Unix(_) => ("domain-sock".to_owned(), String::new()),
            Endpoint::Http { host, prefix } | Endpoint::Https { host, prefix } => {
                (host.clone(), prefix.clone())
            }
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let query = match query.is_empty() {
            true => "alt=json".to_owned(),
            false => format!("alt=json{separator}{query}"),
        };
        let mut request = format!(
            "{method} {prefix}{base}{path}?{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fleetctl-rs\r\nConnection: close\r\n"
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len() + 1
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
            bytes.push(b'\n');
        }
        let response = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = UnixStream::connect(socket).map_err(|e| {
                    ClientError::Transport(format!("dial unix {socket}: {}", connect_error(&e)))
                })?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .map_err(transport)?;
                exchange(stream, &bytes)?
            }
            Endpoint::Http { host, .. } => exchange(self.tcp(host)?, &bytes)?,
            Endpoint::Https { host, .. } => {
                let config = self.tls.clone().ok_or_else(|| {
                    ClientError::Transport(
                        "an https endpoint needs --ca-file (the CA that signed fleetd's certificate)".into(),
                    )
                })?;
                let name = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(name, _)| name);
                let name = name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| ClientError::Transport(format!("{host}: {e}")))?;
                let connection = rustls::ClientConnection::new(config, name)
                    .map_err(|e| ClientError::Transport(format!("{host}: {e}")))?;
                exchange(
                    rustls::StreamOwned::new(connection, self.tcp(host)?),
                    &bytes,
                )?
            }
        };
        let (status, body) = response;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.error.message)
            .unwrap_or_default();
        Err(ClientError::Api {
            code: status,
            message,
            body: text,
        })
    }
}

impl Client {
    /// A TCP connection to `host`, with the request timeout on reads.
    fn tcp(&self, host: &str) -> Result<TcpStream> {
        let stream = TcpStream::connect(host).map_err(|e| {
            ClientError::Transport(format!("dial tcp {host}: {}", connect_error(&e)))
        })?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(transport)?;
        Ok(stream)
    }
}

fn transport(e: std::io::Error) -> ClientError {
    ClientError::Transport(e.to_string())
}

/// Sends a whole request and reads the whole response.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<(u16, Vec<u8>)> {
    stream.write_all(request).map_err(transport)?;
    read_response(stream)
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "connect: no such file or directory".into(),
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        _ => e.to_string(),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Transport(format!("cannot read the answer: {e}")))
}

/// Percent-encodes what a path segment or query value cannot hold (`@` → `%40`, as Go did).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Reads a whole HTTP/1.1 response (the server closes the connection): status and body,
/// de-chunked when chunked.
fn read_response(stream: impl Read) -> Result<(u16, Vec<u8>)> {
    let bad = |why: &str| ClientError::Transport(format!("malformed HTTP response: {why}"));
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader
            .read_line(&mut line)
            .map_err(|e| ClientError::Transport(e.to_string()))?
            == 0
        {
            return Err(bad("headers cut short"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            if name == "content-length" {
                length = value.parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader
                .read_line(&mut size)
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader
                .read_exact(&mut chunk)
                .map_err(|e| ClientError::Transport(e.to_string()))?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
    } else {
        reader
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/fleet.sock"),
            Ok(Endpoint::Unix("/var/run/fleet.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix://var/run/fleet.sock"),
            Err("unable to connect to host \"var\" with scheme \"unix\"".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:18080/some/prefix/,http://other:1"),
            Ok(Endpoint::Http {
                host: "127.0.0.1:18080".into(),
                prefix: "/some/prefix".into()
            })
        );
    }

    #[test]
    fn responses() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".as_slice();
        assert_eq!(read_response(plain).unwrap(), (404, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".as_slice();
        assert_eq!(read_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        assert!(read_response(b"garbage".as_slice()).is_err());
        assert_eq!(escape("hello@1.service"), "hello%401.service");
    }

    #[test]
    fn api_errors_print_as_fleetctl_printed_them() {
        let error = ClientError::Api {
            code: 404,
            message: "unit does not exist".into(),
            body: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "googleapi: Error 404: unit does not exist"
        );
        let error = ClientError::Api {
            code: 500,
            message: String::new(),
            body: "oops".into(),
        };
        assert_eq!(
            error.to_string(),
            "googleapi: got HTTP response code 500 with body: oops"
        );
    }
}
