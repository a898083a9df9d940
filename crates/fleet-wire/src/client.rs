//! A small blocking API v1 client for fleetctl: one HTTP/1.1 request per connection, over a
//! unix socket, TCP or a command's pipes (`--tunnel`), sending what fleet 1.0's fleetctl sent
//! (`?alt=json`, `Host: domain-sock` on a socket, a JSON body with a trailing newline).

mod connection;
pub mod http;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use connection::Connection;

use serde::de::DeserializeOwned;

use crate::schema::{
    ErrorBody, Journal, Machine, MachinePage, MetadataOp, Unit, UnitPage, UnitState, UnitStatePage,
    UnitStatusText,
};

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    Http { host: String, prefix: String },
    Https { host: String, prefix: String },
}

impl Endpoint {
    /// `unix:///abs/path` or `http://host:port[/prefix]`; errors as fleetctl 1.0 worded them.
    pub fn parse(url: &str) -> std::result::Result<Endpoint, InvalidEndpoint> {
        let first = url.split(',').next().unwrap_or("").trim();
        if let Some(path) = first
            .strip_prefix("unix://")
            .or_else(|| first.strip_prefix("file://"))
        {
            if !path.starts_with('/') {
                let host = path.split('/').next().unwrap_or("");
                return Err(InvalidEndpoint(format!(
                    "unable to connect to host {host:?} with scheme \"unix\""
                )));
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
        Err(InvalidEndpoint(format!(
            "unsupported endpoint {first:?} (use unix:///path or http://host:port)"
        )))
    }
}

/// An endpoint fleetctl cannot reach, worded as fleetctl 1.0 worded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEndpoint(pub String);

impl std::fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidEndpoint {}

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
    /// A command whose stdin/stdout reach the endpoint (`--tunnel`).
    through: Option<Vec<String>>,
    /// Through a command, one connection serves every request in turn (HTTP keep-alive): a
    /// new ssh session per request would cost a handshake each.
    kept: std::sync::Mutex<Option<BufReader<Box<dyn Connection>>>>,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Client {
        Client {
            endpoint,
            timeout,
            tls: None,
            token: None,
            through: None,
            kept: std::sync::Mutex::new(None),
        }
    }

    /// Requests go through the stdin and stdout of `argv` (`ssh -W host:port bastion`, or `ssh
    /// bastion fleetctl fd-forward /var/run/fleet.sock` for a socket), run once and kept for
    /// the next request while it lasts.
    pub fn through(mut self, argv: Vec<String>) -> Client {
        self.through = Some(argv);
        self
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

    /// `GET state?unitName=<name>`: the unit's state on every machine that reports one.
    pub fn states_of(&self, name: &str) -> Result<Vec<UnitState>> {
        self.pages::<UnitStatePage, UnitState>(&format!("state?unitName={}", escape(name)), |p| {
            (p.states, p.next_page_token)
        })
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
        self.put_unit_related(unit).map(drop)
    }

    /// [`Client::put_unit`], and what the change did to the units related to it, as fleetd
    /// tells ([`crate::paths::RELATED_HEADER`]; none from a fleetd that does not).
    pub fn put_unit_related(&self, unit: &Unit) -> Result<Vec<String>> {
        let body = serde_json::to_vec(unit).map_err(|e| ClientError::Transport(e.to_string()))?;
        let path = format!("units/{}", escape(&unit.name));
        let (head, _) = self.exchange("/fleet/v1/", "PUT", &path, Some(&body))?;
        Ok(related(head))
    }

    /// `PATCH machines` with a JSON-patch body of metadata operations (`[{"op":"add",
    /// "path":"/<machine>/metadata/<key>","value":"v"}]`, `replace`, `remove`).
    pub fn patch_machines(&self, operations: &[MetadataOp]) -> Result<()> {
        let body =
            serde_json::to_vec(operations).map_err(|e| ClientError::Transport(e.to_string()))?;
        self.call("PATCH", "machines", Some(&body))?;
        Ok(())
    }

    /// `DELETE units/<name>`: `false` on 404.
    pub fn delete_unit(&self, name: &str) -> Result<bool> {
        self.delete_unit_related(name)
            .map(|deleted| deleted.is_some())
    }

    /// [`Client::delete_unit`], and what that did to the units related to it (`None` on 404).
    pub fn delete_unit_related(&self, name: &str) -> Result<Option<Vec<String>>> {
        let path = format!("units/{}", escape(name));
        match self.exchange("/fleet/v1/", "DELETE", &path, None) {
            Ok((head, _)) => Ok(Some(related(head))),
            Err(ClientError::Api { code: 404, .. }) => Ok(None),
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
                false => {
                    let separator = if collection.contains('?') { '&' } else { '?' };
                    format!("{collection}{separator}nextPageToken={}", escape(&token))
                }
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
    /// the machine and the lines. With `machine`, only that machine's fleetd answers (409
    /// from any other).
    pub fn journal(
        &self,
        name: &str,
        lines: usize,
        machine: Option<&str>,
    ) -> Result<(String, Vec<String>)> {
        let path = journal_path(name, lines, machine, false);
        let body = self.call_at(crate::paths::JOURNAL, "GET", &path, None)?;
        let journal: Journal = decode(&body)?;
        Ok((journal.machine_id, journal.lines))
    }

    /// What the init system of the machine running `name` (`machine`, or whichever machine
    /// this fleetd is) says of it: `systemctl status` and its exit code, or no text from a
    /// machine without systemd.
    pub fn unit_status(&self, name: &str, machine: Option<&str>) -> Result<UnitStatusText> {
        let mut path = escape(name);
        if let Some(machine) = machine {
            path.push_str(&format!("?machineID={}", escape(machine)));
        }
        let body = self.call_at(crate::paths::STATUS, "GET", &path, None)?;
        decode(&body)
    }

    /// `journal`, then every record as it is written, each given to `record` with the machine
    /// (until `record` fails, the server ends the log, or it falls silent for three heartbeats).
    pub fn follow_journal(
        &self,
        name: &str,
        lines: usize,
        machine: Option<&str>,
        record: &mut dyn FnMut(&str, &str) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = journal_path(name, lines, machine, true);
        let request = self.request(crate::paths::JOURNAL, "GET", &path, None, false);
        let silence = (crate::paths::JOURNAL_HEARTBEAT * 3).max(self.timeout);
        let mut stream = self.connect(silence, None)?;
        stream.write_all(&request).map_err(transport)?;
        let mut reader = BufReader::new(stream);
        let head = http::read_head(&mut reader).map_err(transport)?;
        if !(200..300).contains(&head.status) {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut http::body(reader, &head), &mut body)
                .map_err(transport)?;
            return Err(api_error(head.status, &body));
        }
        let machine = head
            .header(crate::paths::JOURNAL_MACHINE_HEADER)
            .unwrap_or_default()
            .to_owned();
        for line in http::body(reader, &head).lines() {
            let line = line.map_err(transport)?;
            // Empty lines are the server's heartbeats.
            if !line.is_empty() {
                record(&machine, &line).map_err(transport)?;
            }
        }
        Ok(())
    }

    /// The request's bytes, as fleet 1.0's fleetctl sent them.
    fn request(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        keep_alive: bool,
    ) -> Vec<u8> {
        let (host, prefix) = match &self.endpoint {
            Endpoint::Unix(_) => ("domain-sock".to_owned(), String::new()),
            Endpoint::Http { host, prefix } | Endpoint::Https { host, prefix } => {
                (host.clone(), prefix.clone())
            }
        };
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let query = match query.is_empty() {
            true => "alt=json".to_owned(),
            false => format!("alt=json&{query}"),
        };
        let mut request = format!(
            "{method} {prefix}{base}{path}?{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fleetctl-rs\r\nConnection: {}\r\n",
            if keep_alive { "keep-alive" } else { "close" }
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
        bytes
    }

    /// A connection to the endpoint whose reads give up after `read_timeout`, and, given a
    /// `deadline`, whose reads and writes fail once it has passed.
    fn connect(
        &self,
        read_timeout: Duration,
        deadline: Option<std::time::Instant>,
    ) -> Result<Box<dyn Connection>> {
        let raw: Box<dyn Connection> = match (&self.through, &self.endpoint) {
            (Some(argv), _) => {
                Box::new(connection::command(argv, read_timeout).map_err(ClientError::Transport)?)
            }
            (None, Endpoint::Unix(socket)) => {
                Box::new(connection::unix(socket, read_timeout).map_err(ClientError::Transport)?)
            }
            (None, Endpoint::Http { host, .. } | Endpoint::Https { host, .. }) => {
                Box::new(connection::tcp(host, read_timeout).map_err(ClientError::Transport)?)
            }
        };
        let raw: Box<dyn Connection> = match deadline {
            Some(deadline) => Box::new(connection::Deadline::new(raw, deadline)),
            None => raw,
        };
        let Endpoint::Https { host, .. } = &self.endpoint else {
            return Ok(raw);
        };
        let config = self.tls.clone().ok_or_else(|| {
            ClientError::Transport(
                "an https endpoint needs --ca-file (the CA that signed fleetd's certificate)"
                    .into(),
            )
        })?;
        connection::tls(config, host, raw).map_err(ClientError::Transport)
    }

    fn call_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        self.exchange(base, method, path, body)
            .map(|(_, body)| body)
    }

    /// One request and its answer's head and body; an answer other than 2xx is the error.
    fn exchange(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(http::Head, Vec<u8>)> {
        let (head, body) = match self.through.is_some() {
            true => self.exchange_kept(&self.request(base, method, path, body, true))?,
            false => {
                // The whole exchange, not only each read: a server that trickles its answer
                // a byte at a time must not hold fleetctl past --request-timeout.
                let deadline = std::time::Instant::now() + self.timeout;
                let mut stream = self.connect(self.timeout, Some(deadline))?;
                stream
                    .write_all(&self.request(base, method, path, body, false))
                    .map_err(transport)?;
                http::read_response(stream).map_err(transport)?
            }
        };
        if (200..300).contains(&head.status) {
            return Ok((head, body));
        }
        Err(api_error(head.status, &body))
    }

    /// One exchange on the kept connection. A kept connection that the other end closed while
    /// idle is replaced once; one that timed out is not (the request may have been served).
    fn exchange_kept(&self, request: &[u8]) -> Result<(http::Head, Vec<u8>)> {
        let mut kept = self
            .kept
            .lock()
            .map_err(|_| ClientError::Transport("the tunnel broke".into()))?;
        let send = |reader: &mut BufReader<Box<dyn Connection>>| {
            reader.get_mut().write_all(request)?;
            reader.get_mut().flush()?;
            http::read_head(reader)
        };
        let fresh = || -> Result<(BufReader<Box<dyn Connection>>, http::Head)> {
            let mut reader = BufReader::new(self.connect(self.timeout, None)?);
            let head = send(&mut reader).map_err(transport)?;
            Ok((reader, head))
        };
        let (mut reader, head) = match kept.take() {
            Some(mut reader) => match send(&mut reader) {
                Ok(head) => (reader, head),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(transport(e)),
                Err(_) => fresh()?,
            },
            None => fresh()?,
        };
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut http::body(&mut reader, &head), &mut body)
            .map_err(transport)?;
        let closing = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if head.delimited() && !closing {
            *kept = Some(reader);
        }
        Ok((head, body))
    }
}

/// What an answer's [`crate::paths::RELATED_HEADER`] headers say a change did to related
/// units.
fn related(head: http::Head) -> Vec<String> {
    head.headers
        .into_iter()
        .filter(|(name, _)| name == crate::paths::RELATED_HEADER)
        .map(|(_, value)| value)
        .collect()
}

fn journal_path(name: &str, lines: usize, machine: Option<&str>, follow: bool) -> String {
    let mut path = format!("{}?lines={lines}", escape(name));
    if let Some(machine) = machine {
        path.push_str(&format!("&machineID={}", escape(machine)));
    }
    if follow {
        path.push_str("&follow=true");
    }
    path
}

/// A non-2xx answer as the error fleetctl prints.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error.message)
        .unwrap_or_default();
    ClientError::Api {
        code: status,
        message,
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

fn transport(e: std::io::Error) -> ClientError {
    ClientError::Transport(e.to_string())
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
            Err(InvalidEndpoint(
                "unable to connect to host \"var\" with scheme \"unix\"".into()
            ))
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
    fn escapes() {
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
