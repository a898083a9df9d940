//! HTTP/1.1 responses as the client reads them: the head, then a body delimited by
//! `Content-Length`, chunked encoding, or the end of the connection.

use std::io::{self, BufRead, Read};

/// A response's status line and the headers the client cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub length: Option<usize>,
    /// Every header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Whether the length of the body is known from the head (so the connection can carry
    /// another exchange after it).
    pub fn delimited(&self) -> bool {
        self.chunked || self.length.is_some() || self.status == 204 || self.status == 304
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn malformed(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed HTTP response: {why}"),
    )
}

/// Reads the status line and headers.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("no status"))?;
    let mut head = Head {
        status,
        chunked: false,
        length: None,
        headers: Vec::new(),
    };
    // A server sending headers without end is cut off.
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(malformed("headers cut short"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(head);
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
            }
            if name == "content-length" {
                head.length = value.parse().ok();
            }
            head.headers.push((name, value));
        }
    }
    Err(malformed("too many headers"))
}

/// The body after `head`, as a reader that ends where the body ends.
pub fn body<'a, R: BufRead + 'a>(reader: R, head: &Head) -> Box<dyn BufRead + 'a> {
    // These answers have no body, whatever their headers say (RFC 9112 §6.3).
    if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
        return Box::new(reader.take(0));
    }
    match (head.chunked, head.length) {
        (true, _) => Box::new(io::BufReader::new(Chunked {
            inner: reader,
            left: 0,
            done: false,
        })),
        (false, Some(length)) => Box::new(reader.take(length as u64)),
        (false, None) => Box::new(reader),
    }
}

/// Reads a whole response.
pub fn read_response(stream: impl Read) -> io::Result<(Head, Vec<u8>)> {
    let mut reader = io::BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let mut bytes = Vec::new();
    body(reader, &head).read_to_end(&mut bytes)?;
    if head.length.is_some_and(|length| bytes.len() < length) {
        return Err(malformed("body cut short"));
    }
    Ok((head, bytes))
}

/// A chunked body, de-chunked as it is read (so a streamed body is seen as it arrives).
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                return Err(malformed("chunked body cut short"));
            }
            let size = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..wanted])?;
        if n == 0 {
            return Err(malformed("chunk cut short"));
        }
        self.left -= n;
        if self.left == 0 {
            let mut end = [0u8; 2];
            self.inner.read_exact(&mut end)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(response: &[u8], expected: Result<(u16, &[u8]), &str>) {
        let got = read_response(response)
            .map(|(head, body)| (head.status, body))
            .map_err(|e| e.to_string());
        let expected = expected
            .map(|(status, body)| (status, body.to_vec()))
            .map_err(str::to_owned);
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(response));
    }

    #[test]
    fn responses() {
        check(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
            Ok((404, b"{}")),
        );
        check(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            Ok((200, b"abcde")),
        );
        check(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
            Ok((200, b"to the end")),
        );
        check(
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n",
            Ok((204, b"")),
        );
        check(b"garbage", Err("malformed HTTP response: no status"));
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n",
            Err("malformed HTTP response: headers cut short"),
        );
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            Err("malformed HTTP response: body cut short"),
        );
        check(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Err("malformed HTTP response: bad chunk size"),
        );
        check(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            Err("malformed HTTP response: chunk cut short"),
        );
    }

    #[test]
    fn a_chunked_body_is_read_line_by_line_as_it_comes() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nFleet-Machine-ID: m1\r\n\r\n4\r\nab\nc\r\n2\r\nd\n\r\n0\r\n\r\n";
        let mut reader = io::BufReader::new(response.as_slice());
        let head = read_head(&mut reader).unwrap();
        assert_eq!(head.header("fleet-machine-id"), Some("m1"));
        let lines: Vec<String> = body(reader, &head).lines().map(Result::unwrap).collect();
        assert_eq!(lines, ["ab", "cd"]);
    }
}
