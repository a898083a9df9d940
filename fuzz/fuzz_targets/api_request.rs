//! A request from arbitrary bytes (method, path, content type and body, split at the first
//! three 0xFF bytes) against the API over an in-memory registry: no panic, no server error, an
//! accepted unit reads back exactly, the listing stays readable. The invariant the property
//! test `crates/fleet-api/tests/request_fuzz.rs` checks on generated requests.
#![no_main]

#[path = "../../crates/fleet-api/tests/invariants/mod.rs"]
mod invariants;

use std::sync::{Arc, OnceLock};

use fleet_api::server::{router, ApiState};
use fleet_registry::local::LocalStore;
use fleet_registry::{KvStore, Registry};

fn served() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static SERVED: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    SERVED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let router = runtime.block_on(async {
            let store: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
            let registry = Registry::open(store).await.expect("an in-memory registry");
            router(ApiState::new(registry, 100, "fuzz"))
        });
        (runtime, router)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(4, |b| *b == 0xff);
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (method, path, content_type) = (text(), text(), text());
    let sent = invariants::Sent {
        method: if method.is_empty() { "PUT".into() } else { method },
        path,
        content_type: (!content_type.is_empty()).then_some(content_type),
        body: fields.next().unwrap_or_default().to_vec(),
    };
    let (runtime, router) = served();
    if let Err(finding) = runtime.block_on(invariants::check_request(router, &sent)) {
        panic!("{finding}");
    }
});
