//! `fleetctl fd-forward SOCKET`: joins this process's stdin and stdout to a unix socket, so an
//! `ssh host fleetctl fd-forward /var/run/fleet.sock` is a pipe to that host's API (`--tunnel`).

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use crate::Io;

pub fn run(args: &[String], io: &mut Io<'_>) -> io::Result<i32> {
    let [socket] = args else {
        writeln!(
            io.err,
            "Provide a single argument: the unix socket to forward to"
        )?;
        return Ok(1);
    };
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => {
            writeln!(io.err, "Unable to connect to {socket}: {e}")?;
            return Ok(1);
        }
    };
    let mut to_socket = stream.try_clone()?;
    // stdin → socket on its own thread; when stdin ends, the socket's write side is closed so
    // the server sees the end of the request stream.
    let forward = std::thread::spawn(move || {
        let copied = io::copy(&mut io::stdin().lock(), &mut to_socket);
        let _ = to_socket.shutdown(Shutdown::Write);
        copied
    });
    let mut from_socket = stream;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = from_socket.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        io.out.write_all(&buffer[..n])?;
        io.out.flush()?;
    }
    // The server is done; stdin may still be open (an interactive tunnel): do not wait for it.
    drop(forward);
    Ok(0)
}
