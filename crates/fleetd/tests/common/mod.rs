//! What several fleetd test binaries share.

use std::time::{Duration, Instant};

use fleet_registry::{Registry, Scope, Snapshot};

/// Waits until the registry's snapshot satisfies `done`, failing the test after `within`. A
/// snapshot that cannot be read (etcd restarting, say) is retried, within the same bound.
pub async fn until(
    registry: &Registry,
    what: &str,
    within: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + within;
    loop {
        let last = match registry.snapshot(&Scope::All).await {
            Ok(snapshot) if done(&snapshot) => return snapshot,
            Ok(snapshot) => format!("{snapshot:#?}"),
            Err(e) => format!("registry unreadable: {e}"),
        };
        assert!(Instant::now() < deadline, "{what}: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
