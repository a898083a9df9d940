//! Process primitives of the supervisor: finding an executable as systemd does, resolving
//! `User=`/`Group=`, spawning a command in its own process group, and finding every
//! descendant of a process (a unit's "control group" on machines without cgroups).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Group, Pid, Uid, User};

/// systemd's search path for executables given without a directory.
const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The file to execute for `path`: itself when absolute, else the first match in systemd's
/// search path. The error says what is wrong in systemd's words.
pub fn resolve_executable(path: &str) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = if path.starts_with('/') {
        vec![PathBuf::from(path)]
    } else if path.contains('/') {
        return Err(format!(
            "Neither a valid executable name nor an absolute path: {path}"
        ));
    } else {
        SEARCH_PATH
            .iter()
            .map(|dir| Path::new(dir).join(path))
            .collect()
    };
    let mut last = format!("Failed to locate executable {path}: No such file or directory");
    for candidate in candidates {
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_dir() => {
                last = format!("Failed to execute {}: Is a directory", candidate.display());
            }
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                last = format!(
                    "Failed to execute {}: Permission denied",
                    candidate.display()
                );
            }
            Ok(_) => return Ok(candidate),
            Err(_) => {}
        }
    }
    Err(last)
}

/// The identity a unit runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Resolves `User=` and `Group=` (names or numbers). No user: the supervisor's own identity.
pub fn identity(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
    let mut identity = match user {
        None => {
            let uid = Uid::current();
            let found = User::from_uid(uid).ok().flatten();
            Identity {
                user: found
                    .as_ref()
                    .map_or_else(|| uid.to_string(), |u| u.name.clone()),
                uid: uid.as_raw(),
                gid: Gid::current().as_raw(),
                home: found
                    .as_ref()
                    .map_or_else(|| "/".into(), |u| u.dir.display().to_string()),
                shell: found
                    .as_ref()
                    .map_or_else(|| "/bin/sh".into(), |u| u.shell.display().to_string()),
            }
        }
        Some(name) => {
            let found = match name.parse::<u32>() {
                Ok(uid) => User::from_uid(Uid::from_raw(uid)),
                Err(_) => User::from_name(name),
            };
            let found = found
                .map_err(|e| format!("Failed to determine user credentials for {name}: {e}"))?
                .ok_or_else(|| {
                    format!("Failed to determine user credentials: No such user {name:?}")
                })?;
            Identity {
                user: found.name,
                uid: found.uid.as_raw(),
                gid: found.gid.as_raw(),
                home: found.dir.display().to_string(),
                shell: found.shell.display().to_string(),
            }
        }
    };
    if let Some(name) = group {
        let found = match name.parse::<u32>() {
            Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
            Err(_) => Group::from_name(name),
        };
        let found = found
            .map_err(|e| format!("Failed to determine group credentials for {name}: {e}"))?
            .ok_or_else(|| {
                format!("Failed to determine group credentials: No such group {name:?}")
            })?;
        identity.gid = found.gid.as_raw();
    }
    Ok(identity)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: PathBuf,
    /// Switch to this identity (only when running as root and it differs).
    pub identity: Option<Identity>,
}

/// Starts `launch` in a new process group of its own, with the given environment only and
/// stdout/stderr piped. When the user changes, the process gets that user's groups (as
/// `initgroups` gives them), its group, then its user: none of the supervisor's groups stay.
pub fn spawn(launch: &Launch) -> std::io::Result<Child> {
    let mut command = Command::new(&launch.program);
    if let Some((argv0, args)) = launch.argv.split_first() {
        command.arg0(argv0).args(args);
    }
    command
        .env_clear()
        .envs(&launch.environment)
        .current_dir(&launch.working_directory)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(identity) = &launch.identity {
        if Uid::current().is_root() {
            switch_user(&mut command, identity)?;
        }
    }
    command.spawn()
}

/// Makes the child take `identity`'s groups, group and user before it executes. std's own
/// `uid()`/`gid()` would drop every supplementary group, and a `pre_exec` setgroups after them
/// is too late (no longer root), so all three happen here, in that order.
#[allow(unsafe_code)]
fn switch_user(command: &mut Command, identity: &Identity) -> std::io::Result<()> {
    let user = std::ffi::CString::new(identity.user.as_str()).map_err(|_| {
        std::io::Error::other(format!("user name {:?} has a NUL byte", identity.user))
    })?;
    let gid = Gid::from_raw(identity.gid);
    let uid = Uid::from_raw(identity.uid);
    // Read /etc/group now: between fork and exec only async-signal-safe calls may run.
    let groups = nix::unistd::getgrouplist(&user, gid).map_err(std::io::Error::from)?;
    // SAFETY: the closure runs in the forked child before exec and makes only the raw
    // setgroups/setgid/setuid system calls on data prepared above: no allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
    Ok(())
}

/// Every live descendant of `root` (not `root` itself), read from /proc: through each
/// thread's `children` list, which costs what the unit has, not what the machine runs (a
/// shim asks at every stop, and a machine may run thousands of units); by a scan of every
/// process where the kernel has no such lists.
pub fn descendants(root: u32) -> Vec<u32> {
    match children_of(root) {
        Some(first) => {
            let mut found = Vec::new();
            let mut queue = first;
            while let Some(pid) = queue.pop() {
                found.push(pid);
                queue.extend(children_of(pid).unwrap_or_default());
            }
            found
        }
        None if std::path::Path::new(&format!("/proc/{root}")).exists() => scan_descendants(root),
        None => Vec::new(),
    }
}

/// The children of `pid`, from `/proc/<pid>/task/*/children`; `None` when unreadable.
fn children_of(pid: u32) -> Option<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    let mut readable = false;
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        readable = true;
        children.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    readable.then_some(children)
}

/// Every live descendant of `root`, from the parent of every process on the machine.
fn scan_descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            queue.push(child);
        }
    }
    found
}

/// Every live process of session `session` but its leader (not a zombie), by a scan of
/// every process: for the processes a dead shim left, whose parents are gone.
pub fn session_members(session: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != session)
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let fields: Vec<&str> = after_name.split(' ').collect();
            fields.first() != Some(&"Z") && fields.get(3) == Some(&session.to_string().as_str())
        })
        .collect()
}

/// The parent PID from /proc/<pid>/stat (after the command name, which may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(1)?.parse().ok()
}

/// Sends `signal` to each of `pids`; ones already gone are skipped.
pub fn signal_each(pids: &[u32], signal: Signal) {
    for &pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let shown = |p: &Path| p.display().to_string();
        let rows: Vec<(String, Result<String, String>)> = vec![
            ("/bin/sh".into(), Ok("/bin/sh".into())),
            ("sh".into(), Ok("/usr/bin/sh".into())),
            (
                "/no/such".into(),
                Err("Failed to locate executable /no/such: No such file or directory".into()),
            ),
            (
                shown(&plain),
                Err(format!(
                    "Failed to execute {}: Permission denied",
                    shown(&plain)
                )),
            ),
            (
                shown(dir.path()),
                Err(format!(
                    "Failed to execute {}: Is a directory",
                    shown(dir.path())
                )),
            ),
            (
                "bin/sh".into(),
                Err("Neither a valid executable name nor an absolute path: bin/sh".into()),
            ),
        ];
        for (path, expected) in rows {
            let resolved = resolve_executable(&path).map(|p| shown(&p));
            assert_eq!(resolved, expected, "{path}");
        }
    }

    #[test]
    fn identities() {
        let root = identity(Some("root"), None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(identity(Some("0"), Some("0")).unwrap().user, "root");
        let err = identity(Some("no-such-user-xyz"), None).unwrap_err();
        assert_eq!(
            err,
            "Failed to determine user credentials: No such user \"no-such-user-xyz\""
        );
        let err = identity(None, Some("no-such-group-xyz")).unwrap_err();
        assert_eq!(
            err,
            "Failed to determine group credentials: No such group \"no-such-group-xyz\""
        );
    }

    /// Runs `id -G` as `user` through `spawn`; its groups.
    fn groups_of(user: &str) -> String {
        let launch = Launch {
            program: "/usr/bin/id".into(),
            argv: vec!["id".into(), "-G".into()],
            environment: BTreeMap::new(),
            working_directory: "/".into(),
            identity: Some(identity(Some(user), None).unwrap()),
        };
        let output = spawn(&launch).unwrap().wait_with_output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn a_switched_user_gets_its_own_groups_only() {
        if !Uid::current().is_root() {
            return; // switching users needs root; CI runs as root
        }
        assert_eq!(
            groups_of("nobody"),
            "65534",
            "no group of the supervisor stays"
        );
        // A user with a supplementary group, where the machine has one (postgres: ssl-cert).
        if let (Ok(Some(user)), Ok(Some(group))) =
            (User::from_name("postgres"), Group::from_name("ssl-cert"))
        {
            if group.mem.contains(&user.name) {
                let groups = groups_of("postgres");
                assert!(
                    groups.split(' ').any(|g| g == group.gid.to_string()),
                    "{groups}"
                );
            }
        }
    }

    #[test]
    fn descendants_include_grandchildren() {
        // sh starts a background sleep (a grandchild of ours) and waits.
        let mut child = Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let root = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = Vec::new();
        while found.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            found = descendants(root);
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(scan_descendants(root), found, "both ways find the same");
        signal_each(&found, Signal::SIGKILL);
        child.wait().unwrap();
        assert!(descendants(root).is_empty());
    }
}
