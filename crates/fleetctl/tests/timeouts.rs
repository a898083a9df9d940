//! fleetctl never waits past its --request-timeout for an API that misbehaves: one that
//! trickles its answer a byte at a time, one that never answers, or one whose connection
//! attempts go unanswered (dropped, as by a full listen queue or a firewall).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A server on loopback that does `behave` with each connection, on a thread of its own.
fn server(behave: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4).flatten() {
            std::thread::spawn(move || behave(stream));
        }
    });
    format!("http://{address}")
}

/// fleetctl list-machines against `endpoint` with a 1 s request timeout: how long it took,
/// its exit code and stderr.
fn check(endpoint: &str) -> (Duration, i32, String) {
    let flag = format!("--endpoint={endpoint}");
    let started = Instant::now();
    let (code, _, err) = fleetctl::run_captured(
        &[&flag, "--request-timeout=1", "list-machines"],
        &[("FLEETCTL_API_TOKEN", "s3cret-token-0123456789")],
    );
    (started.elapsed(), code, err)
}

#[test]
fn a_trickling_or_silent_server_is_given_up_on_in_time() {
    let trickle = server(|mut stream| {
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        for byte in answer.iter().chain(std::iter::repeat(&b' ')).take(200) {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let silent = server(|stream| {
        std::thread::sleep(Duration::from_secs(30));
        drop(stream);
    });
    for (what, endpoint) in [("trickling", trickle), ("silent", silent)] {
        let (took, code, err) = check(&endpoint);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            took < Duration::from_secs(3),
            "{what}: gave up after {took:?}: {err}"
        );
        assert!(!err.is_empty(), "{what}: no reason given");
    }
}

/// A listener that never accepts, its queue filled, so that the kernel drops further connection
/// attempts (unanswered SYNs, as a firewall that drops them): its address, and what keeps it so.
fn dropping() -> (String, TcpListener, Vec<std::net::TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..1024 {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(_) => return (format!("http://{address}"), listener, queued),
        }
    }
    panic!("the listen queue of {address} never filled");
}

#[test]
fn an_endpoint_that_drops_connection_attempts_is_given_up_on_in_time() {
    let (endpoint, _listener, _queued) = dropping();
    let (took, code, err) = check(&endpoint);
    assert_eq!(code, 1, "{err}");
    assert!(
        took < Duration::from_secs(3),
        "gave up after {took:?}: {err}"
    );
    assert!(!err.is_empty(), "no reason given");
}
