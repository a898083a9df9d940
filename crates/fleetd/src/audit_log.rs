//! The audit log: every change made (or attempted) through the API and every request refused
//! for authentication or role, one JSON object per line, appended to a file only root reads.
//! The file is opened for each record, so that it can be rotated (moved away) at any time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use fleet_api::server::{AuditRecord, AuditSink};
use serde::Serialize;

pub(crate) struct AuditLog {
    path: PathBuf,
    /// When a failed write was last said (a full disk fails every record).
    complained: Mutex<Option<Instant>>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

impl AuditLog {
    pub(crate) fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            complained: Mutex::new(None),
        }
    }

    fn append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let line = Line {
            time: fleet_native::log::rfc3339(SystemTime::now()),
            record,
        };
        let mut text = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        text.push(b'\n');
        // One write of the whole line, with O_APPEND: lines of concurrent requests never mix.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?
            .write_all(&text)
    }
}

impl AuditSink for AuditLog {
    fn record(&self, record: &AuditRecord) {
        if let Err(error) = self.append(record) {
            let mut complained = self.complained.lock().unwrap_or_else(|e| e.into_inner());
            if complained.is_none_or(|at| at.elapsed().as_secs() >= 60) {
                tracing::error!(path = %self.path.display(), %error, "audit: cannot record a change");
                *complained = Some(Instant::now());
            }
        }
    }
}
