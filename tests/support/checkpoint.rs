//! The agent's checkpoint file as a test reads it: what is on disk now (it is replaced atomically,
//! so never torn), without the agent's own types, so a format change shows up as a failing test.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Deserialize)]
struct Document {
    files: Vec<CheckpointRecord>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CheckpointRecord {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    pub tail_hash: String,
}

/// Every record of the checkpoint in `state_dir`; none when the agent has not written one yet.
pub fn checkpoint_records(state_dir: &Path) -> anyhow::Result<Vec<CheckpointRecord>> {
    let file = state_dir.join("checkpoints.json");
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
    };
    let doc: Document =
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", file.display()))?;
    Ok(doc.files)
}

/// The checkpointed offset of the record whose path is `path`, if any.
pub fn checkpointed(state_dir: &Path, path: &Path) -> anyhow::Result<Option<u64>> {
    Ok(checkpoint_records(state_dir)?
        .into_iter()
        .find(|r| r.path == path)
        .map(|r| r.offset))
}
