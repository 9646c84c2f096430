//! Files closed by `tail.close_inactive_ms`, and what each looked like then: the discoverer leaves
//! such a file closed while its path shows the same file, size and modification time, and claims
//! it again once any of them changes. The claim checks identity as at start-up: the same file
//! resumes at its acknowledged offset, another file under the path is read from 0.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::state::identity::FileKey;

/// A file as its path showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub key: FileKey,
    pub size: u64,
    pub mtime: Option<SystemTime>,
}

impl Seen {
    pub fn of(meta: &Metadata) -> Seen {
        Seen {
            key: FileKey::of(meta),
            size: meta.len(),
            mtime: meta.modified().ok(),
        }
    }
}

/// The closed files of one entry, by path.
#[derive(Default)]
pub struct InactiveFiles {
    closed: Mutex<HashMap<PathBuf, Seen>>,
    /// A closed file's path now names another file: the closed one was renamed (or deleted) while
    /// closed, and what was written to it before that is to be found and shipped.
    moved: std::sync::atomic::AtomicBool,
}

impl InactiveFiles {
    /// The tailer of `path` closed it; `seen` is the file as read: its size is what was read, so
    /// bytes written after the last read show as a change.
    pub fn closed(&self, path: &Path, seen: Seen) {
        self.lock().insert(path.to_path_buf(), seen);
    }

    /// Whether `path` names a file closed for inactivity that has not changed since (leave it
    /// closed). A changed one is forgotten: it is to be claimed again.
    pub fn still_idle(&self, path: &Path, now: Seen) -> bool {
        let mut closed = self.lock();
        match closed.get(path) {
            Some(was) if *was == now => true,
            Some(was) => {
                if was.key != now.key {
                    self.moved.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                closed.remove(path);
                false
            }
            None => false,
        }
    }

    /// Whether a closed file was found replaced at its path since the last call.
    pub fn take_moved(&self) -> bool {
        self.moved.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets paths the entry no longer matches: their files were renamed away or deleted while
    /// closed (which counts as moved).
    pub fn retain(&self, keep: impl Fn(&Path) -> bool) {
        let mut closed = self.lock();
        let before = closed.len();
        closed.retain(|p, _| keep(p));
        if closed.len() < before {
            self.moved.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Seen>> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seen(ino: u64, size: u64, mtime_s: u64) -> Seen {
        Seen {
            key: FileKey { dev: 1, ino },
            size,
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_s)),
        }
    }

    #[test]
    fn a_closed_file_stays_closed_until_its_size_mtime_or_identity_changes() {
        let files = InactiveFiles::default();
        let p = Path::new("/l/a.log");
        assert!(!files.still_idle(p, seen(7, 10, 100)), "never closed");
        files.closed(p, seen(7, 10, 100));
        assert!(files.still_idle(p, seen(7, 10, 100)));
        assert!(
            files.still_idle(p, seen(7, 10, 100)),
            "asking twice changes nothing"
        );
        for changed in [seen(7, 11, 100), seen(7, 10, 101), seen(8, 10, 100)] {
            files.closed(p, seen(7, 10, 100));
            assert!(!files.still_idle(p, changed), "{changed:?}");
            assert!(
                files.is_empty(),
                "a changed file is forgotten, to be claimed again"
            );
            assert_eq!(
                files.take_moved(),
                changed.key.ino == 8,
                "only another file under the path means the closed one moved"
            );
        }
    }

    #[test]
    fn paths_no_longer_matched_are_forgotten() {
        let files = InactiveFiles::default();
        files.closed(Path::new("/l/a.log"), seen(1, 1, 1));
        files.closed(Path::new("/l/b.log"), seen(2, 1, 1));
        files.retain(|p| p.ends_with("b.log"));
        assert_eq!(files.len(), 1);
        assert!(files.take_moved(), "a.log left its path while closed");
        assert!(!files.take_moved());
        assert!(files.still_idle(Path::new("/l/b.log"), seen(2, 1, 1)));
    }
}
