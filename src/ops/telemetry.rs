//! Metrics and the events that move them: every metric name lives here, and each observable event is
//! one method that logs and counts together, so a log line and its counter never disagree.
//!
//! Hot-path counters (lines, bytes) are resolved once per file route into plain `Counter` handles and
//! bumped once per batch, never per line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

/// Counters of one topic, bumped per batch.
#[derive(Clone, Debug, Default)]
pub struct TopicCounters {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub lines_acked: Counter,
    pub bytes_acked: Counter,
}

pub struct Metrics {
    registry: Registry,
    lines_read: Family<TopicLabel, Counter>,
    bytes_read: Family<TopicLabel, Counter>,
    lines_acked: Family<TopicLabel, Counter>,
    bytes_acked: Family<TopicLabel, Counter>,
    pub records_in_flight: Gauge,
    delivery_errors: Family<KindLabel, Counter>,
    records_skipped: Family<TopicLabel, Counter>,
    pub files_open: Gauge,
    pub rotations: Counter,
    pub truncations: Counter,
    pub long_lines_split: Counter,
    pub partial_lines_flushed: Counter,
    pub checkpoint_writes: Counter,
    pub checkpoint_failures: Counter,
    pub etcd_watch_restarts: Counter,
    pub config_revision: Gauge,
    pub config_rejected: Counter,
    pub file_open_errors: Counter,
    pub files_refused: Counter,
    pub checkpoint_records_gone: Counter,
    file_lag_bytes: Family<PathLabel, Gauge>,
    pub kafka_reachable: Gauge,
    pub status_publishes: Counter,
    pub status_publish_failures: Counter,
    pub start_time_seconds: Gauge,
    /// Requests sent to Kafka brokers, from librdkafka's statistics (what a trickle costs the cluster).
    pub kafka_requests: Counter,
    /// 1 once inotify instances or watches ran out (files are then picked up by polling).
    pub file_events_degraded: Gauge,
    per_file: bool,
    /// Latest problem per file path (unreadable, record rejected), for the status published to etcd.
    file_problems: Mutex<HashMap<PathBuf, FileProblem>>,
}

/// The latest problem seen with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub error: String,
    pub at_ms: u64,
}

impl Metrics {
    pub fn new(per_file: bool) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("logagent");
        let m = Metrics {
            lines_read: Family::default(),
            bytes_read: Family::default(),
            lines_acked: Family::default(),
            bytes_acked: Family::default(),
            records_in_flight: Gauge::default(),
            delivery_errors: Family::default(),
            records_skipped: Family::default(),
            files_open: Gauge::default(),
            rotations: Counter::default(),
            truncations: Counter::default(),
            long_lines_split: Counter::default(),
            partial_lines_flushed: Counter::default(),
            checkpoint_writes: Counter::default(),
            checkpoint_failures: Counter::default(),
            etcd_watch_restarts: Counter::default(),
            config_revision: Gauge::default(),
            config_rejected: Counter::default(),
            file_open_errors: Counter::default(),
            files_refused: Counter::default(),
            checkpoint_records_gone: Counter::default(),
            file_lag_bytes: Family::default(),
            kafka_reachable: Gauge::default(),
            status_publishes: Counter::default(),
            status_publish_failures: Counter::default(),
            start_time_seconds: Gauge::default(),
            kafka_requests: Counter::default(),
            file_events_degraded: Gauge::default(),
            per_file,
            file_problems: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("lines_read", "Lines read from files", m.lines_read.clone());
        r.register(
            "bytes_read",
            "Bytes of lines read from files",
            m.bytes_read.clone(),
        );
        r.register(
            "lines_acked",
            "Lines acknowledged by Kafka",
            m.lines_acked.clone(),
        );
        r.register(
            "bytes_acked",
            "Bytes of lines acknowledged by Kafka",
            m.bytes_acked.clone(),
        );
        r.register(
            "records_in_flight",
            "Records handed to the producer and not yet acknowledged",
            m.records_in_flight.clone(),
        );
        r.register(
            "delivery_errors",
            "Delivery errors by kind",
            m.delivery_errors.clone(),
        );
        r.register(
            "records_skipped",
            "Records given up after a permanent Kafka error",
            m.records_skipped.clone(),
        );
        r.register(
            "files_open",
            "Files currently open for reading",
            m.files_open.clone(),
        );
        r.register(
            "rotations",
            "Rotations (rename or delete) seen",
            m.rotations.clone(),
        );
        r.register(
            "truncations",
            "Truncations seen (size fell below the read offset)",
            m.truncations.clone(),
        );
        r.register(
            "long_lines_split",
            "Lines longer than max_line_bytes cut into chunks",
            m.long_lines_split.clone(),
        );
        r.register(
            "partial_lines_flushed",
            "Lines without a final newline flushed after rotation or idle timeout",
            m.partial_lines_flushed.clone(),
        );
        r.register(
            "checkpoint_writes",
            "Checkpoint files written",
            m.checkpoint_writes.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoint writes that failed",
            m.checkpoint_failures.clone(),
        );
        r.register(
            "etcd_watch_restarts",
            "Times the etcd watch was re-established",
            m.etcd_watch_restarts.clone(),
        );
        r.register(
            "config_revision",
            "etcd revision of the collect configuration applied",
            m.config_revision.clone(),
        );
        r.register(
            "config_rejected",
            "Collect configurations rejected as invalid",
            m.config_rejected.clone(),
        );
        r.register(
            "file_open_errors",
            "Failures to open or read a matched file",
            m.file_open_errors.clone(),
        );
        r.register(
            "files_refused",
            "Matched paths the local read policy refused (agent.allowed_paths, built-in deny list)",
            m.files_refused.clone(),
        );
        r.register(
            "checkpoint_records_gone",
            "Checkpoint records found without their file or without an entry owning their path (they expire after checkpoint.gone_retention_ms)",
            m.checkpoint_records_gone.clone(),
        );
        r.register(
            "file_lag_bytes",
            "Per file: size minus acknowledged offset",
            m.file_lag_bytes.clone(),
        );
        r.register(
            "kafka_reachable",
            "1 while at least one Kafka broker answers, else 0",
            m.kafka_reachable.clone(),
        );
        r.register(
            "status_publishes",
            "Host status values written to etcd",
            m.status_publishes.clone(),
        );
        r.register(
            "status_publish_failures",
            "Failed attempts to publish the host status to etcd",
            m.status_publish_failures.clone(),
        );
        r.register(
            "start_time_seconds",
            "Unix time the agent started",
            m.start_time_seconds.clone(),
        );
        r.register(
            "kafka_requests",
            "Requests sent to Kafka brokers (librdkafka statistics, updated every few seconds)",
            m.kafka_requests.clone(),
        );
        r.register(
            "file_events_degraded",
            "1 once inotify instances or watches ran out: files without events are picked up by polling",
            m.file_events_degraded.clone(),
        );
        m.start_time_seconds
            .set((crate::clock::now_ms() / 1000) as i64);
        Arc::new(Metrics { registry, ..m })
    }

    /// Resolves a topic's counters once, for a route that bumps them per batch.
    pub fn topic(&self, topic: &str) -> TopicCounters {
        let l = TopicLabel {
            topic: topic.to_owned(),
        };
        TopicCounters {
            lines_read: self.lines_read.get_or_create(&l).clone(),
            bytes_read: self.bytes_read.get_or_create(&l).clone(),
            lines_acked: self.lines_acked.get_or_create(&l).clone(),
            bytes_acked: self.bytes_acked.get_or_create(&l).clone(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn set_file_lag(&self, path: &Path, lag: u64) {
        if self.per_file {
            let l = PathLabel {
                path: path.display().to_string(),
            };
            self.file_lag_bytes.get_or_create(&l).set(lag as i64);
        }
    }

    fn note_file_problem(&self, path: &Path, error: &str) {
        let problem = FileProblem {
            error: error.to_owned(),
            at_ms: crate::clock::now_ms(),
        };
        self.problems().insert(path.to_path_buf(), problem);
    }

    fn problems(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, FileProblem>> {
        self.file_problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest problem of every file that has one and has not been opened since.
    pub fn file_problems(&self) -> HashMap<PathBuf, FileProblem> {
        self.problems().clone()
    }

    /// Forgets the problem of a path no entry matches anymore.
    pub fn clear_file_problem(&self, path: &Path) {
        self.problems().remove(path);
    }

    pub fn clear_file_lag(&self, path: &Path) {
        if self.per_file {
            self.file_lag_bytes.remove(&PathLabel {
                path: path.display().to_string(),
            });
        }
    }

    // ---- events: each logs once and counts ----

    pub fn file_opened(&self, path: &Path, key: impl std::fmt::Display, offset: u64, why: &str) {
        self.problems().remove(path);
        info!(path = %path.display(), file = %key, offset, "tailing file ({why})");
    }

    pub fn file_released(&self, path: &Path, key: impl std::fmt::Display, offset: u64, why: &str) {
        self.clear_file_lag(path);
        self.problems().remove(path);
        info!(path = %path.display(), file = %key, offset, "released file ({why})");
    }

    pub fn file_rotated(&self, path: &Path, key: impl std::fmt::Display) {
        self.rotations.inc();
        info!(path = %path.display(), file = %key, "file rotated or deleted; reading it to its end");
    }

    pub fn file_truncated(&self, path: &Path, size: u64, offset: u64) {
        self.truncations.inc();
        warn!(path = %path.display(), size, offset, "file truncated (size below read offset); reading from 0");
    }

    pub fn file_unreadable(&self, path: &Path, cause: &str) {
        self.file_open_errors.inc();
        self.note_file_problem(path, cause);
        warn!(path = %path.display(), "cannot read matched file: {cause}; will retry");
    }

    pub fn file_refused(&self, path: &Path, cause: &str) {
        self.files_refused.inc();
        self.note_file_problem(path, cause);
        warn!(path = %path.display(), "not reading matched path: {cause}");
    }

    pub fn long_line_split(&self, path: &Path, count: u64, max: usize) {
        self.long_lines_split.inc_by(count);
        warn!(path = %path.display(), count, max_line_bytes = max, "line longer than max_line_bytes cut into chunks");
    }

    pub fn partial_line_flushed(&self, path: &Path, bytes: usize, why: &str) {
        self.partial_lines_flushed.inc();
        info!(path = %path.display(), bytes, "line without final newline shipped ({why})");
    }

    pub fn record_skipped(&self, topic: &str, path: &str, error: &str) {
        self.records_skipped
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc();
        self.note_file_problem(
            Path::new(path),
            &format!("Kafka rejected a record: {error}"),
        );
        error!(
            topic,
            path,
            "Kafka permanently rejected a record; skipped it (policy on_fatal_error=skip): {error}"
        );
    }

    /// The producer hit a fatal error: nothing more can be delivered by this process.
    pub fn producer_fatal(&self, reason: &str) {
        self.delivery_error("Fatal");
        error!("Kafka producer fatal error: {reason}; stopping reading, keeping the checkpoint at what Kafka acknowledged, and exiting non-zero so the service manager restarts the agent");
    }

    /// Kafka does not know a topic an entry sends to: its lines wait in their files until it exists.
    pub fn topic_unknown(&self, topic: &str) {
        self.delivery_error("UnknownTopic");
        warn!(topic, "Kafka does not know this topic (auto-creation off?); its lines wait in their files until it exists, and shipping waits with them");
    }

    pub fn delivery_error(&self, kind: &str) {
        self.delivery_errors
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn records_expiring(&self, count: usize) {
        self.checkpoint_records_gone.inc_by(count as u64);
        info!(count, "checkpoint records whose file is gone or that no entry owns anymore: they expire after checkpoint.gone_retention_ms");
    }

    pub fn checkpoint_written(&self) {
        self.checkpoint_writes.inc();
    }

    pub fn checkpoint_failed(&self, path: &Path, err: &dyn std::fmt::Display) {
        self.checkpoint_failures.inc();
        error!(path = %path.display(), "checkpoint write failed (offsets stay in memory, retried): {err}");
    }

    pub fn etcd_watch_restarted(&self, why: &str) {
        self.etcd_watch_restarts.inc();
        warn!("etcd watch lost ({why}); reading the key again");
    }

    pub fn config_applied(&self, key: &str, revision: i64, entries: usize) {
        self.config_revision.set(revision);
        info!(key, revision, entries, "collect configuration applied");
    }

    pub fn config_rejected(&self, err: &dyn std::fmt::Display) {
        self.config_rejected.inc();
        error!("collect configuration rejected, keeping the last good one: {err}");
    }
}
