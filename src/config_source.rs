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

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, TlsOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::collect::{parse_entries, CollectEntry};
use crate::settings::EtcdSettings;
use crate::telemetry::Metrics;

/// A validated configuration and the etcd revision it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub revision: i64,
    pub entries: Vec<CollectEntry>,
}

/// The outcome of the latest value seen, for status reporting.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    pub applied_revision: Option<i64>,
    pub last_error: Option<String>,
    pub connected: bool,
    pub from_saved: bool,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    key: String,
    revision: i64,
    value: String,
}

const SAVED_FILE: &str = "last_config.json";

pub struct ConfigSource {
    pub settings: EtcdSettings,
    pub key: String,
    pub state_dir: PathBuf,
    pub metrics: std::sync::Arc<Metrics>,
    pub desired: watch::Sender<Option<Desired>>,
    pub status: watch::Sender<SourceStatus>,
}

#[derive(thiserror::Error, Debug)]
enum SourceError {
    #[error("etcd unreachable: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("watch on {key} was cancelled by etcd{reason}")]
    Cancelled { key: String, reason: String },
    #[error(
        "watch revision {wanted} was compacted (oldest kept: {compact}); reading the key again"
    )]
    Compacted { wanted: i64, compact: i64 },
    #[error("watch stream ended")]
    Ended,
    #[error("cannot read TLS file {path}: {source}")]
    Tls {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn connect(settings: &EtcdSettings) -> Result<Client, etcd_client::Error> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(settings.connect_timeout)
        .with_timeout(settings.request_timeout)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &settings.auth {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = tls_options(settings)
        .map_err(|e| etcd_client::Error::IoError(std::io::Error::other(e.to_string())))?
    {
        opts = opts.with_tls(tls);
    }
    Client::connect(settings.endpoints.clone(), Some(opts)).await
}

fn tls_options(settings: &EtcdSettings) -> Result<Option<TlsOptions>, SourceError> {
    let Some(tls) = &settings.tls else {
        return Ok(None);
    };
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| SourceError::Tls {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        o = o.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(d) = &tls.domain {
        o = o.domain_name(d.clone());
    }
    Ok(Some(o))
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
        let entries = parse_entries(&saved.key, saved.revision, saved.value.as_bytes()).ok()?;
        Some(Desired {
            revision: saved.revision,
            entries,
        })
    }

    fn save(&self, revision: i64, value: &[u8]) {
        let saved = Saved {
            key: self.key.clone(),
            revision,
            value: String::from_utf8_lossy(value).into_owned(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).unwrap_or_default();
        if let Err(e) = crate::atomic_file::write_atomic(&self.saved_path(), &bytes) {
            warn!(path = %self.saved_path().display(), "cannot save the applied configuration: {e}");
        }
    }

    /// Validates a value and publishes it, or rejects it and keeps the last good one.
    fn offer(&self, revision: i64, value: Option<&[u8]>) {
        let entries = match value {
            None => {
                warn!(key = %self.key, revision, "collect key is absent or deleted: nothing to collect");
                Ok(Vec::new())
            }
            Some(v) => parse_entries(&self.key, revision, v),
        };
        match entries {
            Ok(entries) => {
                if entries.is_empty() && value.is_some() {
                    warn!(key = %self.key, revision, "collect configuration is an empty list: nothing to collect");
                }
                self.metrics
                    .config_applied(&self.key, revision, entries.len());
                self.save(revision, value.unwrap_or(b"[]"));
                self.desired
                    .send_replace(Some(Desired { revision, entries }));
                self.status.send_modify(|s| {
                    s.applied_revision = Some(revision);
                    s.last_error = None;
                    s.from_saved = false;
                });
            }
            Err(e) => {
                self.metrics.config_rejected(&e);
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
    }

    /// Runs the state machine until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        info!(key = %self.key, endpoints = ?self.settings.endpoints, "reading collect configuration from etcd");
        let mut backoff = self.settings.backoff_initial;
        let mut saved_offered = false;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.session(&mut backoff) => r,
            };
            self.status.send_modify(|s| s.connected = false);
            if let Err(e) = &result {
                if !saved_offered && self.desired.borrow().is_none() {
                    saved_offered = true;
                    match self.load_saved() {
                        Some(d) => {
                            warn!(revision = d.revision, "etcd unreachable ({e}); running from the saved configuration");
                            self.metrics.config_applied(&self.key, d.revision, d.entries.len());
                            self.status.send_modify(|s| {
                                s.applied_revision = Some(d.revision);
                                s.from_saved = true;
                            });
                            self.desired.send_replace(Some(d));
                        }
                        None => warn!("etcd unreachable ({e}) and no saved configuration: collecting nothing until it answers"),
                    }
                } else {
                    self.metrics.etcd_watch_restarted(&e.to_string());
                }
            }
            let jittered = backoff.mul_f64(0.5 + fastrand::f64());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(jittered) => {}
            }
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    /// Connect → Get → Watch, until something breaks.
    async fn session(&self, backoff: &mut Duration) -> Result<(), SourceError> {
        let mut client = connect(&self.settings).await?;
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
                self.offer(*rev, Some(value))
            }
            None if already.is_none()
                || self
                    .desired
                    .borrow()
                    .as_ref()
                    .is_some_and(|d| !d.entries.is_empty()) =>
            {
                self.offer(revision, None)
            }
            _ => {}
        }
        let mut stream = client
            .watch(
                self.key.as_str(),
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await?;
        *backoff = self.settings.backoff_initial;
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
                    EventType::Put => self.offer(kv.mod_revision(), Some(kv.value())),
                    EventType::Delete => self.offer(kv.mod_revision(), None),
                }
            }
        }
    }
}
