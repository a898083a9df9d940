//! The contract every registry backend must keep, run against each of them: the in-memory
//! store, the embedded store (a redb file in a temp dir) and a real etcd (started per test on
//! free loopback ports).

use std::time::Duration;

mod common;

use common::{put, Backend};
use fleet_registry::error::RegistryError;
use fleet_registry::kv::{
    Compare, EventKind, KeyRange, KvStore, Op, Watch, WatchBatch, MAX_TXN_OPS,
};

async fn value(store: &dyn KvStore, key: &str) -> Option<String> {
    let kv = store.get(key).await.unwrap()?;
    Some(String::from_utf8(kv.value).unwrap())
}

/// The next batch, or a failure after a bound (never a hang).
async fn next(watch: &mut Watch) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch goes on")
        .expect("no watch error")
}

fn events(batch: &WatchBatch) -> Vec<(EventKind, String, String)> {
    batch
        .events
        .iter()
        .map(|e| {
            let value = String::from_utf8(e.kv.value.clone()).unwrap();
            (e.kind.clone(), e.kv.key.clone(), value)
        })
        .collect()
}

/// Waits, bounded, until `key` is gone.
async fn wait_gone(store: &dyn KvStore, key: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if store.get(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn put_get_delete(b: Backend) {
    let s = &*b.store;
    assert_eq!(s.get("a").await.unwrap(), None);
    let first = put(s, "a", "1").await;
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"1"[..], first, first)
    );
    let second = put(s, "a", "2").await;
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (first, second));
    assert!(second > first);
    s.txn(vec![], vec![Op::delete("a")]).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    // One member (every backend here): what it applied is what was written.
    assert_eq!(s.get_applied("a").await.unwrap(), None);
    let third = put(s, "a", "3").await;
    let kv = s.get_applied("a").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"3"[..], third));
}

async fn range_is_sorted_and_consistent(b: Backend) {
    let s = &*b.store;
    for key in [
        "jobs/b",
        "jobs/a",
        "machines/m2",
        "jobs/c",
        "machines/m1",
        "jobsx",
    ] {
        put(s, key, key).await;
    }
    let last = put(s, "other", "x").await;
    let (ranges, revision) = s.range(&["jobs/", "machines/", "none/"]).await.unwrap();
    let keys: Vec<Vec<&str>> = ranges
        .iter()
        .map(|r| r.iter().map(|kv| kv.key.as_str()).collect())
        .collect();
    assert_eq!(
        keys,
        vec![
            vec!["jobs/a", "jobs/b", "jobs/c"],
            vec!["machines/m1", "machines/m2"],
            vec![]
        ]
    );
    assert_eq!(revision, last);
}

/// A listing bigger than gRPC's default 4 MB answer (the states of a cluster of 10,000+ units)
/// is read whole.
async fn a_range_of_many_megabytes_is_read_whole(b: Backend) {
    let s = &*b.store;
    let value = vec![b'v'; 1000];
    let batches = 48;
    for batch in 0..batches {
        let ops = (0..MAX_TXN_OPS)
            .map(|i| Op::put(format!("big/{batch:03}/{i:03}"), value.clone()))
            .collect();
        s.txn(vec![], ops).await.unwrap();
    }
    let (ranges, _) = s.range(&["big/"]).await.unwrap();
    assert_eq!(ranges[0].len(), batches * MAX_TXN_OPS);
    assert!(ranges[0].iter().all(|kv| kv.value == value));
}

async fn compare_and_swap(b: Backend) {
    let s = &*b.store;
    let create = || {
        s.txn(
            vec![Compare::Absent("leader".into())],
            vec![Op::put("leader", "m1")],
        )
    };
    assert!(create().await.unwrap().succeeded);
    assert!(
        !create().await.unwrap().succeeded,
        "a second create must fail"
    );
    let kv = s.get("leader").await.unwrap().unwrap();
    let stale = Compare::ModRevision("leader".into(), kv.mod_revision - 1);
    assert!(
        !s.txn(vec![stale], vec![Op::put("leader", "m2")])
            .await
            .unwrap()
            .succeeded
    );
    let fresh = Compare::ModRevision("leader".into(), kv.mod_revision);
    assert!(
        s.txn(vec![fresh], vec![Op::put("leader", "m2")])
            .await
            .unwrap()
            .succeeded
    );
    let by_value = Compare::Value("leader".into(), b"m2".to_vec());
    let by_creation = Compare::CreateRevision("leader".into(), kv.create_revision);
    let ops = vec![Op::put("x", "1"), Op::put("y", "2")];
    assert!(
        s.txn(vec![by_value, by_creation], ops)
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(
        (value(s, "x").await, value(s, "y").await),
        (Some("1".into()), Some("2".into()))
    );
    assert_eq!(value(s, "leader").await.as_deref(), Some("m2"));
}

async fn transaction_limits(b: Backend) {
    let s = &*b.store;
    let ops: Vec<Op> = (0..MAX_TXN_OPS)
        .map(|i| Op::put(format!("k{i}"), "v"))
        .collect();
    assert!(
        s.txn(vec![], ops).await.unwrap().succeeded,
        "128 operations fit"
    );
    let ops: Vec<Op> = (0..=MAX_TXN_OPS)
        .map(|i| Op::put(format!("k{i}"), "v"))
        .collect();
    assert!(matches!(
        s.txn(vec![], ops).await,
        Err(RegistryError::Invalid(_))
    ));
    let twice = vec![Op::put("d", "1"), Op::put("d", "2")];
    assert!(matches!(
        s.txn(vec![], twice).await,
        Err(RegistryError::Invalid(_))
    ));
    let inside_deleted = vec![
        Op::DeletePrefix {
            prefix: "d/".into(),
        },
        Op::put("d/x", "1"),
    ];
    let err = s.txn(vec![], inside_deleted).await.unwrap_err();
    assert!(matches!(err, RegistryError::Invalid(_)), "{err}");
    let huge = vec![Op::put("big", vec![b'x'; 2 * 1024 * 1024])];
    let err = s.txn(vec![], huge).await.unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { key, .. } if key == "big"),
        "{err}"
    );
    assert_eq!(s.get("big").await.unwrap(), None);
}

async fn lease_expiry_removes_keys_together(b: Backend) {
    let s = &*b.store;
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let ops = vec![
        Op::put_with_lease("machines/m1", "m1", lease),
        Op::put_with_lease("states/m1/a", "x", lease),
    ];
    s.txn(vec![], ops).await.unwrap();
    put(s, "jobs/a", "kept").await;
    let mut watch = s.watch("states/", 0).await.unwrap();
    assert!(
        wait_gone(s, "machines/m1", Duration::from_secs(8)).await,
        "lease expired"
    );
    assert_eq!(s.get("states/m1/a").await.unwrap(), None);
    assert_eq!(value(s, "jobs/a").await.as_deref(), Some("kept"));
    let batch = next(&mut watch).await;
    assert_eq!(
        events(&batch),
        vec![(EventKind::Delete, "states/m1/a".into(), String::new())]
    );
    assert_eq!(
        s.keep_alive(lease, Duration::from_secs(1)).await.unwrap(),
        None
    );
    assert_eq!(s.lease_ttl(lease).await.unwrap(), None);
}

async fn keep_alive_holds_a_lease(b: Backend) {
    let s = &*b.store;
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.txn(vec![], vec![Op::put_with_lease("machines/m1", "m1", lease)])
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            s.keep_alive(lease, Duration::from_secs(1)).await.unwrap(),
            Some(Duration::from_secs(2))
        );
    }
    assert!(
        s.get("machines/m1").await.unwrap().is_some(),
        "kept alive for 4 s on a 2 s lease"
    );
    let left = s.lease_ttl(lease).await.unwrap().expect("lease alive");
    assert!(left <= Duration::from_secs(2), "{left:?}");
}

async fn revoke_deletes_at_once(b: Backend) {
    let s = &*b.store;
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.txn(vec![], vec![Op::put_with_lease("machines/m1", "m1", lease)])
        .await
        .unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("machines/m1").await.unwrap(), None);
    s.revoke_lease(lease).await.unwrap();
    let err = s
        .txn(vec![], vec![Op::put_with_lease("x", "1", lease)])
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LeaseNotFound(_)), "{err}");
    assert_eq!(s.get("x").await.unwrap(), None);
}

async fn watch_resumes_from_a_revision(b: Backend) {
    let s = &*b.store;
    let seen = put(s, "schedule/m1/a", "1").await;
    put(s, "schedule/m1/b", "2").await;
    put(s, "schedule/m2/x", "ignored").await;
    put(s, "schedule/m1/a", "3").await;
    let mut watch = s.watch("schedule/m1/", seen + 1).await.unwrap();
    assert_eq!(
        events(&next(&mut watch).await),
        vec![(EventKind::Put, "schedule/m1/b".into(), "2".into())]
    );
    assert_eq!(
        events(&next(&mut watch).await),
        vec![(EventKind::Put, "schedule/m1/a".into(), "3".into())]
    );
    let ops = vec![
        Op::delete("schedule/m1/a"),
        Op::put("schedule/m1/c", "4"),
        Op::put("schedule/m2/y", "no"),
    ];
    let rev = s.txn(vec![], ops).await.unwrap().revision;
    let batch = next(&mut watch).await;
    assert_eq!(batch.revision, rev);
    assert_eq!(
        events(&batch),
        vec![
            (EventKind::Delete, "schedule/m1/a".into(), String::new()),
            (EventKind::Put, "schedule/m1/c".into(), "4".into())
        ]
    );
}

/// A range watch sees the keys from its start up to its end: here every key under `b/` to
/// every key under `d/`, and nothing before or after.
async fn a_range_watch_sees_its_range_only(b: Backend) {
    let s = &*b.store;
    let mut watch = s
        .watch_range(&KeyRange::spanning("b/", "d/"), 0)
        .await
        .unwrap();
    let ops = ["a/1", "b", "b/1", "c", "c/1/2", "d/1", "d0", "e/1"]
        .iter()
        .map(|key| Op::put(*key, "v"))
        .collect();
    s.txn(vec![], ops).await.unwrap();
    let keys: Vec<String> = events(&next(&mut watch).await)
        .into_iter()
        .map(|(_, key, _)| key)
        .collect();
    assert_eq!(keys, ["b/1", "c", "c/1/2", "d/1"]);
    // The empty prefix is every key.
    let mut all = s.watch("", 0).await.unwrap();
    let rev = put(s, "zz", "v").await;
    let batch = next(&mut all).await;
    assert_eq!((batch.revision, events(&batch).len()), (rev, 1));
}

async fn watch_of_compacted_history_fails_clearly(mut b: Backend) {
    let old = put(&*b.store, "jobs/a", "1").await;
    put(&*b.store, "jobs/a", "2").await;
    let now = put(&*b.store, "jobs/a", "3").await;
    b.compact(now).await;
    let s = &*b.store;
    let result = match s.watch("jobs/", old).await {
        Ok(mut watch) => tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an answer within 10 s")
            .expect("an error, not a silent end")
            .map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(RegistryError::Compacted { .. })),
        "{result:?}"
    );
    // Re-list, then resume: the documented recovery.
    let (ranges, revision) = s.range(&["jobs/"]).await.unwrap();
    assert_eq!(ranges[0][0].value, b"3");
    let mut watch = s.watch("jobs/", revision + 1).await.unwrap();
    put(s, "jobs/b", "4").await;
    assert_eq!(
        events(&next(&mut watch).await),
        vec![(EventKind::Put, "jobs/b".into(), "4".into())]
    );
}

on_every_backend!(
    put_get_delete,
    range_is_sorted_and_consistent,
    a_range_of_many_megabytes_is_read_whole,
    compare_and_swap,
    transaction_limits,
    lease_expiry_removes_keys_together,
    keep_alive_holds_a_lease,
    revoke_deletes_at_once,
    watch_resumes_from_a_revision,
    a_range_watch_sees_its_range_only,
    watch_of_compacted_history_fails_clearly,
);
