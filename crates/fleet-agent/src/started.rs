//! The units this agent started and has not stopped since: its memory of what it did. It tells
//! a unit fleet started (stopped when it is no longer wanted launched) from one systemd started
//! as another unit's dependency (`Requires=`, `WantedBy=`: left alone), and keeps a unit that
//! failed or exited after its start from being started again on every reconcile (systemd's
//! `Restart=` decides that, as it did under fleet). Kept in a file with the boot ID, so a
//! restarted fleetd remembers and a rebooted machine forgets.

use std::collections::BTreeSet;
use std::path::PathBuf;

use fleet_unit::UnitName;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub struct Started {
    file: Option<PathBuf>,
    boot: String,
    units: BTreeSet<UnitName>,
    /// Changed since the file was last written.
    unsaved: bool,
}

impl Started {
    /// What an earlier fleetd of this boot recorded in `file` (nothing without one, or when
    /// the machine has rebooted since).
    pub fn open(file: Option<PathBuf>) -> Started {
        let boot = std::fs::read_to_string(BOOT_ID)
            .map(|b| b.trim().to_owned())
            .unwrap_or_default();
        let units = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|text| parse(&text, &boot))
            .unwrap_or_default();
        Started {
            file,
            boot,
            units,
            unsaved: false,
        }
    }

    pub fn contains(&self, name: &UnitName) -> bool {
        self.units.contains(name)
    }

    /// Remembered once [`Started::save`] runs (once per reconcile, not once per unit).
    pub fn insert(&mut self, name: &UnitName) {
        self.unsaved |= self.units.insert(name.clone());
    }

    pub fn remove(&mut self, name: &UnitName) {
        self.unsaved |= self.units.remove(name);
    }

    /// Writes the list if it changed, whole under another name first, so a crash leaves the
    /// old list or the new.
    pub fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !std::mem::take(&mut self.unsaved) {
            return;
        }
        let text = format(&self.boot, &self.units);
        let written =
            fleet_native::replace_file(file, &file.with_extension("tmp"), text.as_bytes());
        if let Err(error) = written {
            self.unsaved = true;
            tracing::warn!(%error, path = %file.display(), "agent: cannot record the units it started");
        }
    }
}

/// `boot <id>`, then a unit name per line.
fn format(boot: &str, units: &BTreeSet<UnitName>) -> String {
    let mut text = format!("boot {boot}\n");
    for name in units {
        text.push_str(name.as_str());
        text.push('\n');
    }
    text
}

/// The units of `text` if it was written in boot `boot`; lines that are no unit names are
/// passed over.
fn parse(text: &str, boot: &str) -> BTreeSet<UnitName> {
    let mut lines = text.lines();
    if lines.next() != Some(&format!("boot {boot}")) {
        return BTreeSet::new();
    }
    lines.filter_map(|line| UnitName::new(line).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> BTreeSet<UnitName> {
        names.iter().map(|n| UnitName::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_list_lives_as_long_as_the_boot() {
        let written = format("b1", &names(&["a.service", "web@1.service"]));
        assert_eq!(written, "boot b1\na.service\nweb@1.service\n");
        let check = |text: &str, boot: &str, expected: &[&str]| {
            assert_eq!(
                parse(text, boot),
                names(expected),
                "{text:?} in boot {boot}"
            );
        };
        check(&written, "b1", &["a.service", "web@1.service"]);
        check(&written, "b2", &[]);
        check("", "b1", &[]);
        check("boot b1\n../evil\na.service\n", "b1", &["a.service"]);
    }

    #[test]
    fn a_restarted_agent_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("started");
        let mut started = Started::open(Some(file.clone()));
        let name = UnitName::new("a.service").unwrap();
        started.insert(&name);
        assert!(
            !Started::open(Some(file.clone())).contains(&name),
            "saved before save()"
        );
        started.save();
        assert!(Started::open(Some(file.clone())).contains(&name));
        started.remove(&name);
        started.save();
        assert!(!Started::open(Some(file)).contains(&name));
    }
}
