//! The directory of unit files a unit manager loads from (both managers keep one: the native
//! supervisor reads it back after a restart, systemd reads it as a unit path).

use std::collections::BTreeMap;
use std::path::Path;

use fleet_unit::{UnitFile, UnitName};

/// The unit files an earlier run left in `dir` (the units directory), by name. Files whose
/// names are no unit names (a load's temporary file) are passed over; files that do not parse
/// are skipped with a warning.
pub fn units_in(dir: &Path) -> std::io::Result<BTreeMap<UnitName, UnitFile>> {
    let mut units = BTreeMap::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| UnitName::new(n).ok())
        else {
            continue;
        };
        let text = std::fs::read(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        match UnitFile::parse(&text) {
            Ok(unit) => {
                units.insert(name, unit);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e.message(), "skipping an unreadable unit file")
            }
        }
    }
    Ok(units)
}

/// Writes `unit` to `<dir>/<name>` whole: under a temporary name of fixed length first (so a
/// reader never sees half a file, and a name of any valid length or shape, `..service`
/// included, has a temporary file too), then renamed over. A valid `UnitName` is one path
/// component, never `.` or `..`, so the file stays in `dir`.
pub fn write_unit_file(dir: &Path, name: &UnitName, unit: &UnitFile) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".load-{}-{serial}.tmp", std::process::id()));
    let path = dir.join(name.as_str());
    let written = std::fs::write(&temporary, unit.serialize())
        .and_then(|()| std::fs::rename(&temporary, &path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
    })
}
