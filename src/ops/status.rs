//! This host's status, published to etcd under a lease the agent keeps alive: when the agent dies the
//! lease expires and the key vanishes, so `etcdctl get --prefix logagent/status/` is a live fleet view.
//!
//! ```text
//!   Connect ─▶ Grant lease ─▶ Put ─▶ every ttl/3: keep alive; every status_interval: put if changed
//!      ▲                                  │ error, lease lost, no keep-alive answer within the TTL
//!      └────────────── Backoff ◀──────────┘
//! ```
//! It runs on its own task and never holds anything the shipping path waits on; at a clean stop it
//! revokes the lease so the key goes at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::config::collect::{CollectEntry, PathMatcher};
use crate::config::settings::EtcdSettings;
use crate::config::source::{Desired, SourceStatus};
use crate::handles::Handles;
use crate::ops::telemetry::FileProblem;

/// Files listed per entry (the largest lag first); `files_matched` still counts them all.
pub const MAX_FILES_PER_ENTRY: usize = 50;

/// Time allowed for revoking the lease at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

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
    fn same_as(&self, other: &HostStatus) -> bool {
        HostStatus {
            updated_unix_ms: other.updated_unix_ms,
            ..self.clone()
        } == *other
    }
}

/// What does not change while the agent runs.
#[derive(Clone, Debug)]
pub struct Identity {
    pub version: String,
    pub hostname: String,
    pub ip: String,
    pub started_unix_ms: u64,
    pub config_key: String,
}

/// One open file, as the registry reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFile {
    pub path: PathBuf,
    pub topic: String,
    pub acked: u64,
    pub lag: u64,
}

struct EntryMatcher<'a> {
    entry: &'a CollectEntry,
    paths: PathMatcher,
}

impl EntryMatcher<'_> {
    fn new(entry: &CollectEntry) -> EntryMatcher<'_> {
        EntryMatcher {
            entry,
            paths: PathMatcher::new(entry),
        }
    }

    fn owns(&self, path: &Path) -> bool {
        self.paths.owns(path)
    }
}

/// The status value from the agent's current state. Each file is counted under the first entry that
/// matches it (the registry lets only one entry read a file).
pub fn build(
    id: &Identity,
    source: &SourceStatus,
    desired: Option<&Desired>,
    open: &[OpenFile],
    problems: &HashMap<PathBuf, FileProblem>,
    kafka_reachable: bool,
    now_unix_ms: u64,
) -> HostStatus {
    let entries = desired.map_or(&[][..], |d| &d.entries[..]);
    let matchers: Vec<EntryMatcher<'_>> = entries.iter().map(EntryMatcher::new).collect();
    let mut files: Vec<Vec<(FileStatus, u64)>> = vec![Vec::new(); entries.len()];
    for f in open {
        if let Some(i) = matchers
            .iter()
            .position(|m| m.entry.topic == f.topic && m.owns(&f.path))
        {
            let problem = problems.get(&f.path);
            files[i].push((
                FileStatus {
                    path: f.path.display().to_string(),
                    acked_offset: f.acked,
                    bytes_behind: f.lag,
                    error: problem.map(|p| p.error.clone()),
                },
                problem.map_or(0, |p| p.at_ms),
            ));
        }
    }
    for (path, problem) in problems {
        if open.iter().any(|f| &f.path == path) {
            continue;
        }
        if let Some(i) = matchers.iter().position(|m| m.owns(path)) {
            files[i].push((
                FileStatus {
                    path: path.display().to_string(),
                    error: Some(problem.error.clone()),
                    ..FileStatus::default()
                },
                problem.at_ms,
            ));
        }
    }
    let entries = entries
        .iter()
        .zip(files)
        .map(|(entry, mut files)| {
            let last_error = files
                .iter()
                .filter(|(f, _)| f.error.is_some())
                .max_by_key(|(_, at)| *at)
                .and_then(|(f, _)| f.error.clone());
            files.sort_by(|(a, _), (b, _)| {
                b.bytes_behind
                    .cmp(&a.bytes_behind)
                    .then_with(|| a.path.cmp(&b.path))
            });
            EntryStatus {
                path: entry.path.clone(),
                topic: entry.topic.clone(),
                files_matched: files.len(),
                bytes_behind: files.iter().map(|(f, _)| f.bytes_behind).sum(),
                last_error,
                files: files
                    .into_iter()
                    .take(MAX_FILES_PER_ENTRY)
                    .map(|(f, _)| f)
                    .collect(),
            }
        })
        .collect();
    HostStatus {
        version: id.version.clone(),
        hostname: id.hostname.clone(),
        ip: id.ip.clone(),
        started_unix_ms: id.started_unix_ms,
        updated_unix_ms: now_unix_ms,
        config_key: id.config_key.clone(),
        applied_revision: source.applied_revision,
        config_error: source.last_error.clone(),
        from_saved: source.from_saved,
        kafka_reachable,
        entries,
    }
}

#[derive(thiserror::Error, Debug)]
enum PublishError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the lease expired (etcd answered TTL 0)")]
    LeaseExpired,
    #[error("no keep-alive answer from etcd within the lease TTL")]
    KeepAliveSilent,
    #[error("the keep-alive stream ended")]
    Ended,
}

/// Publishes the host status until `stop`; then revokes the lease.
pub struct Publisher {
    settings: EtcdSettings,
    key: String,
    identity: Identity,
    handles: Handles,
    desired: watch::Receiver<Option<Desired>>,
    last: Option<HostStatus>,
    /// `Some(true)` while publishing works, `Some(false)` while it fails: logs only on changes.
    healthy: Option<bool>,
}

impl Publisher {
    pub fn new(
        settings: EtcdSettings,
        handles: Handles,
        desired: watch::Receiver<Option<Desired>>,
    ) -> Publisher {
        let key = EtcdSettings::render_key(
            &settings.status_key_template,
            &handles.ip,
            &handles.hostname,
        );
        let identity = Identity {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: handles.hostname.clone(),
            ip: handles.ip.clone(),
            started_unix_ms: handles.started_unix_ms,
            config_key: handles.key.clone(),
        };
        Publisher {
            settings,
            key,
            identity,
            handles,
            desired,
            last: None,
            healthy: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn current(&self) -> HostStatus {
        let open: Vec<OpenFile> = self
            .handles
            .registry
            .open_files()
            .into_iter()
            .map(|(path, topic, acked, lag)| OpenFile {
                path,
                topic,
                acked,
                lag,
            })
            .collect();
        let source = self.handles.source_status.borrow().clone();
        build(
            &self.identity,
            &source,
            self.desired.borrow().as_ref(),
            &open,
            &self.handles.metrics.file_problems(),
            self.handles.kafka.is_reachable() && self.handles.kafka.fatal().is_none(),
            now_ms(),
        )
    }

    pub async fn run(mut self, stop: CancellationToken) {
        info!(key = %self.key, ttl_s = self.settings.status_lease_ttl_secs(), "publishing host status to etcd");
        let mut backoff = self.settings.backoff_initial;
        loop {
            match self.session(&stop, &mut backoff).await {
                Ok(()) => return,
                Err(e) => {
                    self.handles.metrics.status_publish_failures.inc();
                    if self.healthy != Some(false) {
                        warn!(key = %self.key, "cannot publish host status to etcd ({e}); retrying in the background");
                        self.healthy = Some(false);
                    } else {
                        debug!(key = %self.key, "status publish still failing: {e}");
                    }
                    // The next session writes under a new lease whatever the last value was.
                    self.last = None;
                }
            }
            let jittered = backoff.mul_f64(0.5 + fastrand::f64());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(jittered) => {}
            }
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    /// One lease: grant, put, keep alive and update until something breaks (`Err`) or `stop` (`Ok`).
    async fn session(
        &mut self,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), PublishError> {
        let ttl_secs = self.settings.status_lease_ttl_secs();
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        let mut client = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = crate::config::source::connect(&self.settings) => c?,
        };
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let result = self
            .keep_publishing(&mut client, lease, ttl, stop, backoff)
            .await;
        if result.is_ok() {
            match tokio::time::timeout(REVOKE_TIMEOUT, client.lease_revoke(lease)).await {
                Ok(Ok(_)) => info!(key = %self.key, "status lease revoked; key removed"),
                Ok(Err(e)) => {
                    warn!(key = %self.key, "cannot revoke the status lease ({e}); the key goes when it expires")
                }
                Err(_) => {
                    warn!(key = %self.key, "revoking the status lease timed out; the key goes when it expires")
                }
            }
        }
        result
    }

    async fn keep_publishing(
        &mut self,
        client: &mut Client,
        lease: i64,
        ttl: Duration,
        stop: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), PublishError> {
        let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
        self.put_if_changed(client, lease).await?;
        *backoff = self.settings.backoff_initial;
        if self.healthy != Some(true) {
            info!(key = %self.key, lease, "host status published to etcd");
            self.healthy = Some(true);
        }
        let mut keep = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
        keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut update = tokio::time::interval(self.settings.status_interval);
        update.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answered = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = keep.tick() => {
                    if answered.elapsed() > ttl {
                        return Err(PublishError::KeepAliveSilent);
                    }
                    keeper.keep_alive().await?;
                }
                msg = answers.message() => match msg? {
                    None => return Err(PublishError::Ended),
                    Some(r) if r.ttl() <= 0 => return Err(PublishError::LeaseExpired),
                    Some(_) => answered = Instant::now(),
                },
                _ = update.tick() => self.put_if_changed(client, lease).await?,
            }
        }
    }

    async fn put_if_changed(
        &mut self,
        client: &mut Client,
        lease: i64,
    ) -> Result<(), PublishError> {
        let status = self.current();
        if self.last.as_ref().is_some_and(|l| l.same_as(&status)) {
            return Ok(());
        }
        let value = serde_json::to_string(&status).unwrap_or_default();
        client
            .put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        self.handles.metrics.status_publishes.inc();
        self.last = Some(status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::collect::parse_entries;

    fn identity() -> Identity {
        Identity {
            version: "1.2.3".into(),
            hostname: "web-1".into(),
            ip: "10.0.0.7".into(),
            started_unix_ms: 1_000,
            config_key: "collect_log_conf/10.0.0.7".into(),
        }
    }

    fn desired(json: &str) -> Desired {
        Desired {
            revision: 42,
            entries: parse_entries("k", 42, json.as_bytes(), &Default::default()).unwrap(),
            host_metrics: Vec::new(),
        }
    }

    fn open(path: &str, topic: &str, acked: u64, lag: u64) -> OpenFile {
        OpenFile {
            path: path.into(),
            topic: topic.into(),
            acked,
            lag,
        }
    }

    fn problem(error: &str, at_ms: u64) -> FileProblem {
        FileProblem {
            error: error.into(),
            at_ms,
        }
    }

    #[test]
    fn files_are_grouped_under_their_entry_with_lag_and_errors() {
        let d = desired(
            r#"[{"path":"/var/log/app/*.log","topic":"app","exclude":["*/debug.log"]},
                {"path":"/var/log/nginx/access.log","topic":"web"}]"#,
        );
        let source = SourceStatus {
            applied_revision: Some(42),
            last_error: Some("revision 43 rejected".into()),
            connected: true,
            from_saved: false,
        };
        let files = [
            open("/var/log/app/a.log", "app", 100, 5),
            open("/var/log/app/b.log", "app", 10, 20),
            open("/var/log/nginx/access.log", "web", 7, 0),
            // Still draining after its entry was removed: belongs to no entry.
            open("/var/log/old/x.log", "old", 0, 99),
        ];
        let problems = HashMap::from([
            (
                "/var/log/app/c.log".into(),
                problem("cannot open: permission denied", 5),
            ),
            (
                "/var/log/app/a.log".into(),
                problem("Kafka rejected a record: too large", 3),
            ),
        ]);
        let s = build(
            &identity(),
            &source,
            Some(&d),
            &files,
            &problems,
            true,
            9_000,
        );
        assert_eq!(
            (s.applied_revision, s.config_error.as_deref()),
            (Some(42), Some("revision 43 rejected"))
        );
        assert_eq!((s.version.as_str(), s.updated_unix_ms), ("1.2.3", 9_000));
        let app = &s.entries[0];
        assert_eq!((app.files_matched, app.bytes_behind), (3, 25));
        assert_eq!(
            app.last_error.as_deref(),
            Some("cannot open: permission denied"),
            "the most recent problem wins"
        );
        let order: Vec<&str> = app.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            order,
            [
                "/var/log/app/b.log",
                "/var/log/app/a.log",
                "/var/log/app/c.log"
            ],
            "largest lag first"
        );
        assert_eq!(
            app.files[1].error.as_deref(),
            Some("Kafka rejected a record: too large")
        );
        let web = &s.entries[1];
        assert_eq!(
            (
                web.files_matched,
                web.bytes_behind,
                web.last_error.as_deref()
            ),
            (1, 0, None)
        );
        assert_eq!((s.files(), s.bytes_behind()), (4, 25));
    }

    #[test]
    fn excluded_files_and_other_topics_are_not_counted() {
        let d = desired(r#"[{"path":"/l/*.log","topic":"t","exclude":["/l/skip.log"]}]"#);
        let files = [
            open("/l/skip.log", "t", 0, 1),
            open("/l/a.log", "other", 0, 1),
            open("/l/b.log", "t", 0, 1),
        ];
        let s = build(
            &identity(),
            &SourceStatus::default(),
            Some(&d),
            &files,
            &HashMap::new(),
            true,
            0,
        );
        assert_eq!(s.entries[0].files_matched, 1);
        assert_eq!(s.entries[0].files[0].path, "/l/b.log");
    }

    #[test]
    fn file_list_is_capped_but_counted_in_full() {
        let d = desired(r#"[{"path":"/l/*.log","topic":"t"}]"#);
        let files: Vec<OpenFile> = (0..MAX_FILES_PER_ENTRY as u64 + 10)
            .map(|i| open(&format!("/l/{i}.log"), "t", 0, i))
            .collect();
        let s = build(
            &identity(),
            &SourceStatus::default(),
            Some(&d),
            &files,
            &HashMap::new(),
            true,
            0,
        );
        let e = &s.entries[0];
        assert_eq!(e.files_matched, MAX_FILES_PER_ENTRY + 10);
        assert_eq!(e.files.len(), MAX_FILES_PER_ENTRY);
        assert_eq!(e.files[0].bytes_behind, MAX_FILES_PER_ENTRY as u64 + 9);
    }

    #[test]
    fn no_configuration_yet_gives_no_entries() {
        let s = build(
            &identity(),
            &SourceStatus::default(),
            None,
            &[open("/a", "t", 0, 1)],
            &HashMap::new(),
            false,
            0,
        );
        assert!(s.entries.is_empty());
        assert_eq!((s.applied_revision, s.kafka_reachable), (None, false));
    }

    #[test]
    fn only_the_write_time_is_ignored_when_comparing() {
        let a = build(
            &identity(),
            &SourceStatus::default(),
            None,
            &[],
            &HashMap::new(),
            true,
            1,
        );
        let b = HostStatus {
            updated_unix_ms: 2,
            ..a.clone()
        };
        assert!(a.same_as(&b));
        let c = HostStatus {
            kafka_reachable: false,
            ..a.clone()
        };
        assert!(!a.same_as(&c));
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_and_unknown_fields() {
        let d = desired(r#"[{"path":"/l/a.log","topic":"t"}]"#);
        let s = build(
            &identity(),
            &SourceStatus::default(),
            Some(&d),
            &[open("/l/a.log", "t", 3, 4)],
            &HashMap::new(),
            true,
            5,
        );
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HostStatus>(&text).unwrap(), s);
        let partial: HostStatus =
            serde_json::from_str(r#"{"hostname":"h","future_field":1}"#).unwrap();
        assert_eq!((partial.hostname.as_str(), partial.entries.len()), ("h", 0));
    }
}
