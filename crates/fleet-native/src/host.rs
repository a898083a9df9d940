//! This machine's names as systemd's specifiers see them (`%H`/`%l`, `%b`): read from the
//! kernel each time, since the hostname can change while fleetd runs.

/// The kernel's hostname (`%H`; `%l` is its part before the first dot).
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

/// The boot ID without dashes, as systemd prints it (`%b`).
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").replace('-', "")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
