//! The last applied collect value, kept in `state_dir` so the agent starts and ships even while etcd
//! is down.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

pub const SAVED_FILE: &str = "last_config.json";

/// The saved record: the value as etcd held it, with its key and revision.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub key: String,
    pub revision: i64,
    pub value: String,
}

/// Writes the last applied value to `state_dir` off the watch loop: the write is fsynced, and a slow
/// disk must neither delay the next change (nor, holding a runtime worker, the reconciler it wakes)
/// nor turn a burst of changes into a queue of writes. A burst costs one write for its last value.
pub struct Saver {
    latest: watch::Sender<Option<Saved>>,
    task: tokio::task::JoinHandle<()>,
}

impl Saver {
    pub fn start(path: PathBuf) -> Saver {
        let (latest, mut rx) = watch::channel(None::<Saved>);
        let task = tokio::spawn(async move {
            // Also sees a value sent just before the sender was dropped: `finish` relies on it.
            while rx.changed().await.is_ok() {
                let Some(bytes) = rx
                    .borrow_and_update()
                    .as_ref()
                    .and_then(|s| serde_json::to_vec_pretty(s).ok())
                else {
                    continue;
                };
                let p = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    crate::atomic_file::write_atomic(&p, &bytes)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = written {
                    warn!(path = %path.display(), "cannot save the applied configuration: {e}");
                }
            }
        });
        Saver { latest, task }
    }

    pub fn save(&self, saved: Saved) {
        self.latest.send_replace(Some(saved));
    }

    /// Lets the last value reach the disk, for a bounded time (shutdown).
    pub async fn finish(self) {
        drop(self.latest);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}
