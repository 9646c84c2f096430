//! The agent's checkpoint as a test reads it: what is on disk now, without the agent's own types, so
//! a format change shows up as a failing test.
//!
//! `checkpoints.json` is a snapshot (replaced atomically, so never torn); `checkpoints.journal`
//! holds the changes since: a header line naming the snapshot's exact bytes
//! (`{"journal":1,"snapshot_len":N,"snapshot_xxh3":"<16 hex>"}`), then one
//! `{"set":{..entry..}}` or `{"forget":{"dev":D,"ino":I}}` per line. The journal is replayed here
//! by the same rules as the agent's, written again over `serde_json::Value`: only when its header
//! names the snapshot read, in order, up to the first incomplete or unreadable line (an append in
//! progress).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;

#[derive(Clone, Debug, Deserialize)]
pub struct CheckpointRecord {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub tail_hash: String,
}

/// Every record of the checkpoint in `state_dir` (snapshot and journal); none when the agent has
/// not written one yet.
pub fn checkpoint_records(state_dir: &Path) -> anyhow::Result<Vec<CheckpointRecord>> {
    let entries = checkpoint_entries(state_dir)?;
    entries
        .into_iter()
        .map(|e| serde_json::from_value(e).context("a checkpoint entry"))
        .collect()
}

/// The checkpointed offset of the record whose path is `path`, if any.
pub fn checkpointed(state_dir: &Path, path: &Path) -> anyhow::Result<Option<u64>> {
    Ok(checkpoint_records(state_dir)?
        .into_iter()
        .find(|r| r.path == path)
        .map(|r| r.offset))
}

/// Every entry of the checkpoint as JSON, in (dev, ino) order.
pub fn checkpoint_entries(state_dir: &Path) -> anyhow::Result<Vec<Value>> {
    let snapshot_file = state_dir.join("checkpoints.json");
    let journal_file = state_dir.join("checkpoints.journal");
    // A compaction between reading the snapshot and the journal pairs an old snapshot with a new
    // journal (ignored: older state); read again until the snapshot stayed the same.
    let mut tries = 0;
    let (snapshot, journal) = loop {
        let Some(snapshot) = read_if_there(&snapshot_file)? else {
            return Ok(Vec::new());
        };
        let journal = read_if_there(&journal_file)?;
        tries += 1;
        if tries == 5 || read_if_there(&snapshot_file)?.as_ref() == Some(&snapshot) {
            break (snapshot, journal);
        }
    };
    let doc: Value = serde_json::from_slice(&snapshot)
        .with_context(|| format!("parse {}", snapshot_file.display()))?;
    let files = doc["files"]
        .as_array()
        .with_context(|| format!("no files in {}", snapshot_file.display()))?;
    let mut by_key = BTreeMap::new();
    for entry in files {
        by_key.insert(key(entry)?, entry.clone());
    }
    if let Some(journal) = journal {
        replay(&snapshot, &journal, &mut by_key);
    }
    Ok(by_key.into_values().collect())
}

fn read_if_there(file: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(file) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", file.display())),
    }
}

fn key(entry: &Value) -> anyhow::Result<(u64, u64)> {
    Ok((
        entry["dev"].as_u64().context("dev")?,
        entry["ino"].as_u64().context("ino")?,
    ))
}

/// Applies the journal's complete, readable lines when its header names `snapshot`.
fn replay(snapshot: &[u8], journal: &[u8], by_key: &mut BTreeMap<(u64, u64), Value>) {
    let mut lines = journal.split_inclusive(|&b| b == b'\n');
    let Some(header) = lines
        .next()
        .and_then(|l| l.strip_suffix(b"\n"))
        .and_then(|l| serde_json::from_slice::<Value>(l).ok())
    else {
        return;
    };
    let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(snapshot));
    if header["journal"].as_u64() != Some(1)
        || header["snapshot_len"].as_u64() != Some(snapshot.len() as u64)
        || header["snapshot_xxh3"].as_str() != Some(hash.as_str())
    {
        return;
    }
    for line in lines {
        let Some(value) = line
            .strip_suffix(b"\n")
            .and_then(|l| serde_json::from_slice::<Value>(l).ok())
        else {
            return;
        };
        if let Some(entry) = value.get("set") {
            let Ok(k) = key(entry) else { return };
            by_key.insert(k, entry.clone());
        } else if let Some(gone) = value.get("forget") {
            let Ok(k) = key(gone) else { return };
            by_key.remove(&k);
        } else {
            return;
        }
    }
}
