//! The sandboxed systemd boots, runs a unit, leaves the host's /tmp alone and cleans up.

use fleet_testkit::SystemdSandbox;

#[test]
fn boots_runs_a_unit_and_leaves_the_host_alone() {
    let marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let sandbox = SystemdSandbox::boot(env!("CARGO_TARGET_TMPDIR").as_ref()).unwrap();
    let unit = sandbox.shared_dir().join("probe.service");
    std::fs::write(&unit, "[Service]\nExecStart=/bin/sleep 30\n").unwrap();
    sandbox
        .systemctl(&["link", unit.to_str().unwrap()])
        .unwrap();
    sandbox.systemctl(&["start", "probe.service"]).unwrap();
    let active = sandbox.systemctl(&["is-active", "probe.service"]).unwrap();
    assert_eq!(active, "active");
    let name = sandbox
        .dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let pid1 = sandbox.pid1();
    drop(sandbox);
    assert!(marker.path().exists(), "the host's /tmp was touched");
    assert!(!std::path::Path::new(&format!("/proc/{pid1}")).exists());
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let cgroup = std::path::Path::new(root).join(format!("test-systemd-{name}"));
        assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    }
}
