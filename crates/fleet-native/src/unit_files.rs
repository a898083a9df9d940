//! The directory of unit files a unit manager loads from (both managers keep one: the native
//! supervisor reads it back after a restart, systemd reads it as a unit path).

use std::collections::BTreeMap;
use std::path::Path;

use fleet_unit::{UnitFile, UnitName};

/// The unit files an earlier run left in `dir` (the units directory), by name. Files whose
/// names are no unit names (a load's temporary file) are passed over; anything but a regular
/// file (a directory, a symlink, dangling or not: fleetd writes none) and files that cannot
/// be read or do not parse are skipped with a warning. Only a directory that cannot be read
/// is an error.
pub fn units_in(dir: &Path) -> std::io::Result<BTreeMap<UnitName, UnitFile>> {
    let mut units = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| UnitName::new(n).ok())
        else {
            continue;
        };
        let skip = |why: &str| tracing::warn!(path = %path.display(), why, "skipping a unit file");
        match entry.file_type() {
            Ok(kind) if kind.is_file() => {}
            Ok(_) => {
                skip("not a regular file");
                continue;
            }
            Err(e) => {
                skip(&e.to_string());
                continue;
            }
        }
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) => {
                skip(&e.to_string());
                continue;
            }
        };
        match UnitFile::parse(&text) {
            Ok(unit) => {
                units.insert(name, unit);
            }
            Err(e) => skip(&e.message()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_unit_files_that_parse_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("good.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
        std::fs::write(d.join("bad.service"), "[Service\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.join("dangling.service")).unwrap();
        std::os::unix::fs::symlink(d.join("good.service"), d.join("link.service")).unwrap();
        std::fs::create_dir(d.join("dir.service")).unwrap();
        std::fs::write(d.join(".load-1-2.tmp"), "partial").unwrap();
        let names: Vec<String> = units_in(d).unwrap().keys().map(|n| n.to_string()).collect();
        assert_eq!(names, ["good.service"]);
        let missing = units_in(&d.join("none")).unwrap_err().to_string();
        assert!(missing.contains("none"), "{missing}");
    }
}
