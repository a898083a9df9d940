//! The client's request timeout bounds the connect too: a listener whose accept queue is full
//! (on loopback: it answers no SYN) holds a plain connect for the kernel's retries, minutes.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fleet_wire::client::{Client, Endpoint};

#[test]
fn a_connect_that_gets_no_answer_ends_at_the_request_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    // Fill the accept queue (nothing is accepted) until a connect gets no answer.
    let mut held = Vec::new();
    let full =
        (0..4096).any(
            |_| match TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                Ok(stream) => {
                    held.push(stream);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(
        full,
        "the accept queue never filled ({} connections)",
        held.len()
    );
    let endpoint = Endpoint::parse(&format!("http://{address}")).unwrap();
    let client = Client::new(endpoint, Duration::from_millis(500));
    let began = Instant::now();
    let error = client.machines().unwrap_err().to_string();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "the connect took {took:?}");
    assert!(error.contains("i/o timeout"), "{error}");
}
