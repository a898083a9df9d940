//! Nothing poisons the registry through the API, and what is poisoned some other way holds up
//! nothing: options that would not read back as given are refused at the door (400, naming
//! the option, nothing stored), and a unit whose stored file is corrupt is still listed, as are
//! all the others.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleet_registry::keys::RegistryKey;
use fleet_registry::kv::Op;
use fleet_registry::local::LocalStore;
use fleet_registry::{KvStore, Registry};
use fleet_testkit::measure::http_unix;
use fleet_unit::UnitName;

async fn serve() -> (tempfile::TempDir, PathBuf, Registry, Arc<dyn KvStore>) {
    let store: Arc<dyn KvStore> = Arc::new(LocalStore::in_memory());
    let registry = Registry::open(Arc::clone(&store)).await.unwrap();
    let (dir, socket) = common::serve(&registry, 100);
    (dir, socket, registry, store)
}

async fn http(socket: &Path, method: &str, path: &str, body: Option<String>) -> (u16, String) {
    let (socket, method, path) = (socket.to_owned(), method.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || http_unix(&socket, &method, &path, body.as_deref()))
        .await
        .unwrap()
}

/// A PUT of `options` (JSON) as `name`, launched.
fn put(options: &str) -> String {
    format!(r#"{{"desiredState":"launched","options":{options}}}"#)
}

#[tokio::test]
async fn options_that_would_not_read_back_are_refused_and_nothing_is_stored() {
    let (_dir, socket, _registry, _store) = serve().await;
    let exec = r#"{"section":"Service","name":"ExecStart","value":"/bin/true"}"#;
    // (the poisoned option, a part of the message naming what is wrong)
    let cases = [
        (
            r#"{"section":"Unit]\n[Service","name":"ExecStart","value":"/bin/evil"}"#,
            "section name",
        ),
        (
            r#"{"section":"Unit","name":"Description","value":"one\nExecStartPre=/bin/evil"}"#,
            "line break",
        ),
        (
            r#"{"section":"Unit","name":"Description","value":"swallows the next\\"}"#,
            "backslash",
        ),
        (
            r#"{"section":"Service","name":"ExecStart\nUser","value":"root"}"#,
            "line break",
        ),
    ];
    for (option, why) in cases {
        let body = put(&format!("[{option},{exec}]"));
        let (status, answer) = http(&socket, "PUT", "/fleet/v1/units/p.service", Some(body)).await;
        assert_eq!(status, 400, "{option}: {answer}");
        assert!(
            answer.contains("cannot be stored") && answer.contains(why),
            "{option}: {answer}"
        );
    }
    let (status, listing) = http(&socket, "GET", "/fleet/v1/units", None).await;
    assert_eq!((status, listing.trim()), (200, "{}"), "nothing stored");
    // A continued line is what fleet's own files have: stored.
    let continued = r#"{"section":"Service","name":"ExecStart","value":"/bin/sh -c 'a \\\n  b'"}"#;
    let (status, answer) = http(
        &socket,
        "PUT",
        "/fleet/v1/units/ok.service",
        Some(put(&format!("[{continued}]"))),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn a_corrupt_unit_file_leaves_the_listing_whole() {
    let (_dir, socket, registry, store) = serve().await;
    for (name, command) in [("bad.service", "/bin/false"), ("good.service", "/bin/true")] {
        let option = format!(r#"[{{"section":"Service","name":"ExecStart","value":"{command}"}}]"#);
        let path = format!("/fleet/v1/units/{name}");
        let (status, answer) = http(&socket, "PUT", &path, Some(put(&option))).await;
        assert_eq!(status, 201, "{answer}");
    }
    let bad = registry
        .job(&UnitName::new("bad.service").unwrap())
        .await
        .unwrap()
        .unwrap()
        .0;
    let key = RegistryKey::Unit(bad.hash).path();
    store
        .txn(
            Vec::new(),
            vec![Op::put(key, "[Service\nExecStart=/bin/evil\n")],
        )
        .await
        .unwrap();
    let (status, listing) = http(&socket, "GET", "/fleet/v1/units", None).await;
    assert_eq!(status, 200, "{listing}");
    let listing: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let names: Vec<&str> = listing["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bad.service", "good.service"]);
    let good = &listing["units"][1]["options"][0]["value"];
    assert_eq!(good, "/bin/true");
    // The bad one can still be destroyed (and submitted again).
    let (status, answer) = http(&socket, "DELETE", "/fleet/v1/units/bad.service", None).await;
    assert_eq!(status, 204, "{answer}");
}
