//! The API's listening sockets: binding them (unix, http, https, or passed by systemd), what
//! each needs before it lets a client in, and serving their connections within bounds, so
//! that nobody can hold fleetd's descriptors or memory without sending requests: a client has
//! `HEADER_TIMEOUT` for each request's headers (an idle kept-alive connection is closed after
//! it too), `HANDSHAKE_TIMEOUT` for TLS, and past `MAX_CONNECTIONS` at once a new connection
//! is closed at once. A request's body is bounded where it is read (fleet-api).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use fleet_api::server::{Peer, Tokens};

use crate::config::Config;
use crate::start_error::StartError;

/// For a request's headers, from the moment the connection can take a request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// For a TLS client's handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once per listener. fleetd's descriptors are also its units' (one
/// per native unit): a flood of connections must not take them all.
pub const MAX_CONNECTIONS: usize = 512;
/// On shutdown, what requests are under way get this long to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// A bound API listener. A unix socket fleetd bound itself is removed when it stops.
pub(crate) enum Listener {
    Unix(tokio::net::UnixListener, Option<PathBuf>),
    Tcp(tokio::net::TcpListener),
    /// TCP with a TLS handshake per connection.
    Tls(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
}

/// The listening sockets systemd passed with socket activation (`LISTEN_PID` is this process,
/// `LISTEN_FDS` of them from descriptor 3), or none.
#[allow(unsafe_code)]
pub(crate) fn activated_listeners() -> Result<Vec<Listener>, StartError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours {
        return Ok(Vec::new());
    }
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StartError::setting("LISTEN_FDS", "not a number"))?;
    let mut listeners = Vec::new();
    for fd in 3..3 + count {
        let unix = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
            .map_err(|e| {
                StartError::Process(format!(
                    "socket activation: descriptor {fd} is not a socket: {e}"
                ))
            })?
            .as_unix_addr()
            .is_some();
        // SAFETY: systemd passed descriptors 3.. to this process alone (LISTEN_PID is ours);
        // each is open, a listening socket (checked above), and taken exactly once here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let bad = |e: std::io::Error| {
            StartError::Process(format!("socket activation: descriptor {fd}: {e}"))
        };
        listeners.push(if unix {
            let listener = std::os::unix::net::UnixListener::from(owned);
            listener.set_nonblocking(true).map_err(bad)?;
            Listener::Unix(
                tokio::net::UnixListener::from_std(listener).map_err(bad)?,
                None,
            )
        } else {
            let listener = std::net::TcpListener::from(owned);
            listener.set_nonblocking(true).map_err(bad)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(listener).map_err(bad)?)
        });
    }
    Ok(listeners)
}

impl Listener {
    /// Binds `unix:///path` (mode 0660: never world-writable), `http://` (loopback only, unless
    /// `api_allow_plain_tcp`) or `https://` (which needs a certificate and a way to
    /// authenticate clients: client certificates or a bearer token).
    pub(crate) async fn bind(url: &str, config: &Config) -> Result<Listener, StartError> {
        let fail = |why: String| StartError::setting(format!("api_listen {url}"), why);
        if let Some(path) = url.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            // A socket left by a previous run (nobody answers on it) is replaced.
            if std::os::unix::net::UnixStream::connect(&path).is_err() {
                let _ = std::fs::remove_file(&path);
            }
            let listener =
                tokio::net::UnixListener::bind(&path).map_err(|e| fail(e.to_string()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| fail(e.to_string()))?;
            return Ok(Listener::Unix(listener, Some(path)));
        }
        let (tls, address) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(address), _) => (false, address),
            (_, Some(address)) => (true, address),
            _ => return Err(fail("expected unix://, http:// or https://".into())),
        };
        let address: std::net::SocketAddr = address
            .trim_end_matches('/')
            .parse()
            .map_err(|_| fail("use an IP address and port, e.g. https://10.0.0.1:54728".into()))?;
        if !tls && !address.ip().is_loopback() && !config.api_allow_plain_tcp {
            return Err(fail(
                "plain http on the network sends everything in the clear; use https://, or set api_allow_plain_tcp=true".into(),
            ));
        }
        let tcp = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !tls {
            if !address.ip().is_loopback() {
                tracing::warn!(url, "plain http on the network: the bearer token and every unit file travel in the clear");
            }
            return Ok(Listener::Tcp(tcp));
        }
        let (Some(cert), Some(key)) = (&config.api_tls_cert_file, &config.api_tls_key_file) else {
            return Err(fail(
                "https needs api_tls_cert_file and api_tls_key_file".into(),
            ));
        };
        if config.api_tls_client_ca_file.is_none() && config.api_token_file.is_none() {
            return Err(fail(
                "an API on the network needs authentication: set api_tls_client_ca_file (client certificates) or api_token_file (bearer token)".into(),
            ));
        }
        let server =
            fleet_wire::tls::server_config(cert, key, config.api_tls_client_ca_file.as_deref())
                .map_err(|e| fail(e.to_string()))?;
        Ok(Listener::Tls(tcp, tokio_rustls::TlsAcceptor::from(server)))
    }

    /// Whether this listener is reachable over the network (and so needs the bearer token).
    /// Plain TCP, bound or passed by systemd, is served only with a bearer token, loopback
    /// too: any local user reaches it, and fleetd runs units as root. (TLS listeners are
    /// checked where they are made: client certificates or a token.)
    pub(crate) fn check_authenticated(
        &self,
        token: bool,
        config: &Config,
    ) -> Result<(), StartError> {
        let Listener::Tcp(tcp) = self else {
            return Ok(());
        };
        if token {
            return Ok(());
        }
        let address = tcp
            .local_addr()
            .map_err(|e| StartError::Process(format!("a TCP listener's address: {e}")))?;
        if address.ip().is_loopback() && config.api_allow_unauthenticated_loopback {
            tracing::warn!(%address, "api_allow_unauthenticated_loopback: any local user can run units as root through this listener");
            return Ok(());
        }
        Err(StartError::setting(
            format!("api_listen http://{address}"),
            "a TCP listener needs authentication, on loopback too (any local user reaches it): set api_token_file (bearer token), or use https:// with client certificates, or unix://",
        ))
    }

    pub(crate) fn is_tcp(&self) -> bool {
        !matches!(self, Listener::Unix(..))
    }
}

/// The bearer tokens from `api_token_file`, if one is configured.
pub(crate) fn api_tokens(config: &Config) -> Result<Option<Tokens>, StartError> {
    let Some(path) = &config.api_token_file else {
        return Ok(None);
    };
    let setting = || format!("api_token_file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| StartError::setting(setting(), e))?;
    let tokens = Tokens::parse(&text).map_err(|why| StartError::setting(setting(), why))?;
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "api_token_file is readable by others than its owner: make it 0600");
        }
    }
    for (name, role) in tokens.names() {
        tracing::info!(name, role = role.as_str(), "api: token");
    }
    Ok(Some(tokens))
}

/// An accepted connection, before any TLS.
enum Accepted {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream, std::net::SocketAddr),
}

/// Who is on the other end of a unix socket, as the kernel says.
fn unix_peer(stream: &tokio::net::UnixStream) -> Peer {
    let credentials = stream.peer_cred().ok();
    Peer::Unix {
        uid: credentials.map(|c| c.uid()),
        pid: credentials.and_then(|c| c.pid()),
    }
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Unix(unix, _) => Ok(Accepted::Unix(unix.accept().await?.0)),
            Listener::Tcp(tcp) | Listener::Tls(tcp, _) => {
                let (stream, address) = tcp.accept().await?;
                Ok(Accepted::Tcp(stream, address))
            }
        }
    }
}

/// Serves `listener` until `shutdown`, each connection on a task of its own (a slow TLS
/// handshake holds up nobody else), within the bounds above.
pub(crate) async fn serve(
    listener: Listener,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = match &listener {
        Listener::Tls(_, acceptor) => Some(acceptor.clone()),
        _ => None,
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut refused = Refused::default();
    let mut stopping = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stop| *stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: not a busy loop meanwhile.
                tracing::warn!(%error, "api: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused.note();
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            match (accepted, acceptor) {
                (Accepted::Unix(stream), _) => {
                    let peer = unix_peer(&stream);
                    serve_connection(stream, peer, router, shutdown).await
                }
                (Accepted::Tcp(stream, address), None) => {
                    serve_connection(stream, Peer::Tcp(address), router, shutdown).await
                }
                (Accepted::Tcp(stream, address), Some(acceptor)) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let certificate = tls.get_ref().1.peer_certificates().is_some();
                            let peer = Peer::Tls {
                                address,
                                certificate,
                            };
                            serve_connection(tls, peer, router, shutdown).await
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%address, %error, "api: TLS handshake refused")
                        }
                        Err(_) => tracing::warn!(%address, "api: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    if let Listener::Unix(_, Some(path)) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), drained).await;
}

/// Serves one connection's requests until it closes, breaks a bound, or fleetd stops (then
/// its request under way gets `DRAIN` to finish). Each request carries `peer`, for the
/// API's access control and audit.
async fn serve_connection<I>(
    io: I,
    peer: Peer,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = router.layer(axum::Extension(peer));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                tracing::debug!(%error, "api: connection ended");
            }
            return;
        }
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, connection).await;
}

/// Connections closed for want of a slot, said at most every 10 s.
#[derive(Default)]
struct Refused {
    count: u64,
    said: Option<Instant>,
}

impl Refused {
    fn note(&mut self) {
        self.count += 1;
        if self
            .said
            .is_none_or(|said| said.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                refused = self.count,
                limit = MAX_CONNECTIONS,
                "api: too many connections at once; new ones are closed"
            );
            self.said = Some(Instant::now());
        }
    }
}
