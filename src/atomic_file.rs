//! Crash-safe replacement of a small file: after a crash or power loss the path holds either the
//! old content or the new content, never a mix. A crash can leave `<path>.tmp` behind; readers
//! that care (the checkpoint store) decide what to do with it.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary file `write_atomic` writes before renaming: `<path>.tmp`, in the same directory
/// so that the rename cannot cross a file system.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Replaces the content of `path` with `bytes`: write `<path>.tmp`, fsync it, rename it over
/// `path`, fsync the directory (without the last step the rename itself may not survive a power
/// loss).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    if let Err(e) = write_and_sync(&tmp, bytes) {
        // A partial tmp is harmless to readers, but leaving it would waste space after ENOSPC.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    sync_parent_dir(path)
}

/// Makes a rename or creation of `path` durable by fsyncing its directory.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn write_and_sync(tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_path_appends_suffix_in_same_dir() {
        assert_eq!(
            tmp_path(Path::new("/var/lib/logagent/checkpoints.json")),
            PathBuf::from("/var/lib/logagent/checkpoints.json.tmp")
        );
        assert_eq!(tmp_path(Path::new("state")), PathBuf::from("state.tmp"));
    }

    #[test]
    fn creates_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn replaces_content_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        fs::write(&path, b"a much longer old content than the new one").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!tmp_path(&path).exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("f.json")]);
    }

    #[test]
    fn overwrites_stale_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        fs::write(tmp_path(&path), b"stale bytes from a crashed write, longer").unwrap();
        write_atomic(&path, b"fresh").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"fresh");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn missing_dir_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("f.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
    }
}
