//! The checkpoint store: the acknowledged read position of every physical file, kept in
//! `<state_dir>/checkpoints.json` as versioned JSON and replaced atomically.
//!
//! A damaged checkpoint file never stops the agent: it is set aside for inspection and reported,
//! and the agent carries on without it. A leftover temp file from a crash between fsync and rename
//! holds the newest state, so it is preferred when it is complete.
//!
//! `checkpoints.json` is a snapshot; the changes since it go to `<state_dir>/checkpoints.journal`
//! (JSON Lines, each append fdatasynced): a header naming the snapshot's exact bytes (length and
//! xxh3), then one `{"set":{..}}` or `{"forget":{"dev":..,"ino":..}}` per change. With thousands of
//! idle files, rewriting the whole snapshot at every interval was ~170 GB/day of writes per host.
//! A save writes a new snapshot (compaction: snapshot, then a journal of only the new header) when
//! there is no valid journal (first save after start, or after a failed write), or when the journal
//! would outgrow `max(4 × snapshot, 256 KiB)`; otherwise
//! it appends. The snapshot stays the version-1 document, so an older agent still reads it (from
//! older offsets: duplicates, never loss).
//!
//! [`document`] is the snapshot's format, [`journal`] the journal's lines and their replay; this
//! module reads and writes the two files.

mod document;
mod journal;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::atomic_file::{sync_parent_dir, tmp_path, write_atomic};

pub use document::{decode, document, encode, entry_text, FileCheckpoint, FormatError, VERSION};
#[cfg(test)]
pub use journal::set_line;
pub use journal::{forget_line, write_set_line, JOURNAL_VERSION, SET_LINE_BYTES};
use journal::{header_line, snapshot_hash, Replay, SnapshotId};

const FILE_NAME: &str = "checkpoints.json";
const JOURNAL_NAME: &str = "checkpoints.journal";
/// The journal may grow to `max(JOURNAL_GROWTH × snapshot, JOURNAL_MIN_BOUND)` before a save
/// compacts it.
const JOURNAL_GROWTH: u64 = 4;
const JOURNAL_MIN_BOUND: u64 = 256 * 1024;

/// What `CheckpointStore::open` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub files: Vec<FileCheckpoint>,
    /// A damaged checkpoint file that was moved out of the way.
    pub set_aside: Option<SetAside>,
    /// What became of a `checkpoints.json.tmp` left by an interrupted save.
    pub leftover_tmp: Option<LeftoverTmp>,
    /// What became of `checkpoints.journal` (`None`: there was none).
    pub journal: Option<JournalFound>,
}

/// What `CheckpointStore::open` found in `checkpoints.journal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalFound {
    /// It extended the snapshot and every line was replayed.
    Replayed { changes: usize },
    /// Replayed up to a line that is incomplete or unreadable (a crash mid-append); that line and
    /// what follows it were ignored.
    Torn {
        changes: usize,
        ignored_bytes: u64,
        reason: String,
    },
    /// Its header names other snapshot bytes (a crash between a compaction's two writes, or a
    /// snapshot written by an older agent): ignored, the snapshot holds everything.
    Stale,
    /// No readable header: moved out of the way, like a damaged checkpoint file.
    SetAside(SetAside),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub moved_to: PathBuf,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeftoverTmp {
    /// It was complete and at least as new as the checkpoint file, so it replaced it.
    Recovered,
    /// It was torn or older than the checkpoint file, so it was deleted.
    Discarded { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot rename {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("cannot sync the directory of {}: {source}", path.display())]
    SyncDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("refusing to write {}: {source}", path.display())]
    Invalid { path: PathBuf, source: FormatError },
    #[error("cannot append to {}: no valid journal (the next save writes a snapshot)", path.display())]
    NoJournal { path: PathBuf },
}

/// What a save writes, decided by [`CheckpointStore::plan`] and [`CheckpointStore::fits`] before
/// the whole document is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Save {
    /// A whole document (see [`document`]): compaction.
    Snapshot(Vec<u8>),
    /// Journal lines (see [`write_set_line`], [`forget_line`]).
    Append(Vec<u8>),
}

/// What the next save should be, known from counts alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Snapshot,
    /// Journal lines, if they fit ([`CheckpointStore::fits`]).
    Append,
}

/// Reads and writes `<state_dir>/checkpoints.json` and its journal.
#[derive(Debug)]
pub struct CheckpointStore {
    path: PathBuf,
    journal_path: PathBuf,
    /// The journal on disk extending the snapshot on disk; `None` until a compaction wrote one
    /// (after start, and after any failed write: an append may have been torn).
    journal: Mutex<Option<Journal>>,
}

#[derive(Debug)]
struct Journal {
    /// Opened for appending.
    file: File,
    len: u64,
    snapshot_len: u64,
    /// Lines were appended after the header.
    changes: bool,
}

struct Candidate {
    decoded: Result<Vec<FileCheckpoint>, FormatError>,
    modified: Option<SystemTime>,
    /// Length and hash of the bytes: what a journal header names.
    len: u64,
    xxh3: String,
}

impl CheckpointStore {
    /// Loads the stored checkpoints, creating `state_dir` if needed.
    ///
    /// A leftover `checkpoints.json.tmp` that parses and is at least as new (by mtime) as
    /// `checkpoints.json` replaces it; any other leftover tmp is deleted. A torn or corrupt
    /// `checkpoints.json` (bad JSON, unknown version, wrong shape, invalid entry) is renamed to
    /// `checkpoints.json.corrupt-<unix_ms>` and reported in `Loaded::set_aside`. Then
    /// `checkpoints.journal` is replayed over it when its header names the snapshot's bytes, up to
    /// its first incomplete or unreadable line; a journal of other bytes is ignored, one without a
    /// readable header set aside (`Loaded::journal` says which). Only I/O errors are errors. The
    /// first save after opening writes a snapshot and a fresh journal.
    pub fn open(state_dir: &Path) -> Result<(CheckpointStore, Loaded), CheckpointError> {
        fs::create_dir_all(state_dir).map_err(|source| CheckpointError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let store = CheckpointStore {
            path: state_dir.join(FILE_NAME),
            journal_path: state_dir.join(JOURNAL_NAME),
            journal: Mutex::new(None),
        };
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    /// Replaces the stored checkpoints with `files`, atomically (a compaction).
    pub fn save(&self, files: &[FileCheckpoint]) -> Result<(), CheckpointError> {
        let bytes = encode(files).map_err(|source| CheckpointError::Invalid {
            path: self.path.clone(),
            source,
        })?;
        self.save_document(&bytes)
    }

    /// Writes a document already encoded (see [`document`]) as the new snapshot, and a journal
    /// holding only its header. A crash between the two leaves the old journal, whose header
    /// names the old snapshot: it is ignored at load, and the new snapshot holds everything.
    pub fn save_document(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let mut journal = self.lock();
        *journal = None;
        write_atomic(&self.path, bytes).map_err(|source| CheckpointError::Write {
            path: self.path.clone(),
            source,
        })?;
        let header = header_line(bytes);
        let write_err = |source| CheckpointError::Write {
            path: self.journal_path.clone(),
            source,
        };
        write_atomic(&self.journal_path, &header).map_err(write_err)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&self.journal_path)
            .map_err(write_err)?;
        *journal = Some(Journal {
            file,
            len: header.len() as u64,
            snapshot_len: bytes.len() as u64,
            changes: false,
        });
        Ok(())
    }

    /// Appends journal lines and fdatasyncs them. A failure leaves no valid journal: the next
    /// save must be a snapshot (the lines may be torn).
    pub fn append(&self, lines: &[u8]) -> Result<(), CheckpointError> {
        let mut guard = self.lock();
        let Some(journal) = guard.as_mut() else {
            return Err(CheckpointError::NoJournal {
                path: self.journal_path.clone(),
            });
        };
        if lines.is_empty() {
            return Ok(());
        }
        match journal
            .file
            .write_all(lines)
            .and_then(|()| journal.file.sync_data())
        {
            Ok(()) => {
                journal.len += lines.len() as u64;
                journal.changes = true;
                Ok(())
            }
            Err(source) => {
                *guard = None;
                Err(CheckpointError::Write {
                    path: self.journal_path.clone(),
                    source,
                })
            }
        }
    }

    /// Writes what a save decided; after any failure the next save must be a snapshot.
    pub fn write(&self, save: &Save) -> Result<(), CheckpointError> {
        match save {
            Save::Snapshot(document) => self.save_document(document),
            Save::Append(lines) => self.append(lines),
        }
    }

    /// Whether the changes go to the journal or call for a snapshot: there is no valid journal.
    /// Decided before anything is encoded. Not by how many records changed: even when every record
    /// changed (every file trickling), appending the same bytes is one write and one fdatasync where
    /// a snapshot is two atomic replacements; [`CheckpointStore::fits`] bounds the journal.
    pub fn plan(&self) -> Plan {
        if self.lock().is_none() {
            Plan::Snapshot
        } else {
            Plan::Append
        }
    }

    /// Whether `bytes` more of journal lines keep the journal within
    /// `max(4 × snapshot, 256 KiB)`; if not, the save is a snapshot.
    pub fn fits(&self, bytes: usize) -> bool {
        self.lock().as_ref().is_some_and(|j| {
            let bound = (JOURNAL_GROWTH * j.snapshot_len).max(JOURNAL_MIN_BOUND);
            j.len + bytes as u64 <= bound
        })
    }

    /// Whether the journal holds changes the snapshot does not (or there is no valid journal).
    pub fn journal_has_changes(&self) -> bool {
        self.lock().as_ref().is_none_or(|j| j.changes)
    }

    /// Makes the next save a snapshot (after a save that could not even be encoded: the changes it
    /// took are in no journal).
    pub fn compact_next(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> MutexGuard<'_, Option<Journal>> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal file (`<state_dir>/checkpoints.journal`).
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// The checkpoint file (`<state_dir>/checkpoints.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Loaded, CheckpointError> {
        let tmp = tmp_path(&self.path);
        let main = read_candidate(&self.path)?;
        let leftover = read_candidate(&tmp)?;
        let mut touched_dir = false;

        // The snapshot in effect is named by (length, xxh3), for the journal's header.
        let (main_files, set_aside) = match main {
            None => (None, None),
            Some(Candidate {
                decoded: Ok(files),
                modified,
                len,
                xxh3,
            }) => (Some((files, modified, (len, xxh3))), None),
            Some(Candidate {
                decoded: Err(reason),
                ..
            }) => {
                let moved_to = self.set_aside(&self.path)?;
                touched_dir = true;
                let reason = reason.to_string();
                (None, Some(SetAside { moved_to, reason }))
            }
        };

        let ((files, snapshot), leftover_tmp) = match (leftover, main_files) {
            (None, main_files) => (split(main_files), None),
            (Some(tmp_candidate), main_files) => {
                touched_dir = true;
                match (tmp_candidate.decoded, main_files) {
                    (Err(reason), main_files) => {
                        self.remove(&tmp)?;
                        let reason = format!("torn or corrupt: {reason}");
                        (split(main_files), Some(LeftoverTmp::Discarded { reason }))
                    }
                    (Ok(_), Some((files, main_modified, id)))
                        if is_older(tmp_candidate.modified, main_modified) =>
                    {
                        self.remove(&tmp)?;
                        let reason = format!("older than {}", self.path.display());
                        ((files, Some(id)), Some(LeftoverTmp::Discarded { reason }))
                    }
                    (Ok(files), _) => {
                        fs::rename(&tmp, &self.path).map_err(|source| CheckpointError::Rename {
                            from: tmp.clone(),
                            to: self.path.clone(),
                            source,
                        })?;
                        let id = (tmp_candidate.len, tmp_candidate.xxh3);
                        ((files, Some(id)), Some(LeftoverTmp::Recovered))
                    }
                }
            }
        };

        let (files, journal) = self.replay_journal(files, snapshot, &mut touched_dir)?;

        if touched_dir {
            sync_parent_dir(&self.path).map_err(|source| CheckpointError::SyncDir {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(Loaded {
            files,
            set_aside,
            leftover_tmp,
            journal,
        })
    }

    /// Applies `checkpoints.journal` to the snapshot's `files` when its header names the snapshot
    /// `(len, xxh3)`, up to its first incomplete or unreadable line.
    fn replay_journal(
        &self,
        mut files: Vec<FileCheckpoint>,
        snapshot: Option<SnapshotId>,
        touched_dir: &mut bool,
    ) -> Result<(Vec<FileCheckpoint>, Option<JournalFound>), CheckpointError> {
        // A header a compaction was writing when it stopped: the snapshot already holds everything.
        let tmp = tmp_path(&self.journal_path);
        if fs::symlink_metadata(&tmp).is_ok() {
            self.remove(&tmp)?;
            *touched_dir = true;
        }
        let bytes = match fs::read(&self.journal_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((files, None)),
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.journal_path.clone(),
                    source,
                })
            }
        };
        let found = match journal::replay(&mut files, &bytes, snapshot.as_ref()) {
            Replay::NoHeader => {
                let moved_to = self.set_aside(&self.journal_path)?;
                *touched_dir = true;
                let reason = format!("no readable version {JOURNAL_VERSION} journal header");
                JournalFound::SetAside(SetAside { moved_to, reason })
            }
            Replay::Stale => JournalFound::Stale,
            Replay::Applied {
                changes,
                torn: None,
            } => JournalFound::Replayed { changes },
            Replay::Applied {
                changes,
                torn: Some((ignored_bytes, reason)),
            } => JournalFound::Torn {
                changes,
                ignored_bytes,
                reason,
            },
        };
        Ok((files, Some(found)))
    }

    fn set_aside(&self, path: &Path) -> Result<PathBuf, CheckpointError> {
        // Bump the suffix rather than overwrite an earlier set-aside file: each one is evidence.
        let mut ms = crate::clock::now_ms();
        let moved_to = loop {
            let mut name = path.to_owned().into_os_string();
            name.push(format!(".corrupt-{ms}"));
            let candidate = PathBuf::from(name);
            if fs::symlink_metadata(&candidate).is_err() {
                break candidate;
            }
            ms += 1;
        };
        fs::rename(path, &moved_to).map_err(|source| CheckpointError::Rename {
            from: path.to_owned(),
            to: moved_to.clone(),
            source,
        })?;
        Ok(moved_to)
    }

    fn remove(&self, path: &Path) -> Result<(), CheckpointError> {
        fs::remove_file(path).map_err(|source| CheckpointError::Remove {
            path: path.to_owned(),
            source,
        })
    }
}

fn split(
    main: Option<(Vec<FileCheckpoint>, Option<SystemTime>, SnapshotId)>,
) -> (Vec<FileCheckpoint>, Option<SnapshotId>) {
    match main {
        Some((files, _, id)) => (files, Some(id)),
        None => (Vec::new(), None),
    }
}

/// An unknown mtime counts as not older: the tmp is the last thing a save wrote.
fn is_older(tmp: Option<SystemTime>, main: Option<SystemTime>) -> bool {
    matches!((tmp, main), (Some(t), Some(m)) if t < m)
}

fn read_candidate(path: &Path) -> Result<Option<Candidate>, CheckpointError> {
    let read_err = |source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    Ok(Some(Candidate {
        decoded: decode(&bytes),
        modified,
        len: bytes.len() as u64,
        xxh3: snapshot_hash(&bytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::identity::hash_hex;
    use proptest::prelude::*;
    use serde::Serialize;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const GOLDEN: &str = include_str!("../../../tests/golden/checkpoint_v1.json");

    fn entry(
        dev: u64,
        ino: u64,
        path: &str,
        head: &[u8],
        tail: &[u8],
        offset: u64,
    ) -> FileCheckpoint {
        FileCheckpoint {
            dev,
            ino,
            fingerprint: hash_hex(head),
            fingerprint_len: u32::try_from(head.len()).unwrap(),
            path: PathBuf::from(path),
            topic: "web_log".to_owned(),
            offset,
            tail_hash: hash_hex(tail),
            updated_ms: 1_767_322_800_000,
            gone_since_ms: None,
        }
    }

    /// The value the golden file holds, listed out of order to exercise sorting.
    fn golden_value() -> Vec<FileCheckpoint> {
        let empty = FileCheckpoint {
            topic: "app_log".to_owned(),
            updated_ms: 1_767_322_801_500,
            ..entry(2049, 262_144, "/var/log/app/app.log", b"", b"", 0)
        };
        let current = entry(
            2049,
            131_075,
            "/var/log/nginx/access.log",
            b"10.0.0.7 - - [02/Jan/2026:03:00:00 +0000] \"GET / HTTP/1.1\" 200 612\n",
            b"\"GET /health HTTP/1.1\" 200 2\n",
            5120,
        );
        let rotated = FileCheckpoint {
            updated_ms: 1_767_319_200_000,
            gone_since_ms: Some(1_767_320_000_000),
            ..entry(
                2049,
                131_074,
                "/var/log/nginx/access.log.1",
                b"10.0.0.9 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 612\n",
                b"\"GET /favicon.ico HTTP/1.1\" 404 0\n",
                1_048_576,
            )
        };
        vec![empty, current, rotated]
    }

    fn sorted(mut files: Vec<FileCheckpoint>) -> Vec<FileCheckpoint> {
        files.sort_by_key(|f| (f.dev, f.ino));
        files
    }

    fn open(dir: &Path) -> (CheckpointStore, Loaded) {
        CheckpointStore::open(dir).unwrap()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The document is assembled from per-entry texts; it must stay what serde writes for the
    /// whole value (the golden file checks a full one; this the edge of none).
    #[test]
    fn an_empty_document_is_what_serde_writes() {
        #[derive(Serialize)]
        struct Doc {
            version: u32,
            files: Vec<FileCheckpoint>,
        }
        let doc = Doc {
            version: VERSION,
            files: vec![],
        };
        let mut want = serde_json::to_vec_pretty(&doc).unwrap();
        want.push(b'\n');
        assert_eq!(
            String::from_utf8(encode(&[]).unwrap()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        assert_eq!(decode(&encode(&[]).unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn golden_file_parses_to_known_value() {
        assert_eq!(decode(GOLDEN.as_bytes()).unwrap(), sorted(golden_value()));
    }

    #[test]
    fn encoding_known_value_matches_golden_byte_for_byte() {
        let bytes = encode(&golden_value()).unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), GOLDEN);
    }

    #[test]
    fn missing_file_loads_empty_and_creates_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a").join("b");
        let (store, loaded) = open(&state);
        assert_eq!(
            loaded,
            Loaded {
                files: vec![],
                set_aside: None,
                leftover_tmp: None,
                journal: None,
            }
        );
        assert_eq!(store.path(), state.join("checkpoints.json"));
        assert!(dir_names(&state).is_empty());
    }

    #[test]
    fn save_then_open_round_trips_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        store.save(&golden_value()).unwrap();
        assert_eq!(fs::read_to_string(store.path()).unwrap(), GOLDEN);
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, sorted(golden_value()));
        assert_eq!(loaded.set_aside, None);
        assert_eq!(
            loaded.journal,
            Some(JournalFound::Replayed { changes: 0 }),
            "a save writes the journal's header"
        );
        assert_eq!(
            dir_names(dir.path()),
            ["checkpoints.journal", "checkpoints.json"]
        );
    }

    #[test]
    fn reused_inode_entries_keep_a_stable_order() {
        let old = FileCheckpoint {
            gone_since_ms: Some(5),
            ..entry(1, 7, "/l/a.log.1", b"old head", b"old tail", 9)
        };
        let new = entry(1, 7, "/l/a.log", b"new head", b"new tail", 9);
        let forward = encode(&[old.clone(), new.clone()]).unwrap();
        assert_eq!(forward, encode(&[new, old]).unwrap());
        assert_eq!(decode(&forward).unwrap().len(), 2);
    }

    fn assert_set_aside(content: &[u8], reason_contains: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        fs::write(&path, content).unwrap();
        let (store, loaded) = open(dir.path());
        assert!(loaded.files.is_empty());
        let set_aside = loaded.set_aside.expect("corrupt file must be set aside");
        assert!(
            set_aside.reason.contains(reason_contains),
            "reason {:?} lacks {reason_contains:?}",
            set_aside.reason
        );
        let moved_name = set_aside.moved_to.file_name().unwrap().to_str().unwrap();
        let ms = moved_name
            .strip_prefix("checkpoints.json.corrupt-")
            .unwrap();
        assert!(ms.parse::<u64>().unwrap() > 1_700_000_000_000);
        assert_eq!(set_aside.moved_to.parent(), Some(dir.path()));
        assert_eq!(fs::read(&set_aside.moved_to).unwrap(), content);
        assert!(!path.exists());

        store.save(&golden_value()).unwrap();
        let (_, reloaded) = open(dir.path());
        assert_eq!(reloaded.files, sorted(golden_value()));
        assert_eq!(reloaded.set_aside, None);
    }

    #[test]
    fn truncated_json_is_set_aside() {
        assert_set_aside(&GOLDEN.as_bytes()[..GOLDEN.len() / 2], "not valid JSON");
    }

    #[test]
    fn binary_garbage_is_set_aside() {
        assert_set_aside(&[0xff, 0x00, 0xfe, 0x7b, 0x80, 0x01], "not valid JSON");
    }

    #[test]
    fn empty_file_is_set_aside() {
        assert_set_aside(b"", "empty file");
    }

    #[test]
    fn zero_filled_file_is_set_aside() {
        // What a file whose data never reached the disk can look like after a power loss.
        assert_set_aside(&[0u8; 64], "not valid JSON");
    }

    #[test]
    fn future_version_is_set_aside_not_misread() {
        let v2 = GOLDEN.replace("\"version\": 1", "\"version\": 2");
        assert_set_aside(v2.as_bytes(), "unsupported checkpoint format version 2");
    }

    #[test]
    fn missing_version_is_set_aside() {
        assert_set_aside(br#"{"files":[]}"#, "missing or non-integer \"version\"");
    }

    #[test]
    fn wrong_shape_is_set_aside() {
        assert_set_aside(br#"[1,2,3]"#, "not a JSON object");
        assert_set_aside(br#"{"version":1,"files":{}}"#, "wrong shape");
        let no_offset = GOLDEN.replace("\"offset\": 5120,", "");
        assert_set_aside(no_offset.as_bytes(), "missing field `offset`");
    }

    #[test]
    fn invalid_entry_is_set_aside() {
        let huge = GOLDEN.replacen("\"fingerprint_len\": 0", "\"fingerprint_len\": 4096", 1);
        assert_ne!(huge, GOLDEN);
        assert_set_aside(huge.as_bytes(), "fingerprint_len 4096 exceeds 1024");
    }

    #[test]
    fn repeated_set_asides_keep_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        fs::write(&path, b"first {").unwrap();
        let (_, first) = open(dir.path());
        fs::write(&path, b"second {").unwrap();
        let (_, second) = open(dir.path());
        let first = first.set_aside.unwrap().moved_to;
        let second = second.set_aside.unwrap().moved_to;
        assert_ne!(first, second);
        assert_eq!(fs::read(first).unwrap(), b"first {");
        assert_eq!(fs::read(second).unwrap(), b"second {");
    }

    #[test]
    fn leftover_valid_tmp_is_preferred_and_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let older = vec![entry(1, 1, "/l/a.log", b"head", b"tail", 10)];
        store.save(&older).unwrap();
        let newer = vec![entry(1, 1, "/l/a.log", b"head", b"tail2", 20)];
        fs::write(tmp_path(store.path()), encode(&newer).unwrap()).unwrap();

        let (store, loaded) = open(dir.path());
        assert_eq!(loaded.files, newer);
        assert_eq!(loaded.leftover_tmp, Some(LeftoverTmp::Recovered));
        assert_eq!(loaded.set_aside, None);
        assert_eq!(fs::read(store.path()).unwrap(), encode(&newer).unwrap());
        assert_eq!(
            loaded.journal,
            Some(JournalFound::Stale),
            "the journal extends the older snapshot"
        );
        assert_eq!(
            dir_names(dir.path()),
            ["checkpoints.journal", "checkpoints.json"]
        );
    }

    #[test]
    fn leftover_valid_tmp_without_main_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![entry(3, 4, "/l/b.log", b"h", b"t", 1)];
        fs::write(
            dir.path().join("checkpoints.json.tmp"),
            encode(&files).unwrap(),
        )
        .unwrap();
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, files);
        assert_eq!(loaded.leftover_tmp, Some(LeftoverTmp::Recovered));
        assert_eq!(dir_names(dir.path()), ["checkpoints.json"]);
    }

    #[test]
    fn leftover_tmp_older_than_main_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let current = vec![entry(1, 1, "/l/a.log", b"head", b"tail", 30)];
        store.save(&current).unwrap();
        let tmp = tmp_path(store.path());
        let stale = vec![entry(1, 1, "/l/a.log", b"head", b"tail", 10)];
        fs::write(&tmp, encode(&stale).unwrap()).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(past)
            .unwrap();

        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, current);
        assert!(matches!(
            loaded.leftover_tmp,
            Some(LeftoverTmp::Discarded { ref reason }) if reason.starts_with("older than")
        ));
        assert_eq!(
            dir_names(dir.path()),
            ["checkpoints.journal", "checkpoints.json"]
        );
    }

    #[test]
    fn leftover_torn_tmp_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        store.save(&golden_value()).unwrap();
        fs::write(tmp_path(store.path()), &GOLDEN.as_bytes()[..100]).unwrap();

        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, sorted(golden_value()));
        assert_eq!(loaded.set_aside, None);
        assert!(matches!(
            loaded.leftover_tmp,
            Some(LeftoverTmp::Discarded { ref reason }) if reason.contains("not valid JSON")
        ));
        assert_eq!(
            dir_names(dir.path()),
            ["checkpoints.journal", "checkpoints.json"]
        );
    }

    #[test]
    fn corrupt_main_with_valid_tmp_uses_tmp_and_sets_main_aside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("checkpoints.json"), b"{\"vers").unwrap();
        let files = vec![entry(9, 9, "/l/c.log", b"h", b"t", 5)];
        fs::write(
            dir.path().join("checkpoints.json.tmp"),
            encode(&files).unwrap(),
        )
        .unwrap();

        let (store, loaded) = open(dir.path());
        assert_eq!(loaded.files, files);
        assert_eq!(loaded.leftover_tmp, Some(LeftoverTmp::Recovered));
        let moved_to = loaded.set_aside.unwrap().moved_to;
        assert_eq!(fs::read(moved_to).unwrap(), b"{\"vers");
        assert_eq!(fs::read(store.path()).unwrap(), encode(&files).unwrap());
    }

    #[test]
    fn save_into_removed_dir_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (store, _) = open(&state);
        fs::remove_dir(&state).unwrap();
        let err = store.save(&golden_value()).unwrap_err();
        assert!(matches!(err, CheckpointError::Write { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&*store.path().to_string_lossy()),
            "{message}"
        );
    }

    #[test]
    fn save_refuses_entries_it_could_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let bad = FileCheckpoint {
            tail_hash: "XYZ".to_owned(),
            ..entry(1, 1, "/l/a.log", b"h", b"t", 3)
        };
        let err = store.save(&[bad]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("tail_hash \"XYZ\""), "{message}");
        assert!(message.contains("/l/a.log"), "{message}");
        assert!(!store.path().exists());
    }

    /// A save as the registry makes it: `plan` on the counts, the lines only if it says append,
    /// and a snapshot of `all` (every entry after the changes) when they do not fit.
    fn save_changes(
        store: &CheckpointStore,
        all: &[FileCheckpoint],
        set: &[FileCheckpoint],
        forget: &[(u64, u64)],
    ) -> Result<Save, CheckpointError> {
        let lines = match store.plan() {
            Plan::Snapshot => None,
            Plan::Append => {
                // As the registry writes them: sets, then forgets.
                let mut lines = Vec::new();
                for f in set {
                    lines.extend(set_line(f).unwrap());
                }
                for &(dev, ino) in forget {
                    lines.extend(forget_line(dev, ino));
                }
                Some(lines).filter(|l| store.fits(l.len()))
            }
        };
        let save = match lines {
            Some(lines) => Save::Append(lines),
            None => Save::Snapshot(encode(all).unwrap()),
        };
        store.write(&save)?;
        Ok(save)
    }

    fn four() -> Vec<FileCheckpoint> {
        (1..=4)
            .map(|ino| entry(1, ino, &format!("/l/{ino}.log"), b"head", b"tail", 10))
            .collect()
    }

    fn moved(f: &FileCheckpoint, offset: u64) -> FileCheckpoint {
        FileCheckpoint {
            offset,
            tail_hash: hash_hex(format!("tail {offset}").as_bytes()),
            ..f.clone()
        }
    }

    /// The first save writes a snapshot, later small ones append: set, forget, set again, in order.
    #[test]
    fn the_journal_replays_sets_and_forgets_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let mut all = four();
        assert!(matches!(
            save_changes(&store, &all, &all, &[]).unwrap(),
            Save::Snapshot(_)
        ));
        let snapshot = fs::read(store.path()).unwrap();

        all[0] = moved(&all[0], 20);
        let first = save_changes(&store, &all, &all[..1], &[]).unwrap();
        assert!(matches!(first, Save::Append(_)), "{first:?}");
        let b = all.remove(1);
        assert!(matches!(
            save_changes(&store, &all, &[], &[(1, 2)]).unwrap(),
            Save::Append(_)
        ));
        let b_again = moved(&b, 30);
        all.insert(1, b_again.clone());
        assert!(matches!(
            save_changes(&store, &all, &[b_again], &[]).unwrap(),
            Save::Append(_)
        ));

        assert_eq!(
            fs::read(store.path()).unwrap(),
            snapshot,
            "appends leave the snapshot alone"
        );
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, all);
        assert_eq!(loaded.journal, Some(JournalFound::Replayed { changes: 3 }));
        assert_eq!(loaded.set_aside, None);
    }

    /// A crash mid-append leaves an incomplete or unreadable last line: what precedes it counts,
    /// it and what follows do not.
    #[test]
    fn a_torn_or_unreadable_journal_line_ends_the_replay() {
        for tail in [
            &b"{\"set\":{\"dev\":1,\"ino\":1,\"fingerp"[..],
            &b"\0\0\0\0\0\0\0\0\n"[..],
            &b"{\"set\":{\"dev\":1}}\n"[..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = open(dir.path());
            let mut all = four();
            save_changes(&store, &all, &all, &[]).unwrap();
            all[2] = moved(&all[2], 50);
            save_changes(&store, &all, &all[2..3], &[]).unwrap();
            let mut journal = OpenOptions::new()
                .append(true)
                .open(store.journal_path())
                .unwrap();
            journal.write_all(tail).unwrap();
            let late = moved(&all[3], 70);
            journal.write_all(&set_line(&late).unwrap()).unwrap();
            drop(journal);

            let (_, loaded) = open(dir.path());
            assert_eq!(loaded.files, all, "after {tail:?}");
            let Some(JournalFound::Torn {
                changes,
                ignored_bytes,
                reason,
            }) = loaded.journal
            else {
                panic!("not torn: {:?}", loaded.journal);
            };
            assert_eq!(changes, 1);
            let late_len = set_line(&late).unwrap().len();
            assert_eq!(ignored_bytes, (tail.len() + late_len) as u64, "{reason}");
        }
    }

    /// A journal whose header names other snapshot bytes (a crash between a compaction's two
    /// writes, or an older agent that rewrote the snapshot) is ignored.
    #[test]
    fn a_journal_of_another_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let mut all = four();
        save_changes(&store, &all, &all, &[]).unwrap();
        all[0] = moved(&all[0], 99);
        save_changes(&store, &all, &all[..1], &[]).unwrap();
        // What an older agent writes: the snapshot alone.
        let older = vec![moved(&four()[0], 40)];
        write_atomic(store.path(), &encode(&older).unwrap()).unwrap();

        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, older);
        assert_eq!(loaded.journal, Some(JournalFound::Stale));
    }

    /// A compaction stopped before renaming the new journal's header leaves its tmp: removed at
    /// open, and the journal in place still counts.
    #[test]
    fn a_leftover_journal_tmp_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let mut all = four();
        save_changes(&store, &all, &all, &[]).unwrap();
        all[0] = moved(&all[0], 33);
        save_changes(&store, &all, &all[..1], &[]).unwrap();
        fs::write(tmp_path(store.journal_path()), b"{\"journal\":1").unwrap();
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, all);
        assert_eq!(loaded.journal, Some(JournalFound::Replayed { changes: 1 }));
        assert_eq!(
            dir_names(dir.path()),
            ["checkpoints.journal", "checkpoints.json"]
        );
    }

    /// A journal without a readable header is set aside, like a damaged checkpoint file.
    #[test]
    fn a_journal_without_a_header_is_set_aside() {
        for content in [
            &b""[..],
            &b"\0\0\0\0"[..],
            &b"{\"journal\":2,\"snapshot_len\":1,\"snapshot_xxh3\":\"00\"}\n"[..],
            &b"{\"set\":{}}\n"[..],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = open(dir.path());
            store.save(&four()).unwrap();
            fs::write(store.journal_path(), content).unwrap();
            let (_, loaded) = open(dir.path());
            assert_eq!(loaded.files, four());
            let Some(JournalFound::SetAside(aside)) = loaded.journal else {
                panic!("not set aside: {:?}", loaded.journal);
            };
            assert_eq!(fs::read(&aside.moved_to).unwrap(), content);
            assert!(aside
                .moved_to
                .to_str()
                .unwrap()
                .contains("checkpoints.journal.corrupt-"));
            assert!(!store.journal_path().exists());
        }
    }

    /// Every entry changed (a host whose every file trickles): the lines still go to the journal
    /// while it fits. A snapshot costs two atomic writes (temp file, fsync, rename, directory fsync,
    /// twice) where an append is one write and one fdatasync, for the same bytes.
    #[test]
    fn every_entry_changed_still_appends_while_the_journal_fits() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        assert_eq!(store.plan(), Plan::Snapshot, "no journal yet");
        let mut all = four();
        save_changes(&store, &all, &all, &[]).unwrap();
        assert_eq!(store.plan(), Plan::Append);
        let snapshot = fs::read(store.path()).unwrap();

        for f in &mut all {
            *f = moved(f, 12);
        }
        let save = save_changes(&store, &all, &all, &[]).unwrap();
        assert!(matches!(save, Save::Append(_)), "{save:?}");
        assert_eq!(
            fs::read(store.path()).unwrap(),
            snapshot,
            "the snapshot is left as it was"
        );
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, all);
    }

    /// The journal grows to `max(4 × snapshot, 256 KiB)`, then a save compacts it.
    #[test]
    fn a_journal_past_its_bound_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        // A small snapshot: the bound is 256 KiB.
        store.save(&four()).unwrap();
        let header = fs::metadata(store.journal_path()).unwrap().len() as usize;
        assert!(store.fits(256 * 1024 - header));
        assert!(!store.fits(256 * 1024 - header + 1));

        // A large one: four times its size.
        let many: Vec<FileCheckpoint> = (0..1000)
            .map(|ino| entry(1, ino, &format!("/l/{ino}.log"), b"head", b"tail", 10))
            .collect();
        store.save(&many).unwrap();
        let snapshot = fs::metadata(store.path()).unwrap().len() as usize;
        assert!(4 * snapshot > 256 * 1024, "{snapshot}");
        let header = fs::metadata(store.journal_path()).unwrap().len() as usize;
        assert!(store.fits(4 * snapshot - header));
        assert!(!store.fits(4 * snapshot - header + 1));

        // Saves of one change each over a small snapshot, until the journal is full.
        let mut all = four();
        store.save(&all).unwrap();
        let line = set_line(&moved(&all[0], 100_000)).unwrap().len() as u64;
        let mut appended = 0;
        let compacted = loop {
            all[0] = moved(&all[0], 100_000 + appended);
            match save_changes(&store, &all, &all[..1], &[]).unwrap() {
                Save::Append(_) => appended += 1,
                Save::Snapshot(_) => break appended,
            }
            assert!(appended < 10_000, "never compacted");
        };
        let header = header_line(&encode(&four()).unwrap()).len() as u64;
        assert_eq!(compacted, (256 * 1024 - header) / line);
        assert_eq!(
            fs::metadata(store.journal_path()).unwrap().len(),
            header_line(&encode(&all).unwrap()).len() as u64
        );
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded.files, all);
    }

    /// A failed append may have left a torn line: the next save writes a snapshot.
    #[test]
    fn a_save_after_a_failed_append_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path());
        let mut all = four();
        save_changes(&store, &all, &all, &[]).unwrap();
        // The disk is full from now on.
        store.lock().as_mut().unwrap().file =
            OpenOptions::new().write(true).open("/dev/full").unwrap();
        all[0] = moved(&all[0], 20);
        let err = save_changes(&store, &all, &all[..1], &[]).unwrap_err();
        assert!(matches!(err, CheckpointError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("checkpoints.journal"), "{err}");
        assert_eq!(store.plan(), Plan::Snapshot);
        assert!(matches!(
            store.append(b"{}\n").unwrap_err(),
            CheckpointError::NoJournal { .. }
        ));

        all[1] = moved(&all[1], 20);
        let save = save_changes(&store, &all, &all[1..2], &[]).unwrap();
        assert!(matches!(save, Save::Snapshot(_)), "{save:?}");
        let (_, loaded) = open(dir.path());
        assert_eq!(
            loaded.files, all,
            "the failed save's change is in the snapshot"
        );
        assert_eq!(loaded.journal, Some(JournalFound::Replayed { changes: 0 }));
    }

    /// One save of the property test: per key (inode 0..8 of device 1), keep, set at an offset,
    /// or forget.
    #[derive(Clone, Debug)]
    enum Act {
        Keep,
        Set(u64),
        Forget,
    }

    fn arb_saves() -> impl Strategy<Value = Vec<Vec<Act>>> {
        let act = prop_oneof![
            8 => Just(Act::Keep),
            2 => (1..1_000_000u64).prop_map(Act::Set),
            1 => Just(Act::Forget),
        ];
        proptest::collection::vec(proptest::collection::vec(act, 8), 1..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Saves, then a crash that cut the journal anywhere: the loaded state is the one after
        /// every save complete before the cut, plus the complete lines of the save being written
        /// (an append of several lines is not atomic: each line is one entry as that save had
        /// it, and sets come before forgets), never less.
        #[test]
        fn a_journal_cut_anywhere_loads_a_prefix_of_the_saves(
            saves in arb_saves(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = open(dir.path());
            let mut state: BTreeMap<u64, FileCheckpoint> = BTreeMap::new();
            // Since the last compaction: (journal length, state) after its header and each line,
            // and at which of those each save ended.
            let mut after_line: Vec<(u64, Vec<FileCheckpoint>)> = Vec::new();
            let mut save_ends: Vec<usize> = Vec::new();
            for acts in &saves {
                let mut set = Vec::new();
                let mut forget = Vec::new();
                for (ino, act) in (0u64..).zip(acts) {
                    match act {
                        Act::Keep => {}
                        Act::Set(offset) => {
                            let f = entry(1, ino, &format!("/l/{ino}"), b"h", format!("{offset}").as_bytes(), *offset);
                            state.insert(ino, f.clone());
                            set.push(f);
                        }
                        Act::Forget => {
                            if state.remove(&ino).is_some() {
                                forget.push((1, ino));
                            }
                        }
                    }
                }
                let all: Vec<FileCheckpoint> = state.values().cloned().collect();
                match save_changes(&store, &all, &set, &forget).unwrap() {
                    Save::Snapshot(_) => {
                        after_line = vec![(fs::metadata(store.journal_path()).unwrap().len(), all)];
                        save_ends = vec![0];
                    }
                    Save::Append(_) => {
                        // The lines in the order written: sets, then forgets.
                        let (mut len, mut cur) = after_line.last().cloned().unwrap();
                        for f in &set {
                            len += set_line(f).unwrap().len() as u64;
                            cur.retain(|g| g.ino != f.ino);
                            cur.push(f.clone());
                            cur.sort_by_key(|g| g.ino);
                            after_line.push((len, cur.clone()));
                        }
                        for &(dev, ino) in &forget {
                            len += forget_line(dev, ino).len() as u64;
                            cur.retain(|f| f.ino != ino);
                            after_line.push((len, cur.clone()));
                        }
                        save_ends.push(after_line.len() - 1);
                    }
                }
            }
            let (full, _) = after_line.last().cloned().unwrap();
            prop_assert_eq!(fs::metadata(store.journal_path()).unwrap().len(), full);
            let at = cut.index(usize::try_from(full).unwrap() + 1) as u64;
            File::options().write(true).open(store.journal_path()).unwrap().set_len(at).unwrap();

            let (_, loaded) = open(dir.path());
            // The last line (or header) complete before the cut.
            let Some(last) = after_line.iter().rposition(|(len, _)| *len <= at) else {
                // The header itself was cut: set aside, the snapshot holds the state it named.
                prop_assert!(matches!(loaded.journal, Some(JournalFound::SetAside(_))), "{:?}", loaded.journal);
                prop_assert_eq!(loaded.files, after_line[0].1.clone());
                return Ok(());
            };
            prop_assert_eq!(&loaded.files, &after_line[last].1);
            let kept = save_ends.iter().filter(|&&end| end <= last).count();
            let returned_before_cut = save_ends.iter().filter(|&&end| after_line[end].0 <= at).count();
            prop_assert_eq!(kept, returned_before_cut, "a save complete before the cut was lost");
            if at == full {
                prop_assert!(matches!(loaded.journal, Some(JournalFound::Replayed { .. })), "{:?}", loaded.journal);
            }
        }
    }

    #[test]
    fn state_dir_that_is_a_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = CheckpointStore::open(&file).unwrap_err();
        assert!(matches!(err, CheckpointError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains(&*file.to_string_lossy()));
    }

    fn arb_entry() -> impl Strategy<Value = FileCheckpoint> {
        (
            (any::<u64>(), any::<u64>()),
            proptest::collection::vec(any::<u8>(), 0..64),
            "/[a-z0-9._/ -]{0,30}",
            "[a-z_]{1,12}",
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 1..=32),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |((dev, ino), head, path, topic, offset, tail, updated_ms, gone)| FileCheckpoint {
                    dev,
                    ino,
                    fingerprint: hash_hex(&head),
                    fingerprint_len: u32::try_from(head.len()).unwrap(),
                    path: PathBuf::from(path),
                    topic,
                    offset,
                    tail_hash: if offset == 0 {
                        String::new()
                    } else {
                        hash_hex(&tail)
                    },
                    updated_ms,
                    gone_since_ms: gone,
                },
            )
    }

    /// An entry as serde's pretty printer writes it, indented to the `files` array's depth: what
    /// [`entry_text`] writes by hand.
    fn entry_text_by_serde(file: &FileCheckpoint) -> String {
        let pretty = serde_json::to_string_pretty(file).unwrap();
        let mut out = String::from("    ");
        out.push_str(&pretty.replace('\n', "\n    "));
        out
    }

    fn arb_text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, control characters and non-ASCII: what escaping must get right.
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('\u{1}'),
                Just('\n'),
                Just('\u{7f}'),
                Just('é'),
                Just('\u{2028}'),
                Just('\u{1F600}'),
                proptest::char::range(' ', '~'),
            ],
            0..24,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn entry_text_is_what_serde_writes(
            base in arb_entry(),
            path in arb_text(),
            topic in arb_text(),
        ) {
            let file = FileCheckpoint {
                path: PathBuf::from(format!("/{path}")),
                topic,
                ..base
            };
            prop_assert_eq!(entry_text(0, &file).unwrap(), entry_text_by_serde(&file));
        }

        #[test]
        fn a_set_line_is_what_serde_writes(
            base in arb_entry(),
            path in arb_text(),
            topic in arb_text(),
        ) {
            #[derive(serde::Serialize)]
            #[serde(rename_all = "lowercase")]
            enum Line<'a> {
                Set(&'a FileCheckpoint),
            }
            let file = FileCheckpoint {
                path: PathBuf::from(format!("/{path}")),
                topic,
                ..base
            };
            let mut want = serde_json::to_vec(&Line::Set(&file)).unwrap();
            want.push(b'\n');
            let got = set_line(&file).unwrap();
            prop_assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }

        #[test]
        fn encode_decode_round_trips(files in proptest::collection::vec(arb_entry(), 0..8)) {
            let bytes = encode(&files).unwrap();
            let decoded = decode(&bytes).unwrap();
            let mut expected = files.clone();
            expected.sort_by(|a, b| {
                (a.dev, a.ino, &a.fingerprint, &a.path, a.offset)
                    .cmp(&(b.dev, b.ino, &b.fingerprint, &b.path, b.offset))
            });
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn damaged_golden_is_rejected_or_writable(at in 0..GOLDEN.len(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut bytes = GOLDEN.as_bytes().to_vec();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] = byte;
            }
            // Whatever decode accepts must satisfy the invariants encode enforces.
            if let Ok(files) = decode(&bytes) {
                prop_assert!(encode(&files).is_ok());
            }
        }
    }
}
