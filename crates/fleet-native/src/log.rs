//! A unit's output log: one line per record, `<RFC 3339 UTC time> <stream> <text>`, in a file
//! named after the unit in the log directory, rotated into its `rotated/` subdirectory when it
//! passes its size bound, so a chatty unit uses at most twice the bound on disk. `tail` reads
//! the last lines across both files, as `fleetctl journal` needs.
//!
//! The log directory is on persistent storage (the data directory), apart from the run
//! directories: those hold a running shim's state and belong in the runtime directory, which
//! is memory on most machines, where a chatty unit's log should not be.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use fleet_unit::timestamp::rfc3339;

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The supervisor's own notes about the unit (started, exited with status 1, ...).
    Supervisor,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Supervisor => "fleetd",
        }
    }
}

/// The two files of a unit's log. A unit name is one path component and may be 255 bytes
/// long, so the rotated file keeps the name and lives in a subdirectory (`rotated` is no unit
/// name: every unit name has a type suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFiles {
    pub current: PathBuf,
    pub rotated: PathBuf,
}

impl LogFiles {
    pub fn of(log_dir: &Path, unit: &str) -> LogFiles {
        LogFiles {
            current: log_dir.join(unit),
            rotated: log_dir.join(ROTATED_DIR).join(unit),
        }
    }
}

const ROTATED_DIR: &str = "rotated";

pub struct UnitLog {
    files: LogFiles,
    file: File,
    written: u64,
    max_bytes: u64,
}

impl UnitLog {
    /// Opens (appending to) the log, rotating after `max_bytes`.
    pub fn open(files: LogFiles, max_bytes: u64) -> io::Result<UnitLog> {
        let open = || {
            // A unit's output may hold its secrets: readable by its owner (root) alone.
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&files.current)
        };
        // The log directory is the supervisor's to make; made here when it is not there.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = files.current.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                open()?
            }
            opened => opened?,
        };
        let written = file.metadata()?.len();
        Ok(UnitLog {
            files,
            file,
            written,
            max_bytes: max_bytes.max(1024),
        })
    }

    /// Appends one record; `text` may hold several lines, each becomes a record. Control
    /// characters other than tab are shown as `\xNN`, so a record is always one line.
    pub fn append(&mut self, stream: Stream, text: &str, at: SystemTime) -> io::Result<()> {
        let stamp = rfc3339(at);
        let mut records = String::new();
        for line in text.split('\n') {
            records.push_str(&stamp);
            records.push(' ');
            records.push_str(stream.as_str());
            records.push(' ');
            for c in line.chars() {
                match c {
                    '\t' => records.push(c),
                    c if c.is_control() => records.push_str(&format!("\\x{:02x}", c as u32)),
                    c => records.push(c),
                }
            }
            records.push('\n');
        }
        if self.written + records.len() as u64 > self.max_bytes && self.written > 0 {
            self.rotate()?;
        }
        self.file.write_all(records.as_bytes())?;
        self.written += records.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        // Made when first needed: most units never fill their log.
        if let Some(dir) = self.files.rotated.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(&self.files.current, &self.files.rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.files.current)?;
        self.written = 0;
        Ok(())
    }
}

/// The last `lines` records of the log (oldest first); fewer if there are fewer.
pub fn tail(files: &LogFiles, lines: usize) -> io::Result<Vec<String>> {
    let mut newest = last_lines(&files.current, lines)?;
    if newest.len() < lines {
        let mut older = last_lines(&files.rotated, lines - newest.len())?;
        older.append(&mut newest);
        newest = older;
    }
    Ok(newest)
}

/// The last `n` lines of a file (none if it does not exist), reading backwards in blocks so a
/// large log costs what is returned, not its size.
fn last_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    let mut start = len;
    let mut newlines = 0;
    let mut block = vec![0u8; 8192];
    // Find the offset after the (n+1)-th newline from the end (the last byte is a newline).
    'search: while start > 0 {
        let size = block.len().min(start as usize);
        start -= size as u64;
        file.seek(SeekFrom::Start(start))?;
        std::io::Read::read_exact(&mut file, &mut block[..size])?;
        for i in (0..size).rev() {
            if block[i] == b'\n' && start + (i as u64) + 1 != len {
                newlines += 1;
                if newlines == n {
                    start += i as u64 + 1;
                    break 'search;
                }
            }
        }
    }
    file.seek(SeekFrom::Start(start))?;
    // Up to the length measured above: the unit may be appending while we read.
    BufReader::new(std::io::Read::take(file, len - start))
        .lines()
        .map(|line| line.map(|l| l.to_owned()))
        .collect()
}

/// Follows the log from its end at the time of the call (not of the first poll), like
/// `tail -f`: the future sends every record appended after that, across rotations, polling
/// every `poll`, until the receiver is dropped. (Records of a file rotated out twice within one
/// poll are missed: the bound is the price.)
pub fn follow(
    files: LogFiles,
    records: tokio::sync::mpsc::Sender<String>,
    poll: std::time::Duration,
) -> impl std::future::Future<Output = ()> + Send {
    use std::os::unix::fs::MetadataExt;
    let LogFiles {
        current: path,
        rotated,
    } = files;
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.ino(), m.len()));
    let start = identity(&path).unwrap_or((0, 0));
    async move {
        let (mut inode, mut offset) = start;
        let mut partial = String::new();
        loop {
            if records.is_closed() {
                return;
            }
            if let Some((now_inode, len)) = identity(&path) {
                if now_inode != inode {
                    // Rotated: the rest of the old file is in the rotated one, then the new
                    // file from 0.
                    if identity(&rotated).is_some_and(|(i, _)| i == inode) {
                        read_from(&rotated, offset, &mut partial, &records).await;
                    }
                    (inode, offset) = (now_inode, 0);
                }
                if len > offset {
                    offset = read_from(&path, offset, &mut partial, &records).await;
                } else if len < offset {
                    offset = 0;
                }
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// Sends the complete lines of `path` after `offset`; returns the new offset. An incomplete
/// last line waits in `partial` for the rest.
async fn read_from(
    path: &Path,
    offset: u64,
    partial: &mut String,
    records: &tokio::sync::mpsc::Sender<String>,
) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return offset;
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err()
        || std::io::Read::read_to_end(&mut file, &mut bytes).is_err()
    {
        return offset;
    }
    partial.push_str(&String::from_utf8_lossy(&bytes));
    while let Some(end) = partial.find('\n') {
        let line: String = partial.drain(..=end).collect();
        if records
            .send(line.trim_end_matches('\n').to_owned())
            .await
            .is_err()
        {
            break;
        }
    }
    offset + bytes.len() as u64
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[tokio::test]
    async fn follow_sees_new_records_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::of(dir.path(), "a.service");
        let mut log = UnitLog::open(files.clone(), 1024).unwrap();
        log.append(Stream::Stdout, "before", at(0)).unwrap();
        let (sender, mut records) = tokio::sync::mpsc::channel(256);
        let follower = tokio::spawn(follow(files.clone(), sender, Duration::from_millis(5)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..40 {
            log.append(Stream::Stdout, &format!("line {i}"), at(0))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let record = tokio::time::timeout(Duration::from_secs(5), records.recv()).await;
            seen.push(record.expect("a record within 5 s").unwrap());
        }
        let expected: Vec<String> = (0..40)
            .map(|i| format!("1970-01-01T00:00:00.000000Z stdout line {i}"))
            .collect();
        assert_eq!(
            seen, expected,
            "every record once, in order, none from before"
        );
        assert!(files.rotated.exists(), "the log rotated meanwhile");
        drop(records);
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn records_rotate_and_tail_reads_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::of(dir.path(), "a.service");
        let mut log = UnitLog::open(files.clone(), 1024).unwrap();
        for i in 0..100 {
            log.append(Stream::Stdout, &format!("line {i}"), at(0))
                .unwrap();
        }
        log.append(Stream::Stderr, "two\nlines\u{1b}[0m", at(0))
            .unwrap();
        let total: u64 = [&files.current, &files.rotated]
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(total <= 2048, "bounded: {total} bytes");
        let last = tail(&files, 3).unwrap();
        assert_eq!(
            last,
            vec![
                "1970-01-01T00:00:00.000000Z stdout line 99",
                "1970-01-01T00:00:00.000000Z stderr two",
                "1970-01-01T00:00:00.000000Z stderr lines\\x1b[0m",
            ]
        );
        // More than the newest file holds: the rest comes from the rotated one, in order.
        let many = tail(&files, 30).unwrap();
        assert_eq!(many.len(), 30);
        assert!(many[0].ends_with("line 72"), "{}", many[0]);
        assert_eq!(tail(&files, 0).unwrap(), Vec::<String>::new());
        let empty = tempfile::tempdir().unwrap();
        let none = LogFiles::of(empty.path(), "a.service");
        assert_eq!(tail(&none, 5).unwrap(), Vec::<String>::new());
    }
}
