//! Files only the server's own user can read: the data directory (0700) and
//! the store file (0600), whatever the process umask.
//!
//! The embedded store holds each user's auth-md5 digest, B64(MD5(user:password)),
//! which is all a client needs to log in as her; another local user must not
//! read it. New files and directories are created with an explicit mode, and
//! ones left by an older version (created under umask 022: 0755 / 0644) are
//! tightened on open, with a log line.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the store file (and the admin socket).
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700, or tightens an
/// existing one that group or others may enter to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a directory"));
    }
    tighten(dir, meta.permissions().mode(), DIR_MODE, |p| std::fs::set_permissions(dir, p))
}

/// Opens `path` for reading and writing, creating it (mode 0600) if missing;
/// an existing file that group or others may access is set to 0600 (through
/// the open descriptor, so it is the file opened that changes).
pub fn private_file(path: &Path) -> io::Result<File> {
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(FILE_MODE).open(path)?;
    let mode = file.metadata()?.permissions().mode();
    tighten(path, mode, FILE_MODE, |p| file.set_permissions(p))?;
    Ok(file)
}

/// Sets `want` when `mode` grants anything to group or others.
fn tighten(
    path: &Path,
    mode: u32,
    want: u32,
    set: impl FnOnce(Permissions) -> io::Result<()>,
) -> io::Result<()> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    set(Permissions::from_mode(want))?;
    tracing::warn!(
        path = %path.display(),
        "permissions {:o} -> {want:o}: group and others lose access (created by an older version or under a loose umask)",
        mode & 0o7777
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_ones_are_private_and_loose_ones_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        drop(private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);

        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, b"kept").unwrap();
        private_dir(&dir).unwrap();
        drop(private_file(&file).unwrap());
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert_eq!(std::fs::read(&file).unwrap(), b"kept", "opening never truncates");

        // Stricter than ours is left alone.
        std::fs::set_permissions(&file, Permissions::from_mode(0o400)).unwrap();
        assert!(private_file(&file).is_err() || mode(&file) == 0o400);
        std::fs::set_permissions(&file, Permissions::from_mode(0o600)).unwrap();

        let not_dir = tmp.path().join("plain");
        std::fs::write(&not_dir, b"").unwrap();
        assert!(private_dir(&not_dir).is_err());
    }
}
