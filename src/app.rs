//! Wiring: builds every part from the settings, runs them, and shuts them down in order.
//!
//! Shutdown order, each step bounded: stop reading (config source, reconciler, tailers) → stop feeding
//! the producer → flush deliveries within `shutdown.grace` → final checkpoint of what was acknowledged.
//! Records not acknowledged by then are read again at the next start; nothing in between is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::read_policy::ReadPolicy;
use crate::config::settings::Settings;
use crate::config::source::{ConfigSource, SourceStatus};
pub use crate::handles::Handles;
use crate::ops::status::Publisher;
use crate::reconcile::{self, Supervisor};
use crate::sink::Sink;
use crate::state::checkpoint::{CheckpointStore, JournalFound};
use crate::state::registry::{self, Registry};
use crate::tail::applied::AppliedEntries;
use crate::tail::discover::Shared;
use crate::tail::rotated::RotatedFiles;
use crate::tail::watch::WatchHub;
use crate::tail::TailOptions;
use crate::telemetry::Metrics;

#[derive(thiserror::Error, Debug)]
pub enum AppError {
    #[error(transparent)]
    Checkpoint(#[from] crate::state::checkpoint::CheckpointError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Http(#[from] crate::ops::http::HttpError),
    /// Exits non-zero so that systemd (Restart=on-failure) starts a fresh producer: a fatal error of
    /// the idempotent producer cannot be recovered in place.
    #[error("the Kafka producer hit a fatal error ({0}); stopped with the checkpoint at what Kafka acknowledged")]
    ProducerFatal(String),
    #[error(transparent)]
    NoIp(#[from] crate::config::host::HostError),
    #[error("cannot start the runtime for file I/O: {0}")]
    FilesRuntime(std::io::Error),
}

/// How often the registry checks for records whose file or entry is gone.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The runtime discoverers, tailers and the sink run on ("logagent-files" threads): their file I/O
/// is synchronous, so a hung mount blocks these threads, never the ones running the watchdog, HTTP
/// and etcd tasks. The sink is here too because every batch a tailer sends wakes it: on the same
/// runtime that wake is a push to the worker's own queue; across runtimes it was an unpark of a
/// parked thread per batch (idle1000: 4.8–5.1 % of a core, 3.7–4.1 % here; hot: 1.44–1.58 against
/// 1.22–1.26 CPU-s per million lines). It only sends what the tailers read, so a hung mount that
/// holds every worker stops it no more than it stops reading. Shut down in the background when
/// dropped (a thread stuck in a read cannot be joined).
struct FilesRuntime(Option<tokio::runtime::Runtime>);

impl FilesRuntime {
    /// One worker per core, at least 2 and at most 8.
    fn threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
    }

    fn new() -> std::io::Result<FilesRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(Self::threads())
            .thread_name("logagent-files")
            .enable_all()
            .build()?;
        Ok(FilesRuntime(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
            .clone()
    }
}

impl Drop for FilesRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs the agent until `shutdown` is cancelled, then shuts down in order.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), AppError> {
    let started_unix_ms = crate::clock::now_ms();
    let (ip, why) = crate::config::host::agent_ip(settings.agent.ip)?;
    let key = crate::config::settings::EtcdSettings::render_key(
        &settings.etcd.key_template,
        &ip.to_string(),
        &settings.agent.hostname,
    );
    info!(%ip, key, "agent identity ({why})");

    // Bound before anything starts, so a taken port fails the start instead of going unnoticed.
    let listener = match settings.http.listen {
        Some(addr) => Some(crate::ops::http::bind(addr).await?),
        None => None,
    };
    let (store, loaded) = CheckpointStore::open(&settings.agent.state_dir)?;
    if let Some(aside) = &loaded.set_aside {
        error!(moved_to = %aside.moved_to.display(), "checkpoint file was unreadable and was set aside ({}); files are matched again by identity", aside.reason);
    }
    match &loaded.journal {
        Some(JournalFound::Torn {
            changes,
            ignored_bytes,
            reason,
        }) => warn!(path = %store.journal_path().display(), changes, ignored_bytes,
                    "checkpoint journal ends in a torn or unreadable line (a crash while appending?): replayed up to it ({reason})"),
        Some(JournalFound::Stale) => info!(path = %store.journal_path().display(),
                    "checkpoint journal extends another snapshot (a crash while compacting, or an older agent wrote the checkpoint): ignored"),
        Some(JournalFound::SetAside(aside)) => error!(moved_to = %aside.moved_to.display(),
                    "checkpoint journal was unreadable and was set aside ({}); the checkpoint file alone is used", aside.reason),
        Some(JournalFound::Replayed { .. }) | None => {}
    }
    let journal_changes = match loaded.journal {
        Some(JournalFound::Replayed { changes } | JournalFound::Torn { changes, .. }) => changes,
        _ => 0,
    };
    info!(path = %store.path().display(), files = loaded.files.len(), journal_changes, "checkpoint loaded");
    let store = Arc::new(store);
    let metrics = Metrics::new(settings.http.per_file_metrics);
    let registry = Registry::new(loaded.files, metrics.clone());
    registry.set_max_open(settings.tail.max_open_files);

    let mut sink = Sink::new(&settings.producer_properties(), metrics.clone())?;
    sink.set_idle_flush(settings.kafka.idle_flush);
    let producer = sink.producer();
    let kafka = sink.health.clone();
    let (tx, rx) = mpsc::channel(settings.tail.channel_capacity);
    // Host-metric points reach Kafka through the same channel and producer as lines.
    let host_metrics_tx = tx.clone();
    let files_rt = FilesRuntime::new().map_err(AppError::FilesRuntime)?;
    let policy = Arc::new(ReadPolicy::from_settings(&settings));

    let t = &settings.tail;
    let shared = Arc::new(Shared {
        registry: registry.clone(),
        hub: WatchHub::new(),
        metrics: metrics.clone(),
        tx,
        opts: TailOptions::from_settings(t),
        glob_rescan: t.glob_rescan,
        hostname: settings.agent.hostname.clone(),
        ip: ip.to_string(),
        applied: Arc::new(AppliedEntries::load(&settings.agent.state_dir)),
        rotated: RotatedFiles::new(t.max_rotated_files),
        files: files_rt.handle(),
        policy,
    });

    shared.hub.report_to(metrics.file_events_degraded.clone());
    let (desired_tx, desired_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(SourceStatus::default());
    let source = ConfigSource {
        settings: settings.etcd.clone(),
        key: key.clone(),
        limits: crate::config::collect::EntryLimits {
            max_line_bytes: settings.tail.max_line_bytes_limit,
            influxdb: settings.influxdb.is_some(),
        },
        state_dir: settings.agent.state_dir.clone(),
        metrics: metrics.clone(),
        desired: desired_tx,
        status: status_tx,
    };
    let handles = Handles {
        metrics: metrics.clone(),
        registry: registry.clone(),
        source_status: status_rx,
        kafka: kafka.clone(),
        ip: ip.to_string(),
        hostname: settings.agent.hostname.clone(),
        key: key.clone(),
        started_unix_ms,
    };
    let publisher = Publisher::new(settings.etcd.clone(), handles.clone(), desired_rx.clone());

    let reading = CancellationToken::new();
    // "Stop producing": the ordered shutdown's step, or a fatal producer error, whichever comes first.
    let sink_stop = kafka.fatal_signal().child_token();
    let ck_stop = CancellationToken::new();
    let status_stop = CancellationToken::new();
    let sweep_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let probe_task = tokio::spawn(crate::ops::kafka_probe::run(
        producer.clone(),
        kafka.clone(),
        sink_stop.clone(),
    ));
    let http_task = listener.map(|l| {
        tokio::spawn(crate::ops::http::serve(
            l,
            handles.clone(),
            shutdown.clone(),
            http_stop.clone(),
        ))
    });
    let status_task = tokio::spawn(publisher.run(status_stop.clone()));
    let source_task = tokio::spawn(source.run(reading.clone()));
    let influx_stop = CancellationToken::new();
    let influx = settings.influxdb.as_ref().map(|s| {
        let handle =
            crate::host_metrics::influx::InfluxHandle::new(s.buffer_max_points, metrics.clone());
        let task = tokio::spawn(crate::host_metrics::influx::run_writer(
            s.clone(),
            handle.clone(),
            influx_stop.clone(),
            settings.shutdown.grace,
        ));
        (handle, task)
    });
    let host_metrics = crate::host_metrics::Runner::new(Arc::new(crate::host_metrics::Context {
        tx: host_metrics_tx,
        metrics: metrics.clone(),
        tags: crate::host_metrics::sample::HostTags {
            host: settings.agent.hostname.clone(),
            ip: ip.to_string(),
        },
        influx: influx.as_ref().map(|(h, _)| h.clone()),
    }));
    let supervisor =
        Supervisor::new(shared.clone(), settings.shutdown.grace).with_host_metrics(host_metrics);
    let reconcile_task = tokio::spawn(reconcile::run(
        supervisor,
        desired_rx.clone(),
        reading.clone(),
    ));
    drop(shared);
    // Beside the tailers that feed it (see FilesRuntime).
    let sink_task = files_rt.handle().spawn(sink.run(rx, sink_stop.clone()));
    let sweep_task = tokio::spawn(reconcile::run_sweeper(
        registry.clone(),
        desired_rx.clone(),
        SWEEP_INTERVAL,
        sweep_stop.clone(),
    ));
    let ck_task = tokio::spawn(registry::run_checkpointer(
        registry.clone(),
        store.clone(),
        settings.checkpoint.interval,
        settings.checkpoint.gone_retention,
        ck_stop.clone(),
    ));
    // Reading stops it: nothing is released after that.
    tokio::spawn(crate::tail::memory::run_trimmer(
        crate::tail::memory::TRIM_INTERVAL,
        reading.clone(),
    ));
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    // Dropped when `run` returns, so pings also cover the shutdown, which TimeoutStopSec bounds.
    let _watchdog = spawn_watchdog();

    let fatal = kafka.fatal_signal();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = fatal.cancelled() => {}
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let grace = settings.shutdown.grace;
    // One deadline for every step; only the final checkpoint write runs past it (it must happen).
    let deadline = tokio::time::Instant::now() + grace;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: stop reading → flush deliveries → final checkpoint"
    );

    reading.cancel();
    sweep_stop.cancel();
    // Revokes the status lease while the rest shuts down; awaited before the final checkpoint.
    status_stop.cancel();
    let stopped = tokio::time::timeout(left(), async {
        let _ = source_task.await;
        let _ = reconcile_task.await;
    })
    .await;
    if stopped.is_err() {
        warn!("tailers did not stop within the grace period; continuing shutdown");
    }
    // No more points arrive: the InfluxDB writer sends what it holds, within the deadline.
    influx_stop.cancel();
    if let Some((_, task)) = influx {
        let _ = tokio::time::timeout(left().max(Duration::from_millis(200)), task).await;
    }
    sink_stop.cancel();
    let _ = tokio::time::timeout(left(), sink_task).await;
    let _ = tokio::time::timeout(left(), probe_task).await;
    // A fatal producer delivers nothing more: a short wait collects the reports already on their way.
    let flush_for = if kafka.fatal().is_some() {
        left().min(Duration::from_secs(1))
    } else {
        left().max(Duration::from_millis(100))
    };
    let unacked = Sink::flush(producer, flush_for).await;
    if unacked > 0 {
        warn!(
            unacked,
            "records not acknowledged by the deadline; they will be read again at the next start"
        );
    } else {
        info!("all records handed to Kafka were acknowledged (lines read but not yet handed over are read again at the next start)");
    }
    if tokio::time::timeout(left().max(Duration::from_millis(200)), status_task)
        .await
        .is_err()
    {
        warn!("status publisher did not stop in time; its lease expires on its own");
    }
    // Returns at once: a sweep stuck on a hung mount is left to its blocking thread.
    let _ = sweep_task.await;
    ck_stop.cancel();
    let _ = ck_task.await;
    registry::write_checkpoint(
        &registry,
        &store,
        settings.checkpoint.gone_retention,
        registry::Pass::All,
    )
    .await;
    // Last, so /metrics can be scraped for as long as anything moves.
    http_stop.cancel();
    if let Some(t) = http_task {
        let _ = tokio::time::timeout(left().max(Duration::from_millis(200)), t).await;
    }
    // Every discoverer and tailer has returned (or the grace period is over): the file runtime goes.
    drop(files_rt);
    if let Some(reason) = kafka.fatal() {
        return Err(AppError::ProducerFatal(reason.to_owned()));
    }
    info!("final checkpoint written; bye");
    Ok(())
}

/// Pings systemd's watchdog at half the `WatchdogSec` interval when the unit sets one, so a wedged
/// runtime gets the service restarted. Pinging stops when the returned guard is dropped.
fn spawn_watchdog() -> Option<tokio_util::sync::DropGuard> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let stop = CancellationToken::new();
    let every = Duration::from_micros(usec) / 2;
    let token = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    });
    Some(stop.drop_guard())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::Duration;

    fn mkfifo(path: &std::path::Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    /// What the file runtime is for: tasks stuck in a blocking open/read (here FIFOs without a writer,
    /// more of them than the file runtime has threads) leave the main runtime, which runs the
    /// watchdog, HTTP and etcd tasks, free to run.
    #[test]
    fn file_io_stuck_on_the_files_runtime_leaves_the_main_runtime_running() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let files = FilesRuntime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fifos: Vec<_> = (0..FilesRuntime::threads() + 2)
            .map(|i| dir.path().join(format!("pipe-{i}")))
            .collect();
        for f in &fifos {
            mkfifo(f);
            let f = f.clone();
            // As discovery did before it stat-ed first: open() blocks until a writer appears.
            files.handle().spawn(async move {
                let _ = std::fs::File::open(&f);
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            main.spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx.send(i);
            });
        }
        let ran = (0..4)
            .filter(|_| rx.recv_timeout(Duration::from_secs(5)).is_ok())
            .count();
        // Unblock the readers (a writer's open does not block while readers wait), then shut down.
        for f in &fifos {
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(f);
        }
        drop(files);
        main.shutdown_timeout(Duration::from_secs(1));
        assert_eq!(
            ran, 4,
            "tasks on the main runtime did not run within 5 s: its workers were stuck in file I/O"
        );
    }
}
