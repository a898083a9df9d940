//! TLS for the API on TCP: the server's configuration (certificate, key, optional client CA
//! whose certificates it then requires) and fleetctl's (the CA it trusts, an optional client
//! certificate). rustls with the ring provider; every failure names the file and the problem.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::ClientConfig;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{what} {}: no certificate in it", path.display()));
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("key file {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(ca, "CA file")? {
        roots
            .add(certificate)
            .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// The server side: `cert` and `key`, and with `client_ca` every client must present a
/// certificate signed by it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certificates(cert, "certificate file")?, private_key(key)?)
        .map_err(|e| {
            format!(
                "certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The client side: trust `ca`, and present `cert_key` when given.
pub fn client_config(
    ca: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    let config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(certificates(cert, "certificate file")?, private_key(key)?)
            .map_err(|e| format!("client certificate {}: {e}", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
