//! Files only their owner may read (mode 0600), never written through a symbolic link:
//! reports, mirror state and batch summaries name accounts, folders and servers' answers, and
//! they often live in shared directories (`/var/lib`, `/tmp`) where someone else could plant
//! a link to a file of ours.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Only the owner may read or write.
const MODE: u32 = 0o600;

/// Checks that [`write_atomically`] can write `path`, by creating and removing its temporary
/// file: before a run, so that an unwritable report fails the run at once.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let tmp = temp_path(path);
    create_new_private(&tmp)?;
    std::fs::remove_file(tmp)
}

/// Opens (creating it 0600 if missing) a file for appending, refusing a symbolic link in its
/// place: for a lock file.
pub fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Replaces `path` with `bytes` atomically: a reader sees the old file or the new one, never
/// half. The bytes go to a fresh 0600 temporary file beside it, which is synced and renamed
/// over `path`; a rename replaces a symbolic link at `path` instead of following it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, |file| file.write_all(bytes))
}

/// [`write_atomically`], with what `write` writes into the temporary file: a large file is
/// written as it is produced, never held in memory whole.
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = create_new_private(&tmp)?;
    write(&mut file).and_then(|()| file.sync_all())?;
    std::fs::rename(&tmp, path)?;
    // The rename itself must reach the disk too.
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates a file that did not exist (`O_EXCL`, which also refuses a symbolic link). A file
/// left there by a run that crashed (or a link someone planted) is removed first — unlinking
/// removes the link, not what it points to — and creation is tried once more.
fn create_new_private(path: &Path) -> io::Result<File> {
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            create()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_written_file_is_for_its_owner_only_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        let opened = dir.path().join("state.lock");
        open_private(&opened).unwrap();
        assert_eq!(mode(&opened), 0o600);
    }

    #[test]
    fn a_write_that_fails_half_way_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically_with(&path, |file| file.write_all(b"{\"whole\": true}")).unwrap();
        let failed = write_atomically_with(&path, |file| {
            file.write_all(b"{\"half")?;
            Err(io::Error::other("serialising failed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"whole\": true}");
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("report.json");
        // A link at the temporary file's name and one at the file's own name.
        symlink(&victim, temp_path(&path)).unwrap();
        symlink(&victim, &path).unwrap();
        write_atomically(&path, b"report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&path).unwrap(), b"report");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());

        let lock = dir.path().join("state.lock");
        symlink(&victim, &lock).unwrap();
        assert!(open_private(&lock).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
