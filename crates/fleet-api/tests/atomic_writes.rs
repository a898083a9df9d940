//! A write the API makes in several parts is one transaction: with a store that refuses every
//! transaction after the first few, a replacing PUT and a PATCH of several metadata values
//! either happen whole or not at all, and nothing that was there is lost.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_registry::intercepted::{Intercepted, Write};
use fleet_registry::local::LocalStore;
use fleet_registry::records::MachineRecord;
use fleet_registry::{Registry, RegistryError, Scope};
use fleet_testkit::measure::exchange_unix;
use fleet_unit::{JobState, MachineId, UnitFile, UnitName};

/// The API over a refusing store (all transactions allowed until the test says otherwise).
async fn serve() -> (tempfile::TempDir, PathBuf, Registry, Arc<AtomicUsize>) {
    // The store accepts `allowed` more transactions, then refuses them (as an etcd that went
    // away between two writes would).
    let allowed = Arc::new(AtomicUsize::new(usize::MAX));
    let left = Arc::clone(&allowed);
    let store = Intercepted::new(Arc::new(LocalStore::in_memory()), move |write| {
        if write != Write::Txn {
            return Ok(());
        }
        match left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)) {
            Ok(_) => Ok(()),
            Err(_) => Err(RegistryError::Unavailable("refused by the test".into())),
        }
    });
    let registry = Registry::open(Arc::new(store)).await.unwrap();
    let (dir, socket) = common::serve(&registry, 100);
    (dir, socket, registry, allowed)
}

async fn request(socket: &Path, method: &str, path: &str, body: &str) -> u16 {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || exchange_unix(&socket, &request).0)
        .await
        .unwrap()
}

fn unit(command: &str) -> UnitFile {
    UnitFile::parse(format!("[Service]\nExecStart={command}\n")).unwrap()
}

fn put_body(command: &str) -> String {
    format!(r#"{{"options":[{{"section":"Service","name":"ExecStart","value":"{command}"}}]}}"#)
}

#[tokio::test]
async fn a_replacing_put_is_whole_or_nothing() {
    let (_dir, socket, registry, allowed) = serve().await;
    let name = UnitName::new("a.service").unwrap();
    let first = unit("/bin/sleep 1");
    registry
        .create_job(&name, &first, JobState::Launched)
        .await
        .unwrap();
    let job = |registry: Registry| {
        let name = name.clone();
        async move { registry.job(&name).await.unwrap().unwrap().0 }
    };

    let body = put_body("/bin/sleep 2");
    let replace = || request(&socket, "PUT", "/fleet/v1/units/a.service", &body);

    // The store refuses the write: the old unit is all there still.
    allowed.store(0, Ordering::Release);
    let status = replace().await;
    assert_eq!(status, 503);
    let kept = job(registry.clone()).await;
    assert_eq!(
        (kept.hash, kept.desired),
        (first.hash(), JobState::Launched)
    );

    // One write allowed: the replacement is made whole in it (a destroy then a create lost
    // the unit here).
    allowed.store(1, Ordering::Release);
    let status = replace().await;
    assert_eq!(status, 201);
    let replaced = job(registry.clone()).await;
    assert_eq!(
        (replaced.hash, replaced.desired),
        (unit("/bin/sleep 2").hash(), JobState::Inactive)
    );
    let file = registry.unit_file(&replaced.hash).await.unwrap();
    assert_eq!(
        file,
        Some(unit("/bin/sleep 2")),
        "its unit file is stored with it"
    );
}

#[tokio::test]
async fn a_patch_of_several_values_is_whole_or_nothing() {
    let (_dir, socket, registry, allowed) = serve().await;
    let machine = MachineId::new("0123456789abcdef0123456789abcdef").unwrap();
    let record = MachineRecord::default();
    let _lease = registry
        .register_machine(&machine, &record, Duration::from_secs(600), None)
        .await
        .unwrap();
    let body = format!(
        r#"[{{"op":"add","path":"/{machine}/metadata/a","value":{{"value":"1"}}}},{{"op":"add","path":"/{machine}/metadata/b","value":{{"value":"2"}}}}]"#
    );
    let metadata = |registry: Registry| {
        let machine = machine.clone();
        async move {
            let snapshot = registry.snapshot(&Scope::All).await.unwrap();
            snapshot.machine_metadata(&machine)
        }
    };
    allowed.store(0, Ordering::Release);
    assert_eq!(
        request(&socket, "PATCH", "/fleet/v1/machines", &body).await,
        503
    );
    assert!(metadata(registry.clone()).await.is_empty());
    allowed.store(1, Ordering::Release);
    assert_eq!(
        request(&socket, "PATCH", "/fleet/v1/machines", &body).await,
        204
    );
    let written = metadata(registry.clone()).await;
    assert_eq!(
        (
            written.get("a").map(String::as_str),
            written.get("b").map(String::as_str)
        ),
        (Some("1"), Some("2")),
        "both values in the one write allowed"
    );
}
