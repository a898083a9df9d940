//! fleetctl's list commands against fleet 1.0's own output: every case in
//! testdata/golden/tables is replayed against a fake API serving the bodies the real fleetd
//! served, and stdout, stderr and the exit code must be byte-identical.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

const TABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/golden/tables");

/// Serves `bodies` ("GET /fleet/v1/x" → JSON) on a unix socket until the test ends.
fn serve(socket: PathBuf, bodies: serde_json::Value) {
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let mut words = request.split_whitespace();
            let method = words.next().unwrap_or("");
            let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
            let key = format!("{method} {path}");
            let (status, body) = match bodies.get(&key) {
                Some(body) => ("200 OK", body.to_string()),
                None => (
                    "404 Not Found",
                    r#"{"error":{"code":404,"message":""}}"#.to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

fn check(case: &str) {
    let dir = Path::new(TABLES);
    let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{case}.{ext}"))).unwrap();
    let command = read("cmd");
    let bodies: serde_json::Value = serde_json::from_str(&read("state.json")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let socket = temp.path().join("fleet.sock");
    serve(socket.clone(), bodies);
    let endpoint = format!("--endpoint=unix://{}", socket.display());
    let mut args = vec![endpoint.as_str()];
    args.extend(command.split_whitespace().skip(1));
    let (code, out, err) = fleetctl::run_captured(&args, &[]);
    assert_eq!(out, read("out"), "{case}: stdout of {command}");
    assert_eq!(err, read("err"), "{case}: stderr of {command}");
    assert_eq!(
        code.to_string(),
        read("rc").trim(),
        "{case}: exit code of {command}"
    );
}

#[test]
fn every_golden_table() {
    let mut cases: Vec<String> = std::fs::read_dir(TABLES)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".cmd")
                .map(str::to_owned)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the golden tables are there");
    for case in cases {
        check(&case);
    }
}
