//! Replacing a small file atomically without wearing the filesystem.

use std::io;
use std::path::Path;

/// Replaces the contents of `path` with `bytes` atomically: a reader (or a crash) sees the old
/// contents or the new, never half. They are written to `temporary` and the two files are
/// exchanged, so the same two inodes serve every replacement of the file's life; a rename over
/// the old file would make the filesystem allocate one and free one each time, a cost that
/// grows on a busy ext4 (which skips recently freed inodes when it allocates).
pub fn replace_file(path: &Path, temporary: &Path, bytes: &[u8]) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    std::fs::write(temporary, bytes)?;
    match renameat2(
        AT_FDCWD,
        temporary,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_EXCHANGE,
    ) {
        Ok(()) => Ok(()),
        // No file yet (or a filesystem without exchange): an ordinary rename.
        Err(_) => std::fs::rename(temporary, path),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn contents_are_replaced_and_the_inodes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, temporary) = (dir.path().join("f"), dir.path().join("f.tmp"));
        replace_file(&path, &temporary, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        replace_file(&path, &temporary, b"two").unwrap();
        let inodes = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let (first, second) = (inodes(&path), inodes(&temporary));
        for contents in ["three", "four", "five"] {
            replace_file(&path, &temporary, contents.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
        }
        let mut now = [inodes(&path), inodes(&temporary)];
        now.sort();
        let mut then = [first, second];
        then.sort();
        assert_eq!(now, then, "the same two inodes serve every replacement");
    }
}
