//! What the API's test binaries share.

use std::path::PathBuf;

use fleet_api::server::{router, ApiState};
use fleet_registry::Registry;

/// Serves the API over `registry` on a unix socket in a new temporary directory (removed when
/// the returned guard drops), paging listings by `token_limit`; the socket's path.
pub fn serve(registry: &Registry, token_limit: u16) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let served = registry.clone();
    tokio::spawn(async move {
        axum::serve(listener, router(ApiState::new(served, token_limit, "test")))
            .await
            .unwrap();
    });
    (dir, socket)
}
