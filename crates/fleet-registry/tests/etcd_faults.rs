//! The etcd backend under faults, against a real etcd: errors are bounded and say
//! "unreachable", and the same client works again once etcd is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_registry::error::RegistryError;
use fleet_registry::etcd::{EtcdConfig, EtcdStore};
use fleet_registry::kv::{KvStore, Op};
use fleet_registry::{Changed, Registry, Scope};
use fleet_testkit::EtcdServer;
use fleet_unit::MachineId;

fn config(endpoint: String) -> EtcdConfig {
    let mut config = EtcdConfig::new(vec![endpoint], "/faults/");
    config.request_timeout = Duration::from_millis(500);
    config
}

/// A registry on `etcd`, through a store with this file's short timeouts.
async fn registry_on(etcd: &EtcdServer) -> Registry {
    let store: Arc<dyn KvStore> =
        Arc::new(EtcdStore::connect(&config(etcd.endpoint())).await.unwrap());
    Registry::open(store).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_is_a_quick_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let result = EtcdStore::connect(&config(format!("http://127.0.0.1:{port}"))).await;
    let err = result.err().expect("nothing listens there");
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string().starts_with("registry unreachable: "),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let err = EtcdStore::connect(&EtcdConfig::new(vec![], "/x/"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err,
        RegistryError::Invalid("no etcd endpoints configured".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_gives_bounded_errors_then_recovers() {
    let mut etcd = EtcdServer::start();
    let store = EtcdStore::connect(&config(etcd.endpoint())).await.unwrap();
    store
        .txn(vec![], vec![Op::put("jobs/a", "1")])
        .await
        .unwrap();
    let mut watch = store.watch("jobs/", 0).await.unwrap();

    etcd.kill();
    let started = Instant::now();
    let err = store.get("jobs/a").await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("the watch reports the outage instead of hanging");
    assert!(
        matches!(ended, Some(Err(ref e)) if e.is_unavailable()) || ended.is_none(),
        "{ended:?}"
    );

    etcd.restart();
    // The same store reconnects by itself; bounded retries, as a caller would do.
    let deadline = Instant::now() + Duration::from_secs(15);
    let value = loop {
        match store.get("jobs/a").await {
            Ok(kv) => break kv.map(|kv| kv.value),
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    assert_eq!(
        value.as_deref(),
        Some(&b"1"[..]),
        "the acknowledged write survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_comes_through_an_etcd_restart_with_what_changed_meanwhile() {
    let mut etcd = EtcdServer::start();
    let registry = registry_on(&etcd).await;
    let me = MachineId::new("m1").unwrap();
    let mut view = registry.view(Scope::Agent(me.clone())).await.unwrap();
    etcd.kill();
    let outage = tokio::time::timeout(Duration::from_secs(15), view.changed()).await;
    let outage = outage.expect("the view reports the outage instead of hanging");
    assert!(
        matches!(&outage, Err(e) if e.is_unavailable()),
        "{outage:?}"
    );
    etcd.restart();
    // Written while the view was not watching: the re-list must pick it up.
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = registry.set_metadata(&me, "zone", Some("b")).await {
        assert!(e.is_unavailable() && Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        match view.changed().await {
            Ok(Changed::Everything) => break,
            Ok(Changed::Keys(keys)) => panic!("a broken watch must re-list, got {keys:?}"),
            Err(e) => {
                assert!(e.is_unavailable() && Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(view.snapshot().metadata[&me]["zone"], "b");
    // And it watches again.
    registry.set_metadata(&me, "zone", Some("c")).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), view.changed()).await;
    assert!(matches!(next, Ok(Ok(Changed::Keys(_)))), "{next:?}");
    assert_eq!(view.snapshot().metadata[&me]["zone"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_re_lists_after_an_etcd_restart_and_follows_on() {
    let mut etcd = EtcdServer::start();
    let registry = registry_on(&etcd).await;
    let me = MachineId::new("m1").unwrap();
    let reflector = registry.reflect(Scope::All).await.unwrap();
    assert!(reflector.is_following());
    etcd.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    while reflector.is_following() {
        assert!(
            Instant::now() < deadline,
            "the reflector never saw the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = registry.set_metadata(&me, "zone", Some("b")).await {
        assert!(e.is_unavailable() && Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = registry.written();
    assert!(
        reflector.caught_up(written, Duration::from_secs(15)).await,
        "caught up with revision {written} after the restart (at {})",
        reflector.revision()
    );
    assert_eq!(reflector.read(|s| s.metadata[&me]["zone"].clone()), "b");
    registry.set_metadata(&me, "zone", Some("c")).await.unwrap();
    assert!(
        reflector
            .caught_up(registry.written(), Duration::from_secs(10))
            .await
    );
    assert_eq!(reflector.read(|s| s.metadata[&me]["zone"].clone()), "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_a_password() {
    let etcd = EtcdServer::start_secure("s3cret-pa55");
    let tls = etcd.tls().unwrap().clone();
    let secure = |password: &str| {
        let mut config = config(etcd.endpoint());
        config.ca_file = Some(tls.ca.clone());
        config.cert_file = Some(tls.client_cert.clone());
        config.key_file = Some(tls.client_key.clone());
        config.username = Some("root".into());
        config.password = Some(password.into());
        config
    };
    let store = EtcdStore::connect(&secure("s3cret-pa55")).await.unwrap();
    store
        .txn(vec![], vec![Op::put("jobs/a", "1")])
        .await
        .unwrap();
    let kv = store.get("jobs/a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"1");

    let wrong = EtcdStore::connect(&secure("wrong")).await.err().unwrap();
    assert!(
        wrong.to_string().contains("authentication failed"),
        "{wrong}"
    );
    assert!(
        !wrong.to_string().contains("wrong"),
        "the password is not echoed: {wrong}"
    );

    // Without our CA the server's certificate is not trusted.
    let mut untrusted = secure("s3cret-pa55");
    untrusted.ca_file = None;
    let started = Instant::now();
    let err = EtcdStore::connect(&untrusted).await.err().unwrap();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut half = secure("s3cret-pa55");
    half.key_file = None;
    let err = EtcdStore::connect(&half).await.err().unwrap();
    assert_eq!(
        err,
        RegistryError::Invalid("etcd TLS needs both a certificate file and a key file".into())
    );
}

#[test]
fn config_debug_never_shows_the_password() {
    let mut config = config("http://127.0.0.1:2379".into());
    config.username = Some("root".into());
    config.password = Some("s3cret-pa55".into());
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret-pa55"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
