//! What only the embedded store promises: everything acknowledged survives a restart and a
//! `kill -9`, and a file it cannot use is a clear error, never a panic.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet_registry::error::RegistryError;
use fleet_registry::kv::{KvStore, Op};
use fleet_registry::local::LocalStore;

const CHILD_ENV: &str = "FLEET_REGISTRY_KILL9_CHILD";

async fn put(store: &dyn KvStore, key: &str, value: &str) -> i64 {
    let outcome = store.txn(vec![], vec![Op::put(key, value)]).await.unwrap();
    assert!(outcome.succeeded);
    outcome.revision
}

#[tokio::test]
async fn reopening_restores_keys_revisions_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let (lease, last) = {
        let store = LocalStore::open(&path).unwrap();
        put(&store, "jobs/a", "1").await;
        let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
        let ops = vec![Op::put_with_lease("machines/m1", "m1", lease)];
        store.txn(vec![], ops).await.unwrap();
        put(&store, "jobs/a", "2").await;
        let last = put(&store, "jobs/b", "3").await;
        (lease, last)
    };
    let store = LocalStore::open(&path).unwrap();
    let a = store.get("jobs/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.create_revision), (&b"2"[..], 2));
    let machine = store.get("machines/m1").await.unwrap().unwrap();
    assert_eq!(machine.lease, lease);
    assert!(put(&store, "jobs/c", "4").await > last, "revisions go on");
    let second = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(second, lease, "lease ids are not reused");
    // The restored lease runs out without keep-alives, taking its key with it.
    assert!(store.lease_ttl(lease).await.unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(8);
    while store.get("machines/m1").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "restored lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(store);
    let store = LocalStore::open(&path).unwrap();
    assert_eq!(store.get("machines/m1").await.unwrap(), None);
    assert_eq!(store.lease_ttl(lease).await.unwrap(), None);
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let _first = LocalStore::open(&path).unwrap();
    let err = LocalStore::open(&path).err().expect("second open refused");
    assert!(matches!(err, RegistryError::Storage { .. }), "{err}");
    assert!(err.to_string().contains("registry.redb"), "{err}");
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let err = LocalStore::open(&path).err().expect("garbage refused");
    assert!(matches!(err, RegistryError::Storage { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x5a; 64 * 1024],
        "left as it was"
    );
}

#[tokio::test]
async fn a_store_of_another_format_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let meta = redb::TableDefinition::<&str, u64>::new("meta");
            tx.open_table(meta).unwrap().insert("format", 99).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = LocalStore::open(&path).err().expect("format 99 refused");
    assert!(
        matches!(&err, RegistryError::Corrupt { key, .. } if key == "meta/format"),
        "{err}"
    );
}

/// Writes keys one at a time into the store named by the environment, printing `ack N` after
/// each acknowledged write, until killed. Runs only as the child of the kill -9 test.
#[tokio::test]
#[ignore = "the child process of acknowledged_writes_survive_kill_9"]
async fn kill9_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = LocalStore::open(Path::new(&path)).unwrap();
    for i in 0..1_000_000u64 {
        let ops = vec![Op::put(format!("k/{i:08}"), i.to_string())];
        store.txn(vec![], ops).await.unwrap();
        println!("ack {i}");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["kill9_child_writer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("ack ") {
                acked = Some(n.parse::<u64>().unwrap());
            }
            // Kill mid-stream, at a different point each round.
            if acked >= Some(200 + round * 150) || Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = acked.expect("the child acknowledged writes");
        let store = LocalStore::open(&path).unwrap();
        let (ranges, _) = store.range(&["k/"]).await.unwrap();
        let missing: Vec<u64> = (0..=acked)
            .filter(|i| !ranges[0].iter().any(|kv| kv.key == format!("k/{i:08}")))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged keys lost after kill -9: {missing:?}"
        );
        // The next child starts over from key 0, overwriting: every key stays readable.
        drop(store);
    }
}
