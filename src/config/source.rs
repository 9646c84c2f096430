//! The config source: the etcd key that says what this host collects, as an explicit state machine.
//!
//! ```text
//!   Connect ──ok──▶ Get(key) ──ok, rev R──▶ Watch(from R+1) ──event──▶ (apply, stay)
//!      ▲              │                        │ error / cancel / compaction / stream end
//!      └── Backoff ◀──┴────────────────────────┘
//! ```
//! The Get before every Watch means a change made while disconnected is seen on reconnect; watching from
//! the Get's revision + 1 means nothing between the two is missed (the seed agent's bug). A value that
//! does not validate is rejected whole and the last good configuration keeps running. The last applied
//! value is saved in `state_dir`, so the agent starts and ships even while etcd is down.

use std::path::PathBuf;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::collect::{parse_value, CollectEntry, EntryLimits};
use crate::config::etcd::{self, EtcdError};
use crate::config::saved::{Saved, Saver, SAVED_FILE};
use crate::config::settings::EtcdSettings;
use crate::telemetry::Metrics;

/// A validated configuration and the etcd revision it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub revision: i64,
    pub entries: Vec<CollectEntry>,
    /// `"type": "host_metrics"` entries, run beside the file entries.
    pub host_metrics: Vec<crate::config::host_metrics::HostMetricsEntry>,
}

/// The outcome of the latest value seen, for status reporting.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    pub applied_revision: Option<i64>,
    pub last_error: Option<String>,
    pub connected: bool,
    pub from_saved: bool,
}

pub struct ConfigSource {
    pub settings: EtcdSettings,
    pub key: String,
    /// What this host lets a value ask for.
    pub limits: EntryLimits,
    pub state_dir: PathBuf,
    pub metrics: std::sync::Arc<Metrics>,
    pub desired: watch::Sender<Option<Desired>>,
    pub status: watch::Sender<SourceStatus>,
}

#[derive(thiserror::Error, Debug)]
enum SourceError {
    #[error(transparent)]
    Connect(#[from] EtcdError),
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch on {key} was cancelled by etcd{reason}")]
    Cancelled { key: String, reason: String },
    #[error("watch revision {wanted} was compacted (oldest kept: {compact})")]
    Compacted { wanted: i64, compact: i64 },
    #[error("watch stream ended")]
    Ended,
}

impl ConfigSource {
    fn saved_path(&self) -> PathBuf {
        self.state_dir.join(SAVED_FILE)
    }

    /// The configuration applied last time, if it is for this key and still valid.
    fn load_saved(&self) -> Option<Desired> {
        let bytes = std::fs::read(self.saved_path()).ok()?;
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        if saved.key != self.key {
            return None;
        }
        let entries = parse_value(
            &saved.key,
            saved.revision,
            saved.value.as_bytes(),
            &self.limits,
        )
        .ok()?;
        Some(Desired {
            revision: saved.revision,
            entries: entries.files,
            host_metrics: entries.host_metrics,
        })
    }

    fn saved_record(&self, revision: i64, value: &[u8]) -> Saved {
        Saved {
            key: self.key.clone(),
            revision,
            value: String::from_utf8_lossy(value).into_owned(),
        }
    }

    /// Validates a value and publishes it, or rejects it and keeps the last good one.
    fn offer(&self, saver: &Saver, revision: i64, value: Option<&[u8]>) {
        let entries = match value {
            None => {
                warn!(key = %self.key, revision, "collect key is absent or deleted: nothing to collect");
                Ok(Default::default())
            }
            Some(v) => parse_value(&self.key, revision, v, &self.limits),
        };
        match entries {
            Ok(crate::config::collect::Entries {
                files: entries,
                host_metrics,
            }) => {
                if entries.is_empty() && host_metrics.is_empty() && value.is_some() {
                    warn!(key = %self.key, revision, "collect configuration is an empty list: nothing to collect");
                }
                self.metrics
                    .config_applied(&self.key, revision, entries.len());
                self.desired.send_replace(Some(Desired {
                    revision,
                    entries,
                    host_metrics,
                }));
                self.status.send_modify(|s| {
                    s.applied_revision = Some(revision);
                    s.last_error = None;
                    s.from_saved = false;
                });
                saver.save(self.saved_record(revision, value.unwrap_or(b"[]")));
            }
            Err(e) => {
                self.metrics.config_rejected(&e);
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
                // Nothing applied yet in this run: the last good configuration is the saved one.
                if self.desired.borrow().is_none() {
                    self.offer_saved(&format!("the value at revision {revision} is invalid"));
                }
            }
        }
    }

    /// Runs the configuration saved by an earlier run, if there is one; `why` says why etcd's is not used.
    fn offer_saved(&self, why: &str) {
        match self.load_saved() {
            Some(d) => {
                warn!(
                    revision = d.revision,
                    "{why}; running from the saved configuration"
                );
                self.metrics
                    .config_applied(&self.key, d.revision, d.entries.len());
                self.status.send_modify(|s| {
                    s.applied_revision = Some(d.revision);
                    s.from_saved = true;
                });
                self.desired.send_replace(Some(d));
            }
            None => warn!("{why} and there is no saved configuration: collecting nothing for now"),
        }
    }

    /// Runs the state machine until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        info!(key = %self.key, endpoints = ?self.settings.endpoints, "reading collect configuration from etcd");
        let saver = Saver::start(self.saved_path());
        self.watch_until(&saver, &cancel).await;
        saver.finish().await;
    }

    async fn watch_until(&self, saver: &Saver, cancel: &CancellationToken) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut saved_offered = false;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.session(saver, &mut backoff) => r,
            };
            self.status.send_modify(|s| s.connected = false);
            if let Err(e) = &result {
                if !saved_offered && self.desired.borrow().is_none() {
                    saved_offered = true;
                    self.offer_saved(&format!("cannot read the collect configuration ({e})"));
                } else {
                    self.metrics.etcd_watch_restarted(&e.to_string());
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    /// Connect → Get → Watch, until something breaks.
    async fn session(&self, saver: &Saver, backoff: &mut Backoff) -> Result<(), SourceError> {
        let mut client = etcd::connect(&self.settings).await?;
        let resp = client.get(self.key.as_str(), None).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.status.send_modify(|s| s.connected = true);
        let current = resp
            .kvs()
            .first()
            .map(|kv| (kv.mod_revision(), kv.value().to_vec()));
        let already = self.desired.borrow().as_ref().map(|d| d.revision);
        match &current {
            Some((rev, value)) if already != Some(*rev) || self.status.borrow().from_saved => {
                self.offer(saver, *rev, Some(value))
            }
            None if already.is_none()
                || self
                    .desired
                    .borrow()
                    .as_ref()
                    .is_some_and(|d| !d.entries.is_empty()) =>
            {
                self.offer(saver, revision, None)
            }
            _ => {}
        }
        let mut stream = client
            .watch(
                self.key.as_str(),
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await?;
        backoff.reset();
        loop {
            let Some(resp) = stream.message().await? else {
                return Err(SourceError::Ended);
            };
            if resp.compact_revision() > 0 {
                return Err(SourceError::Compacted {
                    wanted: revision + 1,
                    compact: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                let reason = resp.cancel_reason();
                return Err(SourceError::Cancelled {
                    key: self.key.clone(),
                    reason: if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    },
                });
            }
            // Only the last event of a response matters: they are applied in order and each replaces all.
            if let Some(ev) = resp.events().last() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => self.offer(saver, kv.mod_revision(), Some(kv.value())),
                    EventType::Delete => self.offer(saver, kv.mod_revision(), None),
                }
            }
        }
    }
}
