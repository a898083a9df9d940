//! The reaper in a process of its own (it waits for every child of its process, so it must
//! not share one with other tests): exits reach their waiters, and a daemon that escaped to
//! the subreaper is reaped too, leaving no zombie.

use std::process::Command;
use std::time::{Duration, Instant};

use fleet_native::process::descendants;
use fleet_native::reaper::Reaper;
use fleet_native::status::Exit;

const CHILD_ENV: &str = "FLEET_AGENT_REAPER_CHILD";

#[tokio::test]
#[ignore = "runs as the child process of reaping_in_a_subreaper"]
// The reaper under test does the waiting, by PID.
#[allow(clippy::zombie_processes)]
async fn reaper_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let reaper = Reaper::start().unwrap();
    // sh leaves a background sleep behind: re-parented to us when sh exits.
    let sh = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3 & exit 3"])
        .spawn()
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), reaper.wait(sh.id()))
        .await
        .expect("an exit within 5 s")
        .unwrap();
    assert_eq!(exit, Exit::Code(3));
    let killed = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(5), reaper.wait(killed.id()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, Exit::Signal(15));
    // The orphaned sleep ends and is reaped: no child left, not even a zombie.
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !descendants(me).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            descendants(me)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("reaper-child-ok");
}

#[test]
fn reaping_in_a_subreaper() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["reaper_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("reaper-child-ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
