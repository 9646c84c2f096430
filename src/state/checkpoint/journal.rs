//! The journal's lines: a header naming the snapshot's exact bytes, then one `{"set":{..}}` or
//! `{"forget":{"dev":..,"ino":..}}` per change, and their replay over the snapshot's entries. Pure:
//! no file system.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::document::{check_entry, write_entry, FileCheckpoint, FormatError, Layout};

/// The journal format version this agent reads and writes (its header's `"journal"`).
pub const JOURNAL_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct JournalHeader {
    journal: u32,
    snapshot_len: u64,
    snapshot_xxh3: String,
}

/// The lines written through serde (a set line is written by hand: [`set_line`]).
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum LineOut {
    Forget { dev: u64, ino: u64 },
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum LineIn {
    Set(FileCheckpoint),
    Forget { dev: u64, ino: u64 },
}

/// The journal line recording `file` as it is now (compact JSON and a newline, byte for byte what
/// serde writes), after the checks of [`entry_text`]. Saves write theirs into one buffer with
/// [`write_set_line`]; this one line is for tests.
#[cfg(test)]
pub fn set_line(file: &FileCheckpoint) -> Result<Vec<u8>, FormatError> {
    let mut out =
        Vec::with_capacity(SET_LINE_BYTES + file.path.as_os_str().len() + file.topic.len());
    write_set_line(&mut out, file)?;
    Ok(out)
}

/// A set line's bytes besides its path and topic, about: what a caller reserves per line.
pub const SET_LINE_BYTES: usize = 200;

/// [`set_line`], appended to `out` (a save writes a thousand of them into one buffer).
pub fn write_set_line(out: &mut Vec<u8>, file: &FileCheckpoint) -> Result<(), FormatError> {
    check_entry(0, file)?;
    out.extend_from_slice(b"{\"set\":");
    write_entry(out, file, Layout::Compact)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// The journal line recording that the entry of `(dev, ino)` is gone.
pub fn forget_line(dev: u64, ino: u64) -> Vec<u8> {
    let mut out = serde_json::to_vec(&LineOut::Forget { dev, ino }).expect("integers encode");
    out.push(b'\n');
    out
}

pub(super) fn header_line(snapshot: &[u8]) -> Vec<u8> {
    let header = JournalHeader {
        journal: JOURNAL_VERSION,
        snapshot_len: snapshot.len() as u64,
        snapshot_xxh3: snapshot_hash(snapshot),
    };
    let mut out = serde_json::to_vec(&header).expect("a header encodes");
    out.push(b'\n');
    out
}

pub(super) fn snapshot_hash(snapshot: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(snapshot))
}

/// The length and xxh3 of a snapshot's bytes: what a journal header names.
pub type SnapshotId = (u64, String);

/// What replaying a journal's bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// No readable header of this version.
    NoHeader,
    /// The header names other snapshot bytes.
    Stale,
    /// Lines applied up to the end, or up to the first incomplete or unreadable one (`torn`: the
    /// bytes ignored from there, and why).
    Applied {
        changes: usize,
        torn: Option<(u64, String)>,
    },
}

/// Applies the journal `bytes` to `files`, the entries of the snapshot named `snapshot`, when its
/// header names that snapshot; later lines replace earlier entries of the same identity, as the
/// registry loads them.
pub fn replay(
    files: &mut Vec<FileCheckpoint>,
    bytes: &[u8],
    snapshot: Option<&SnapshotId>,
) -> Replay {
    let header = memchr::memchr(b'\n', bytes).and_then(|end| {
        serde_json::from_slice::<JournalHeader>(&bytes[..end])
            .ok()
            .filter(|h| h.journal == JOURNAL_VERSION)
            .map(|h| (h, end + 1))
    });
    let Some((header, mut at)) = header else {
        return Replay::NoHeader;
    };
    if snapshot != Some(&(header.snapshot_len, header.snapshot_xxh3)) {
        return Replay::Stale;
    }
    if at == bytes.len() {
        return Replay::Applied {
            changes: 0,
            torn: None,
        };
    }
    let mut by_key: BTreeMap<(u64, u64), FileCheckpoint> = std::mem::take(files)
        .into_iter()
        .map(|f| ((f.dev, f.ino), f))
        .collect();
    let mut changes = 0;
    let mut torn = None;
    while at < bytes.len() {
        let Some(len) = memchr::memchr(b'\n', &bytes[at..]) else {
            torn = Some("incomplete last line (no newline)".to_owned());
            break;
        };
        let line = &bytes[at..at + len];
        let parsed = serde_json::from_slice::<LineIn>(line)
            .map_err(|e| e.to_string())
            .and_then(|l| match l {
                LineIn::Set(f) => check_entry(0, &f)
                    .map(|()| LineIn::Set(f))
                    .map_err(|e| e.to_string()),
                forget => Ok(forget),
            });
        match parsed {
            Ok(LineIn::Set(f)) => {
                by_key.insert((f.dev, f.ino), f);
            }
            Ok(LineIn::Forget { dev, ino }) => {
                by_key.remove(&(dev, ino));
            }
            Err(reason) => {
                torn = Some(format!("line {}: {reason}", changes + 2));
                break;
            }
        }
        changes += 1;
        at += len + 1;
    }
    *files = by_key.into_values().collect();
    Replay::Applied {
        changes,
        torn: torn.map(|reason| ((bytes.len() - at) as u64, reason)),
    }
}
