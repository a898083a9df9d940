//! TLS for the API on TCP: the server's configuration (certificate, key, optional client CA
//! whose certificates it then requires) and fleetctl's (the CA it trusts, an optional client
//! certificate). rustls with the ring provider; every failure names the file and the problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::ClientConfig;

/// What is wrong with a TLS file or configuration; it names the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// `what` (certificate file, key file, CA file, client CA...) at `path` cannot be used.
    File {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// The files are each fine but do not make a configuration (a key that is not the
    /// certificate's, say).
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File {
                what,
                path,
                problem,
            } => write!(f, "{what} {}: {problem}", path.display()),
            TlsError::Config(problem) => f.write_str(problem),
        }
    }
}

impl std::error::Error for TlsError {}

fn file_error(what: &'static str, path: &Path, problem: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certificates.is_empty() {
        return Err(file_error(what, path, "no certificate in it"));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("key file", path, e))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(ca, "CA file")? {
        roots
            .add(certificate)
            .map_err(|e| file_error("CA file", ca, e))?;
    }
    Ok(roots)
}

/// The server side: `cert` and `key`, and with `client_ca` every client must present a
/// certificate signed by it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| file_error("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(cert, "certificate file")?, private_key(key)?)
        .map_err(|e| {
            TlsError::Config(format!(
                "certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// The client side: trust `ca`, and present `cert_key` when given.
pub fn client_config(
    ca: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert, "certificate file")?, private_key(key)?)
            .map_err(|e| file_error("client certificate", cert, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
