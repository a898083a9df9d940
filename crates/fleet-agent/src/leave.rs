//! A machine leaving the cluster, as fleet's did on SIGTERM: every unit of the machine stopped
//! and unloaded, then the machine lease ended, so that its presence and unit states go at once
//! (not when the lease would have expired) and the engine moves its units right away. The
//! agent's own call: it alone knows where it keeps its lease and what it started.

use fleet_registry::Registry;

use crate::agent::AgentConfig;
use crate::lease;
use crate::manager::UnitManager;

/// How many units are stopped at once when the machine leaves.
const CONCURRENCY: usize = 128;

/// Unloads every unit of this machine and ends its lease.
pub async fn leave(registry: &Registry, manager: &dyn UnitManager, config: &AgentConfig) {
    tracing::info!("fleetd leaving the cluster: unloading this machine's units");
    match manager.loaded().await {
        Ok(loaded) => {
            // All at once (bounded), as systemd stops units at shutdown: a machine of a
            // thousand units is left in seconds, not in a thousand stops' time.
            use futures_util::StreamExt;
            let unloads = loaded.keys().map(|name| async move {
                if let Err(error) = manager.unload(name).await {
                    tracing::warn!(unit = %name, %error, "cannot unload");
                }
            });
            futures_util::stream::iter(unloads)
                .buffer_unordered(CONCURRENCY)
                .collect::<()>()
                .await;
        }
        Err(error) => tracing::warn!(%error, "cannot list units to unload"),
    }
    if let Some(started) = &config.started_file {
        let _ = std::fs::remove_file(started);
    }
    if let Some(id) = lease::recorded(&config.lease_file) {
        if let Err(error) = registry.leave(id).await {
            tracing::warn!(%error, "cannot end the machine lease; it will expire");
        }
        let _ = std::fs::remove_file(&config.lease_file);
    }
}
