//! systemd's Manager interface on D-Bus, as far as fleet uses it (every method exists in
//! systemd 252), and the names of unit objects.

use zbus::OwnedObjectPath;

/// A row of `ListUnitsByNames`: name, description, load, active and sub state, followed unit,
/// object path, queued job ID, job type, job path.
pub type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// A change `LinkUnitFiles` and friends report: type, file name, destination.
pub type Change = (String, String, String);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn link_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<Change>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<Change>)>;
    fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Vec<Change>>;
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<UnitRow>>;
    /// Every unit systemd holds an object for (loaded, or a stub), without loading any.
    fn list_units(&self) -> zbus::Result<Vec<UnitRow>>;
    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
}

/// Where systemd puts unit objects.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The unit name of an object path (`.../unit/hello_2eservice` → `hello.service`), undoing
/// systemd's escaping: every byte but `[A-Za-z0-9]` is `_` and two lower-case hex digits.
pub fn unit_name_of_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = label.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            name.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            name.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_name_units() {
        for (path, expected) in [
            (
                "/org/freedesktop/systemd1/unit/hello_2eservice",
                Some("hello.service"),
            ),
            (
                "/org/freedesktop/systemd1/unit/a_40b_2dc_2eservice",
                Some("a@b-c.service"),
            ),
            ("/org/freedesktop/systemd1/unit/broken_2", None),
            ("/org/freedesktop/systemd1/job/1", None),
        ] {
            assert_eq!(unit_name_of_path(path).as_deref(), expected, "{path}");
        }
    }
}
