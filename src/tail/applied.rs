//! Which collect entries were already applied on this host: `"from": "end"` concerns only the files
//! that existed when an entry was first applied. Every file created later — including while the agent
//! was down, e.g. the new `app.log` of a rotation — is read from its start.
//!
//! Kept in `<state_dir>/entries_applied.json` (path → Unix ms of the first application), apart from
//! the checkpoint so that its versioned format stays as it is.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;

const FILE_NAME: &str = "entries_applied.json";

#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Default, Serialize, Deserialize)]
struct Document {
    version: u32,
    /// Entry path → Unix milliseconds of its first application on this host.
    entries: BTreeMap<String, u64>,
}

pub struct AppliedEntries {
    /// `None`: kept in memory only (tests, tools).
    path: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, u64>>,
}

impl AppliedEntries {
    /// Loads the record from `state_dir`. An unreadable or damaged record counts as empty: the worst
    /// outcome is that `"from": "end"` applies once more to the files existing now, as before the
    /// record existed.
    pub fn load(state_dir: &Path) -> AppliedEntries {
        let path = state_dir.join(FILE_NAME);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Document>(&b).ok())
            .map(|d| d.entries)
            .unwrap_or_default();
        AppliedEntries {
            path: Some(path),
            entries: Mutex::new(entries),
        }
    }

    pub fn in_memory() -> AppliedEntries {
        AppliedEntries {
            path: None,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records that the entry with `entry_path` is applied now; true when this is its first
    /// application on this host. The record is durable before this returns true, so that a crash right
    /// after starting files at their end cannot make the next start apply `"from": "end"` again (to
    /// files created meanwhile); the other order would risk that loss, this one only re-reads.
    pub fn first_application(&self, entry_path: &str, now_ms: u64) -> Result<bool, AppliedError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.contains_key(entry_path) {
            return Ok(false);
        }
        entries.insert(entry_path.to_owned(), now_ms);
        if let Some(path) = &self.path {
            let doc = Document {
                version: 1,
                entries: entries.clone(),
            };
            let mut bytes = serde_json::to_vec_pretty(&doc).expect("a map of strings encodes");
            bytes.push(b'\n');
            write_atomic(path, &bytes).map_err(|source| AppliedError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_first_applied_once_and_that_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = AppliedEntries::load(dir.path());
        assert!(a.first_application("/var/log/app.log", 1).unwrap());
        assert!(!a.first_application("/var/log/app.log", 2).unwrap());
        assert!(a.first_application("/var/log/other.log", 3).unwrap());
        let again = AppliedEntries::load(dir.path());
        assert!(!again.first_application("/var/log/app.log", 4).unwrap());
        assert!(!again.first_application("/var/log/other.log", 4).unwrap());
    }

    #[test]
    fn a_damaged_record_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let a = AppliedEntries::load(dir.path());
        assert!(a.first_application("/x", 1).unwrap());
    }
}
