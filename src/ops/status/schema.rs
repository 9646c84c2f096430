//! The status value as stored in etcd. Every field has a default so that `logagent status` reads
//! values written by older or newer agents.

use serde::{Deserialize, Serialize};

/// The value stored under the status key. Every field has a default so that `logagent status` reads
/// values written by older or newer agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostStatus {
    pub version: String,
    pub hostname: String,
    pub ip: String,
    pub started_unix_ms: u64,
    /// When this value was written; not part of the "changed?" comparison.
    pub updated_unix_ms: u64,
    pub config_key: String,
    /// etcd revision of the collect configuration running.
    pub applied_revision: Option<i64>,
    /// Why the latest value of the config key was rejected (the applied revision keeps running).
    pub config_error: Option<String>,
    /// Running from the configuration saved in `state_dir` because etcd was unreachable at start.
    pub from_saved: bool,
    pub kafka_reachable: bool,
    pub entries: Vec<EntryStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryStatus {
    pub path: String,
    pub topic: String,
    /// Files of this entry being read, plus matched files that cannot be read.
    pub files_matched: usize,
    pub bytes_behind: u64,
    /// The most recent problem among the entry's files.
    pub last_error: Option<String>,
    pub files: Vec<FileStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileStatus {
    pub path: String,
    pub acked_offset: u64,
    pub bytes_behind: u64,
    pub error: Option<String>,
}

impl HostStatus {
    pub fn files(&self) -> usize {
        self.entries.iter().map(|e| e.files_matched).sum()
    }

    pub fn bytes_behind(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes_behind).sum()
    }

    /// Equal but for the write time.
    pub(crate) fn same_as(&self, other: &HostStatus) -> bool {
        HostStatus {
            updated_unix_ms: other.updated_unix_ms,
            ..self.clone()
        } == *other
    }
}
