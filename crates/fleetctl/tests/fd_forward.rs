//! `fleetctl fd-forward` (the far end of `--tunnel`) as a real process between a pipe and a
//! unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

#[test]
fn forwards_both_ways_until_the_server_closes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = String::new();
        stream.read_to_string(&mut request).unwrap(); // until fd-forward closes its write side
        stream
            .write_all(format!("echo: {request}").as_bytes())
            .unwrap();
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .arg("fd-forward")
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    server.join().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "echo: GET / HTTP/1.0\r\n\r\n"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["fd-forward", "/no/such.sock"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).starts_with("Unable to connect to /no/such.sock")
    );
}
