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

/// Counters of the record stage (decode, filter) and the read throttle of one topic, resolved once
/// per entry or file and bumped per batch.
#[derive(Clone, Debug, Default)]
pub struct RecordCounters {
    pub decode_errors: Counter,
    pub records_filtered: Counter,
    pub throttled_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

pub struct Metrics {
    registry: Registry,
    decode_errors: Family<TopicLabel, Counter>,
    records_filtered: Family<TopicLabel, Counter>,
    throttled_seconds: Family<TopicLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub files_ignored: Counter,
    lines_read: Family<TopicLabel, Counter>,
    bytes_read: Family<TopicLabel, Counter>,
    lines_acked: Family<TopicLabel, Counter>,
    bytes_acked: Family<TopicLabel, Counter>,
    pub records_in_flight: Gauge,
    delivery_errors: Family<KindLabel, Counter>,
    records_skipped: Family<TopicLabel, Counter>,
    pub files_open: Gauge,
    pub rotations: Counter,
    /// Live files closed by `tail.close_inactive_ms` (opened again when they change).
    pub files_closed_inactive: Counter,
    /// CPU time spent expanding entries and checking what they match (discovery's scans).
    pub discovery_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Directories discovery listed (read every name of): only those that changed, on a rescan.
    pub discovery_dirs_listed: Counter,
    pub truncations: Counter,
    pub long_lines_split: Counter,
    pub partial_lines_flushed: Counter,
    pub checkpoint_writes: Counter,
    pub checkpoint_snapshots: Counter,
    pub checkpoint_failures: Counter,
    pub etcd_watch_restarts: Counter,
    pub config_revision: Gauge,
    pub config_rejected: Counter,
    pub file_open_errors: Counter,
    pub files_refused: Counter,
    pub checkpoint_records_gone: Counter,
    file_lag_bytes: Family<PathLabel, Gauge>,
    /// Series of `file_lag_bytes` removed so far: a holder of a kept gauge fetches it again only
    /// when this moved (see [`Metrics::file_lag_gauge`]).
    lag_series_removed: std::sync::atomic::AtomicU64,
    pub kafka_reachable: Gauge,
    pub status_publishes: Counter,
    pub status_publish_failures: Counter,
    pub start_time_seconds: Gauge,
    /// Host metrics and their InfluxDB writer (see [`HostMetricsCounters`]).
    pub host_metrics: HostMetricsCounters,
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
    /// Expected for a while (a literal path not created yet): logged once, not reported.
    pub waiting: bool,
}

impl Metrics {
    pub fn new(per_file: bool) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("logagent");
        let m = Metrics {
            decode_errors: Family::default(),
            records_filtered: Family::default(),
            throttled_seconds: Family::default(),
            files_ignored: Counter::default(),
            lines_read: Family::default(),
            bytes_read: Family::default(),
            lines_acked: Family::default(),
            bytes_acked: Family::default(),
            records_in_flight: Gauge::default(),
            delivery_errors: Family::default(),
            records_skipped: Family::default(),
            files_open: Gauge::default(),
            rotations: Counter::default(),
            files_closed_inactive: Counter::default(),
            discovery_seconds: Counter::default(),
            discovery_dirs_listed: Counter::default(),
            truncations: Counter::default(),
            long_lines_split: Counter::default(),
            partial_lines_flushed: Counter::default(),
            checkpoint_writes: Counter::default(),
            checkpoint_snapshots: Counter::default(),
            checkpoint_failures: Counter::default(),
            etcd_watch_restarts: Counter::default(),
            config_revision: Gauge::default(),
            config_rejected: Counter::default(),
            file_open_errors: Counter::default(),
            files_refused: Counter::default(),
            checkpoint_records_gone: Counter::default(),
            file_lag_bytes: Family::default(),
            lag_series_removed: Default::default(),
            kafka_reachable: Gauge::default(),
            status_publishes: Counter::default(),
            status_publish_failures: Counter::default(),
            start_time_seconds: Gauge::default(),
            host_metrics: HostMetricsCounters::default(),
            kafka_requests: Counter::default(),
            file_events_degraded: Gauge::default(),
            per_file,
            file_problems: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("lines_read", "Lines read from files", m.lines_read.clone());
        r.register(
            "decode_errors",
            "Invalid byte sequences replaced by U+FFFD while decoding records to UTF-8",
            m.decode_errors.clone(),
        );
        r.register(
            "records_filtered",
            "Records dropped by an entry's include_lines/exclude_lines (their offsets still advance)",
            m.records_filtered.clone(),
        );
        r.register(
            "throttled_seconds",
            "Time reads waited for an entry's max_bytes_per_s (nothing is dropped)",
            m.throttled_seconds.clone(),
        );
        r.register(
            "files_ignored",
            "Files not read because they were older than their entry's ignore_older_ms when found",
            m.files_ignored.clone(),
        );
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
            "files_closed_inactive",
            "Live files closed after tail.close_inactive_ms without new data, every byte acknowledged",
            m.files_closed_inactive.clone(),
        );
        r.register(
            "discovery_seconds",
            "CPU time of discovery scans (expanding paths and globs, checking each match)",
            m.discovery_seconds.clone(),
        );
        r.register(
            "discovery_dirs_listed",
            "Directories discovery read every name of (a rescan lists only directories that changed)",
            m.discovery_dirs_listed.clone(),
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
            "checkpoint_snapshots",
            "Checkpoint saves that wrote a whole snapshot (the others appended to the journal)",
            m.checkpoint_snapshots.clone(),
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
        m.host_metrics.register(r);
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

    /// Resolves a topic's record-stage and throttle counters once.
    pub fn records(&self, topic: &str) -> RecordCounters {
        let l = TopicLabel {
            topic: topic.to_owned(),
        };
        RecordCounters {
            decode_errors: self.decode_errors.get_or_create(&l).clone(),
            records_filtered: self.records_filtered.get_or_create(&l).clone(),
            throttled_seconds: self.throttled_seconds.get_or_create(&l).clone(),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The lag gauge of `path`'s series (none with per-file metrics off). Callers keep it and set it
    /// as the lag moves: making the label at every change was a fifth of the checkpoint pass with
    /// 10,000 trickling files. A kept gauge is detached once its series is cleared (a rotated file
    /// released at the path), so callers fetch it again after [`Metrics::lag_series_removed`] moved.
    pub fn file_lag_gauge(&self, path: &Path) -> Option<Gauge> {
        self.per_file.then(|| {
            let l = PathLabel {
                path: path.display().to_string(),
            };
            self.file_lag_bytes.get_or_create(&l).clone()
        })
    }

    /// Records `error` as the path's latest problem; false when it already was (so the event that
    /// called it neither logs nor counts the same problem twice).
    fn note_problem(&self, path: &Path, error: &str, waiting: bool) -> bool {
        let mut problems = self.problems();
        if problems.get(path).is_some_and(|p| p.error == error) {
            return false;
        }
        let problem = FileProblem {
            error: error.to_owned(),
            at_ms: crate::clock::now_ms(),
            waiting,
        };
        problems.insert(path.to_path_buf(), problem);
        true
    }

    fn problems(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, FileProblem>> {
        self.file_problems.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest problem of every file that has one and has not been opened since (a path merely
    /// waiting to appear is not a problem to report).
    pub fn file_problems(&self) -> HashMap<PathBuf, FileProblem> {
        self.problems()
            .iter()
            .filter(|(_, p)| !p.waiting)
            .map(|(path, p)| (path.clone(), p.clone()))
            .collect()
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
            self.lag_series_removed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How many lag series were removed so far: kept gauges may be detached when it moved.
    pub fn lag_series_removed(&self) -> u64 {
        self.lag_series_removed
            .load(std::sync::atomic::Ordering::Relaxed)
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

    pub fn file_closed_inactive(
        &self,
        path: &Path,
        key: impl std::fmt::Display,
        offset: u64,
        why: &str,
    ) {
        self.files_closed_inactive.inc();
        self.clear_file_lag(path);
        info!(path = %path.display(), file = %key, offset,
              "closed idle file ({why}); reopened when it changes");
    }

    pub fn file_rotated(&self, path: &Path, key: impl std::fmt::Display) {
        self.rotations.inc();
        info!(path = %path.display(), file = %key, "file rotated or deleted; reading it to its end");
    }

    pub fn file_truncated(&self, path: &Path, size: u64, offset: u64) {
        self.truncations.inc();
        warn!(path = %path.display(), size, offset, "file truncated (size below read offset); reading from 0");
    }

    /// A matched path cannot be opened or read (retried at every scan; logged and counted when the
    /// cause changes).
    pub fn file_unreadable(&self, path: &Path, cause: &str) {
        if self.note_problem(path, cause, false) {
            self.file_open_errors.inc();
            warn!(path = %path.display(), "cannot read matched file: {cause}; will retry");
        }
    }

    /// The read policy forbids a matched path (logged and counted when the cause changes).
    pub fn file_refused(&self, path: &Path, cause: &str) {
        if self.note_problem(path, cause, false) {
            self.files_refused.inc();
            warn!(path = %path.display(), "not reading matched path: {cause}");
        }
    }

    /// An entry's literal path does not exist yet (logged once until something else happens to it).
    pub fn file_waiting(&self, path: &Path) {
        if self.note_problem(path, "waiting for the file to appear", true) {
            info!(path = %path.display(), "waiting for the file to appear");
        }
    }

    pub fn long_line_split(&self, path: &Path, count: u64, max: usize) {
        self.long_lines_split.inc_by(count);
        warn!(path = %path.display(), count, max_line_bytes = max, "line longer than max_line_bytes cut into chunks");
    }

    /// A file found older than its entry's `ignore_older_ms`: not read until it changes; shown in
    /// status as the file's problem.
    pub fn file_ignored(&self, path: &Path, idle_ms: u64, ignore_older_ms: u64) {
        self.files_ignored.inc();
        let why = format!(
            "ignored: not modified for {}s (ignore_older_ms {ignore_older_ms}); read once it changes",
            idle_ms / 1000
        );
        info!(path = %path.display(), "{why}");
        self.note_problem(path, &why, false);
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
        self.note_problem(
            Path::new(path),
            &format!("Kafka rejected a record: {error}"),
            false,
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

    /// A checkpoint save went to disk: a whole snapshot, or lines appended to the journal.
    pub fn checkpoint_written(&self, snapshot: bool) {
        self.checkpoint_writes.inc();
        if snapshot {
            self.checkpoint_snapshots.inc();
        }
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabel {
    pub output: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Host metrics: points sampled and where they went, points dropped and why, and the InfluxDB
/// writer's progress. Kafka-bound points are also counted by the topic's `lines_*` counters.
#[derive(Clone, Debug, Default)]
pub struct HostMetricsCounters {
    pub points: Family<OutputLabel, Counter>,
    pub points_dropped: Family<ReasonLabel, Counter>,
    pub slow_samples: Counter,
    pub influxdb_points_written: Counter,
    pub influxdb_write_failures: Counter,
    pub influxdb_buffered_points: Gauge,
    /// When each drop reason was last logged: an outage drops points every interval, and one
    /// warning a minute says as much as one per sample (the counter has every point).
    drops_logged: Arc<Mutex<HashMap<String, std::time::Instant>>>,
}

/// At most one drop warning per reason in this long.
const DROP_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl HostMetricsCounters {
    fn register(&self, r: &mut Registry) {
        r.register(
            "host_metrics_points",
            "Host-metric points sampled, by output (kafka, influxdb)",
            self.points.clone(),
        );
        r.register(
            "host_metrics_points_dropped",
            "Host-metric points dropped, by reason (kafka_backlog, influxdb_buffer_full, influxdb_rejected, shutdown)",
            self.points_dropped.clone(),
        );
        r.register(
            "host_metrics_slow_samples",
            "Host-metric samples that took longer than their interval (ticks in between are skipped)",
            self.slow_samples.clone(),
        );
        r.register(
            "influxdb_points_written",
            "Points InfluxDB accepted",
            self.influxdb_points_written.clone(),
        );
        r.register(
            "influxdb_write_failures",
            "InfluxDB writes that failed (retried with backoff unless refused)",
            self.influxdb_write_failures.clone(),
        );
        r.register(
            "influxdb_buffered_points",
            "Points waiting for InfluxDB (bounded by influxdb.buffer_max_points)",
            self.influxdb_buffered_points.clone(),
        );
    }
}

impl Metrics {
    pub fn host_metrics_sampled(&self, output: &str, points: usize) {
        self.host_metrics
            .points
            .get_or_create(&OutputLabel {
                output: output.to_owned(),
            })
            .inc_by(points as u64);
        tracing::debug!(output, points, "host metrics sampled");
    }

    /// Points given up: metrics, unlike lines, are not kept forever (see the README).
    pub fn host_metrics_dropped(&self, reason: &str, points: usize) {
        self.host_metrics
            .points_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc_by(points as u64);
        let now = std::time::Instant::now();
        let mut logged = self
            .host_metrics
            .drops_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = logged
            .get(reason)
            .is_none_or(|at| now.duration_since(*at) >= DROP_LOG_EVERY);
        if due {
            logged.insert(reason.to_owned(), now);
            warn!(reason, points, "host-metric points dropped (logged at most once a minute per reason; logagent_host_metrics_points_dropped_total counts them all)");
        }
    }

    pub fn host_metrics_slow_sample(&self, took: std::time::Duration) {
        self.host_metrics.slow_samples.inc();
        warn!(took_ms = took.as_millis() as u64, "host metrics sample took longer than its interval (a hung mount?); ticks in between are skipped");
    }

    /// A batch reached InfluxDB; `recovered` after failures.
    pub fn influxdb_written(&self, points: usize, recovered: bool) {
        self.host_metrics
            .influxdb_points_written
            .inc_by(points as u64);
        if recovered {
            info!(points, "InfluxDB accepts points again");
        }
    }

    /// A write failed; `retry` is the backoff and whether this is the first failure in a row
    /// (logged as a warning; the following ones at debug, so an outage logs once, not per retry).
    pub fn influxdb_write_failed(&self, err: &str, retry: Option<(std::time::Duration, bool)>) {
        self.host_metrics.influxdb_write_failures.inc();
        match retry {
            Some((backoff, true)) => warn!(
                retry_in_ms = backoff.as_millis() as u64,
                "InfluxDB write failed ({err}); points stay buffered (oldest dropped when full) and the write is retried"
            ),
            Some((backoff, false)) => tracing::debug!(
                retry_in_ms = backoff.as_millis() as u64,
                "InfluxDB write failed again ({err})"
            ),
            None => error!("InfluxDB write failed: {err}"),
        }
    }

    pub fn influxdb_buffered(&self, points: usize) {
        self.host_metrics
            .influxdb_buffered_points
            .set(points as i64);
    }
}
