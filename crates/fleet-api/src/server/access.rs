//! Who may do what: the callers a listener lets in and their roles. A unix socket lets in whoever
//! its file mode admits, as an operator; a TCP listener with tokens lets in the bearer of one
//! of them, with that token's role: `read` may list, get, watch and read logs, `operate` may
//! also change units and machines.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{header, Method};

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Operate,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }

    /// Whether the role allows a request of `method`.
    pub fn allows(self, method: &Method) -> bool {
        self == Role::Operate || *method == Method::GET || *method == Method::HEAD
    }
}

/// One bearer token of `api_token_file`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    secret: String,
}

impl fmt::Debug for Token {
    // The secret never appears in a log or a panic message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The shortest secret accepted.
pub const MIN_SECRET: usize = 16;

/// The tokens of `api_token_file`. The file holds either one bare token (an operator's, named
/// `operator`), or lines of `ROLE NAME TOKEN` (`#` begins a comment line):
///
/// ```text
/// operate alice   3f0c9e...
/// read    grafana 9b21d4...
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// The tokens in `text`, or what is wrong with it (naming the line).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .collect();
        if let [(_, only)] = lines.as_slice() {
            if !only.contains(char::is_whitespace) {
                check_secret(only).map_err(|why| format!("line 1: {why}"))?;
                return Ok(Tokens(vec![Token {
                    name: "operator".into(),
                    role: Role::Operate,
                    secret: (*only).to_owned(),
                }]));
            }
        }
        let mut tokens: Vec<Token> = Vec::new();
        for (number, line) in lines {
            let token = parse_line(line).map_err(|why| format!("line {number}: {why}"))?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(format!(
                    "line {number}: a second token named {:?}",
                    token.name
                ));
            }
            if tokens.iter().any(|t| t.secret == token.secret) {
                return Err(format!(
                    "line {number}: token {:?} has the same secret as another",
                    token.name
                ));
            }
            tokens.push(token);
        }
        if tokens.is_empty() {
            return Err("no token in it".into());
        }
        Ok(Tokens(tokens))
    }

    pub fn names(&self) -> impl Iterator<Item = (&str, Role)> {
        self.0.iter().map(|t| (t.name.as_str(), t.role))
    }

    /// The token `request` bears, if it is one of these. Every secret is compared, each in
    /// constant time, so the time taken tells nothing of which one nearly matched.
    pub fn bearer(&self, request: &Request) -> Option<&Token> {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        self.0
            .iter()
            .fold(None, |found, token| match same(given, &token.secret) {
                true => Some(token),
                false => found,
            })
    }
}

fn parse_line(line: &str) -> Result<Token, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [role, name, secret] = fields.as_slice() else {
        return Err("expected ROLE NAME TOKEN (or a file of one bare token)".into());
    };
    let role = match *role {
        "read" => Role::Read,
        "operate" => Role::Operate,
        other => return Err(format!("unknown role {other:?}: use read or operate")),
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || "_.@-".contains(c);
    if name.len() > 64 || !name.chars().all(valid) {
        return Err(format!(
            "invalid token name {name:?}: use 1 to 64 characters from [A-Za-z0-9_.@-]"
        ));
    }
    check_secret(secret).map_err(|why| format!("token {name:?}: {why}"))?;
    Ok(Token {
        name: (*name).to_owned(),
        role,
        secret: (*secret).to_owned(),
    })
}

fn check_secret(secret: &str) -> Result<(), String> {
    match secret.len() >= MIN_SECRET {
        true => Ok(()),
        false => Err(format!("a token must be at least {MIN_SECRET} characters")),
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The other end of a request's connection, as the listener that accepted it knows it
/// (fleetd's listeners put it on every request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A unix socket's client, with its credentials when the kernel gave them.
    Unix {
        uid: Option<u32>,
        pid: Option<i32>,
    },
    Tcp(SocketAddr),
    /// TLS, and whether the client presented a certificate (checked against the client CA).
    Tls {
        address: SocketAddr,
        certificate: bool,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { uid, pid } => {
                f.write_str("unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid {uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid {pid}")?;
                }
                Ok(())
            }
            Peer::Tcp(address) => write!(f, "tcp {address}"),
            Peer::Tls {
                address,
                certificate: true,
            } => write!(f, "tls {address} with a client certificate"),
            Peer::Tls { address, .. } => write!(f, "tls {address}"),
        }
    }
}

/// Who made a request and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `token NAME`, `uid N`, `client certificate`, or `anonymous` (a loopback listener
    /// allowed without authentication, or a connection of unknown origin).
    pub who: String,
    pub role: Role,
}

/// Who `request` comes from: the bearer of one of `tokens` when the listener has tokens
/// (`None` when it bears none of them), otherwise whoever the connection is (an operator: the
/// listener's own access control let them in).
pub fn caller(request: &Request, tokens: Option<&Tokens>, peer: Option<&Peer>) -> Option<Caller> {
    if let Some(tokens) = tokens {
        let token = tokens.bearer(request)?;
        return Some(Caller {
            who: format!("token {}", token.name),
            role: token.role,
        });
    }
    let who = match peer {
        Some(Peer::Unix { uid: Some(uid), .. }) => format!("uid {uid}"),
        Some(Peer::Tls {
            certificate: true, ..
        }) => "client certificate".into(),
        _ => "anonymous".into(),
    };
    Some(Caller {
        who,
        role: Role::Operate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens a file must give (name and role of each), or what it must be refused with.
    type Parsed<'a> = Result<&'a [(&'a str, Role)], &'a str>;

    fn check(text: &str, expected: Parsed) {
        let parsed = Tokens::parse(text);
        match (&parsed, expected) {
            (Ok(tokens), Ok(names)) => {
                assert_eq!(tokens.names().collect::<Vec<_>>(), names, "{text:?}")
            }
            (Err(why), Err(expected)) => assert_eq!(why, expected, "{text:?}"),
            _ => panic!("{text:?}: got {parsed:?}, expected {expected:?}"),
        }
        if let Err(why) = &parsed {
            assert!(!why.contains("0123456789abcdef"), "a secret in {why}");
        }
    }

    #[test]
    fn token_files_parse_or_say_which_line_is_wrong() {
        use Role::*;
        let secret = "0123456789abcdef";
        let rows: &[(String, Parsed)] = &[
            (format!("{secret}\n"), Ok(&[("operator", Operate)])),
            (format!("# ours\n\n  {secret}  \n"), Ok(&[("operator", Operate)])),
            (
                format!("operate alice {secret}1\nread grafana {secret}2\n"),
                Ok(&[("alice", Operate), ("grafana", Read)]),
            ),
            (
                "short".into(),
                Err("line 1: a token must be at least 16 characters"),
            ),
            ("".into(), Err("no token in it")),
            ("# only a comment\n".into(), Err("no token in it")),
            (
                format!("admin bob {secret}"),
                Err("line 1: unknown role \"admin\": use read or operate"),
            ),
            (
                format!("read a/b {secret}"),
                Err("line 1: invalid token name \"a/b\": use 1 to 64 characters from [A-Za-z0-9_.@-]"),
            ),
            (
                format!("read a {secret}\nread b short"),
                Err("line 2: token \"b\": a token must be at least 16 characters"),
            ),
            (
                format!("read a {secret}1\noperate a {secret}2"),
                Err("line 2: a second token named \"a\""),
            ),
            (
                format!("read a {secret}\noperate b {secret}"),
                Err("line 2: token \"b\" has the same secret as another"),
            ),
            (
                format!("{secret}1\n{secret}2"),
                Err("line 1: expected ROLE NAME TOKEN (or a file of one bare token)"),
            ),
            (
                format!("read {secret}"),
                Err("line 1: expected ROLE NAME TOKEN (or a file of one bare token)"),
            ),
        ];
        for (text, expected) in rows {
            check(text, *expected);
        }
    }

    #[test]
    fn a_token_is_never_shown() {
        let tokens = Tokens::parse("read viewer 0123456789abcdefXYZ").unwrap();
        let shown = format!("{tokens:?}");
        assert!(
            shown.contains("viewer") && !shown.contains("XYZ"),
            "{shown}"
        );
    }

    fn request(method: Method, bearer: Option<&str>) -> Request {
        let mut builder = axum::http::Request::builder()
            .method(method)
            .uri("/fleet/v1/units");
        if let Some(bearer) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn callers_are_their_token_or_their_connection() {
        let tokens =
            Tokens::parse("operate alice aaaaaaaaaaaaaaaa\nread grafana bbbbbbbbbbbbbbbb\n")
                .unwrap();
        let unix = Peer::Unix {
            uid: Some(1000),
            pid: Some(7),
        };
        /// The listener's tokens, the one borne, the connection: who it is and their role.
        type Row<'a> = (
            Option<&'a Tokens>,
            Option<&'a str>,
            Option<Peer>,
            Option<(&'a str, Role)>,
        );
        let rows: [Row; 7] = [
            (
                Some(&tokens),
                Some("aaaaaaaaaaaaaaaa"),
                None,
                Some(("token alice", Role::Operate)),
            ),
            (
                Some(&tokens),
                Some("bbbbbbbbbbbbbbbb"),
                None,
                Some(("token grafana", Role::Read)),
            ),
            (Some(&tokens), Some("bbbbbbbbbbbbbbbc"), None, None),
            (Some(&tokens), None, None, None),
            (None, None, Some(unix), Some(("uid 1000", Role::Operate))),
            (
                None,
                None,
                Some(Peer::Tls {
                    address: "127.0.0.1:1".parse().unwrap(),
                    certificate: true,
                }),
                Some(("client certificate", Role::Operate)),
            ),
            (None, None, None, Some(("anonymous", Role::Operate))),
        ];
        for (tokens, bearer, peer, expected) in rows {
            let got = caller(&request(Method::GET, bearer), tokens, peer.as_ref());
            let got = got.as_ref().map(|c| (c.who.as_str(), c.role));
            assert_eq!(got, expected, "{bearer:?} {peer:?}");
        }
    }

    #[test]
    fn the_read_role_only_reads() {
        for (method, read, operate) in [
            (Method::GET, true, true),
            (Method::HEAD, true, true),
            (Method::PUT, false, true),
            (Method::DELETE, false, true),
            (Method::PATCH, false, true),
            (Method::POST, false, true),
        ] {
            assert_eq!(Role::Read.allows(&method), read, "{method}");
            assert_eq!(Role::Operate.allows(&method), operate, "{method}");
        }
    }
}
