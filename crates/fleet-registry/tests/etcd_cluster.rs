//! A real 3-member etcd cluster loses its leader mid-test: no acknowledged write is lost, and a
//! registry view (its watches) carries on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::kv::{KvStore, Op};
use fleet_registry::{Changed, Registry, Scope};
use fleet_testkit::EtcdCluster;
use fleet_unit::{JobState, UnitFile, UnitName};

/// Writes `acked/<i>` one after another, retrying each until it is acknowledged, and records
/// the acknowledged ones. Stops after `count` or at `deadline`.
async fn write_until(
    store: Arc<dyn KvStore>,
    acked: Arc<Mutex<Vec<u32>>>,
    count: u32,
    deadline: Instant,
) -> Option<Duration> {
    let mut longest_gap = None;
    for i in 0..count {
        let started = Instant::now();
        loop {
            if Instant::now() > deadline {
                return longest_gap;
            }
            let put = Op::put(format!("acked/{i:05}"), i.to_string());
            match store.txn(vec![], vec![put]).await {
                Ok(outcome) if outcome.succeeded => break,
                Ok(_) => unreachable!("no compares"),
                Err(e) => {
                    assert!(e.is_unavailable(), "only unavailability expected: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let gap = started.elapsed();
        longest_gap = longest_gap.max(Some(gap));
        acked.lock().unwrap().push(i);
    }
    longest_gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_etcd_leader_loses_no_acknowledged_write() {
    let mut cluster = EtcdCluster::start(3);
    let mut config = EtcdConfig::new(cluster.endpoints(), "/cluster-test/");
    config.request_timeout = Duration::from_secs(1);
    let store: Arc<dyn KvStore> = Arc::new(EtcdStore::connect(&config).await.unwrap());
    let registry = Registry::open(Arc::clone(&store)).await.unwrap();
    let mut view = registry.view(Scope::All).await.unwrap();

    let acked = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let writer = tokio::spawn(write_until(
        Arc::clone(&store),
        Arc::clone(&acked),
        400,
        deadline,
    ));
    while acked.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "writes did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = cluster.leader().expect("the cluster has a leader");
    cluster.kill(leader);
    let killed_at = acked.lock().unwrap().len();

    let longest_gap = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        400,
        "writes went on after the kill: {}",
        cluster.logs()
    );
    assert!(killed_at < 400, "the leader died mid-stream");
    let (ranges, _) = store.range(&["acked/"]).await.unwrap();
    let stored: Vec<String> = ranges[0].iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<String> = acked.iter().map(|i| format!("acked/{i:05}")).collect();
    assert_eq!(stored, expected, "every acknowledged write is stored");
    eprintln!(
        "leader s{leader} killed after {killed_at} writes; longest wait for one write: {longest_gap:?}"
    );

    // The view's watches went through the same loss; a job created now still reaches it.
    let name = UnitName::new("after.service").unwrap();
    let unit = UnitFile::parse("[Service]\nExecStart=/bin/true\n").unwrap();
    registry
        .create_job(&name, &unit, JobState::Launched)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !view.snapshot().jobs.contains_key(&name) {
        assert!(Instant::now() < deadline, "the view never saw the new job");
        match tokio::time::timeout(Duration::from_secs(5), view.changed()).await {
            Ok(Ok(Changed::Keys(_) | Changed::Everything)) => {}
            // Unreachable for a moment: try again, as a reconciler would after a backoff.
            Ok(Err(e)) => {
                assert!(e.is_unavailable(), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    }

    // The killed member rejoins and the cluster serves on.
    cluster.restart(leader);
    store
        .txn(vec![], vec![Op::put("after-rejoin", "1")])
        .await
        .unwrap();
}
