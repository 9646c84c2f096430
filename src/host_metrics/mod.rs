//! Host metrics: `"type": "host_metrics"` collect entries sample CPU, memory, swap, disks, disk I/O,
//! network and load from /proc and statvfs on a fixed schedule and ship the points, in InfluxDB line
//! protocol with Telegraf's names, to a Kafka topic or straight to InfluxDB.
//!
//! ```text
//! runner (per entry) ──tick──▶ sample::read (blocking pool) ──▶ sample::points ──▶ line_protocol
//!        │                                                                            │
//!        │   topic:  Batch (unbacked ticket, no checkpoint) ──▶ the sink's channel ◀──┤
//!        └── influxdb: influx::InfluxHandle (bounded buffer) ──▶ influx::run_writer ◀─┘
//! ```
//!
//! - [`crate::config::host_metrics`]: the entry, parsed and validated with the rest of the etcd value.
//! - [`procfs`]: pure parsers of the /proc files; [`sample`]: a reading, and points from two
//!   readings (rates from counter differences).
//! - [`line_protocol`]: points and their escaping; [`influx`]: the InfluxDB writer.
//!
//! Why parse /proc directly rather than use `sysinfo` or `procfs`: eight small files and one
//! statvfs per mount are all Telegraf's seven inputs need; the parsers are a few lines each, pure
//! and tested on fixtures, and a sample reads only what the entry's collectors need (sysinfo
//! refreshes whole subsystems, process tables included, and both crates add dependencies).
//!
//! No checkpoint: a sample is produced once, at least once delivered while the agent runs, and a
//! metric missed while the agent was down is gone.

pub mod influx;
pub mod line_protocol;
pub mod procfs;
pub mod sample;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::config::host_metrics::{Collector, HostMetricsEntry, Output};
use crate::sink::{Batch, Route};
use crate::state::progress::{FileProgress, Mark};
use crate::telemetry::Metrics;
use influx::InfluxHandle;
use sample::{Filters, HostTags, Sample};

/// Samples of one entry handed to Kafka and not yet acknowledged, at most: beyond this (Kafka away
/// for an hour at 10 s) new samples are dropped and counted instead of held.
pub const MAX_SAMPLES_IN_FLIGHT: usize = 360;

/// What every host-metrics entry shares.
pub struct Context {
    /// The sink's batch channel, the one file lines use.
    pub tx: mpsc::Sender<Batch>,
    pub metrics: Arc<Metrics>,
    pub tags: HostTags,
    /// `None` when the local configuration has no `[influxdb]` (such entries are then rejected).
    pub influx: Option<Arc<InfluxHandle>>,
}

/// How long until the next multiple of `interval_ms` on the wall clock, so samples land on round
/// times (…:00, …:10, …:20 at 10 s) as Telegraf's do, and entries with one interval sample together.
pub fn until_aligned(now_ms: u64, interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms - now_ms % interval_ms.max(1))
}

/// Samples and ships until `cancel`. The schedule is a tokio interval started on the aligned
/// instant: ticks stay on `start + k × interval` whatever a sample costs (no drift), and a tick
/// missed while a sample was stuck (a hung mount) is skipped, not bunched.
pub async fn run_entry(entry: Arc<HostMetricsEntry>, ctx: Arc<Context>, cancel: CancellationToken) {
    let filters = Arc::new(Filters::new(&entry));
    let mut shipper = Shipper::new(&entry, &ctx);
    let mut prev: Option<Sample> = None;
    let mut buf = String::new();
    let interval = entry.interval();
    // The first sample is taken at once; the schedule starts on the next aligned instant at least
    // half an interval later, so the first rates span enough clock ticks (100 per second) to mean
    // something.
    let mut delay = until_aligned(crate::clock::now_ms(), entry.interval_ms);
    if delay < interval / 2 {
        delay += interval;
    }
    let start = tokio::time::Instant::now() + delay;
    let mut ticks = tokio::time::interval_at(start, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // One sample right away: its counters are the base of the first rates, one interval earlier.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
        }
        first = false;
        let (e, f) = (entry.clone(), filters.clone());
        let mut job = tokio::task::spawn_blocking(move || {
            let s = sample::read(&e, &f, &mut buf);
            (s, buf)
        });
        let started = tokio::time::Instant::now();
        let (cur, back) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = &mut job => match r {
                Ok(r) => r,
                Err(e) => {
                    warn!("host metrics sample panicked: {e}");
                    buf = String::new();
                    continue;
                }
            },
        };
        buf = back;
        if started.elapsed() > interval {
            ctx.metrics.host_metrics_slow_sample(started.elapsed());
        }
        let points = sample::points(&entry, prev.as_ref(), &cur, &ctx.tags);
        let lines: Vec<String> = points.iter().filter_map(|p| p.encode()).collect();
        shipper.ship(lines);
        prev = Some(cur);
    }
}

/// Hands one sample's lines to the entry's output.
enum Shipper {
    Kafka {
        route: Arc<Route>,
        /// Not backed by a file and never checkpointed: it settles the records' tickets (the sink
        /// needs one) and counts the samples still in flight, which bounds them.
        progress: Arc<FileProgress>,
        ctx: Arc<Context>,
    },
    Influx(Arc<InfluxHandle>, Arc<Metrics>),
    /// `output: influxdb` without an `[influxdb]` section: validation refuses it, kept for safety.
    Nowhere(Arc<Metrics>),
}

impl Shipper {
    fn new(entry: &HostMetricsEntry, ctx: &Arc<Context>) -> Shipper {
        match &entry.output {
            Output::Topic(topic) => Shipper::Kafka {
                route: Arc::new(Route {
                    topic: topic.clone(),
                    key: None,
                    headers: Vec::new(),
                    // One host's points stay in one partition, in order.
                    partition_seed: xxhash_rust::xxh3::xxh3_64(ctx.tags.host.as_bytes()),
                    path: format!("host_metrics:{topic}"),
                    counters: ctx.metrics.topic(topic),
                }),
                progress: FileProgress::new(Mark::default()),
                ctx: ctx.clone(),
            },
            Output::InfluxDb => match &ctx.influx {
                Some(h) => Shipper::Influx(h.clone(), ctx.metrics.clone()),
                None => Shipper::Nowhere(ctx.metrics.clone()),
            },
        }
    }

    fn ship(&mut self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let n = lines.len();
        match self {
            Shipper::Kafka {
                route,
                progress,
                ctx,
            } => {
                if progress.in_flight() >= MAX_SAMPLES_IN_FLIGHT {
                    ctx.metrics.host_metrics_dropped("kafka_backlog", n);
                    return;
                }
                // Never waits: a sample that cannot go now (the channel full of file lines under
                // backpressure) is dropped and counted, so the schedule holds.
                let permit = match ctx.tx.try_reserve() {
                    Ok(p) => p,
                    Err(_) => {
                        ctx.metrics.host_metrics_dropped("kafka_backlog", n);
                        return;
                    }
                };
                let lines: Vec<Bytes> = lines.into_iter().map(Bytes::from).collect();
                let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
                route.counters.lines_read.inc_by(n as u64);
                route.counters.bytes_read.inc_by(bytes);
                let ticket = progress.issue_unbacked(n, bytes);
                permit.send(Batch {
                    route: route.clone(),
                    ticket,
                    lines,
                    headers: Vec::new(),
                });
                ctx.metrics.host_metrics_sampled("kafka", n);
            }
            Shipper::Influx(h, metrics) => {
                h.push(lines);
                metrics.host_metrics_sampled("influxdb", n);
            }
            Shipper::Nowhere(metrics) => metrics.host_metrics_dropped("no_influxdb", n),
        }
    }
}

/// What to do to go from the running host-metrics entries to the desired ones (pure). Entries are
/// identified by their output; same output and settings: keep, settings changed: restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: Vec<HostMetricsEntry>,
    pub keep: Vec<String>,
    pub restart: Vec<HostMetricsEntry>,
    pub stop: Vec<String>,
}

pub fn diff(desired: &[HostMetricsEntry], running: &BTreeMap<String, HostMetricsEntry>) -> Plan {
    let mut plan = Plan::default();
    let wanted: BTreeMap<String, &HostMetricsEntry> =
        desired.iter().map(|e| (e.output.id(), e)).collect();
    for (id, e) in &wanted {
        match running.get(id) {
            None => plan.start.push((*e).clone()),
            Some(cur) if cur == *e => plan.keep.push(id.clone()),
            Some(_) => plan.restart.push((*e).clone()),
        }
    }
    plan.stop = running
        .keys()
        .filter(|id| !wanted.contains_key(*id))
        .cloned()
        .collect();
    plan
}

struct Running {
    entry: HostMetricsEntry,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts, restarts and stops host-metrics entries as the configuration changes; the reconciler
/// calls it next to the file entries. No drain on restart: nothing is checkpointed, and the sink
/// delivers what the old task handed over.
pub struct Runner {
    ctx: Arc<Context>,
    running: BTreeMap<String, Running>,
}

impl Runner {
    pub fn new(ctx: Arc<Context>) -> Runner {
        Runner {
            ctx,
            running: BTreeMap::new(),
        }
    }

    pub async fn apply(&mut self, desired: &[HostMetricsEntry]) -> Plan {
        let running = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.entry.clone()))
            .collect();
        let plan = diff(desired, &running);
        for id in &plan.stop {
            info!(
                output = id,
                "stopping host metrics entry (removed from the configuration)"
            );
            self.stop(id).await;
        }
        for e in &plan.restart {
            info!(
                output = e.output.id(),
                interval_ms = e.interval_ms,
                "restarting host metrics entry (changed)"
            );
            self.stop(&e.output.id()).await;
            self.start(e.clone());
        }
        for e in &plan.start {
            info!(
                output = e.output.id(),
                interval_ms = e.interval_ms,
                "starting host metrics entry"
            );
            self.start(e.clone());
        }
        plan
    }

    fn start(&mut self, entry: HostMetricsEntry) {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_entry(
            Arc::new(entry.clone()),
            self.ctx.clone(),
            cancel.clone(),
        ));
        self.running.insert(
            entry.output.id(),
            Running {
                entry,
                cancel,
                task,
            },
        );
    }

    async fn stop(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.cancel.cancel();
            if let Err(e) = r.task.await {
                warn!(output = id, "host metrics entry ended abnormally: {e}");
            }
        }
    }

    pub async fn stop_all(&mut self) {
        for r in self.running.values() {
            r.cancel.cancel();
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(topic: &str, interval_ms: u64) -> HostMetricsEntry {
        HostMetricsEntry {
            output: Output::Topic(topic.into()),
            interval_ms,
            collectors: Collector::ALL.into_iter().collect(),
            mountpoints: vec![],
            interfaces: vec![],
        }
    }

    #[test]
    fn diff_by_output() {
        let running: BTreeMap<String, HostMetricsEntry> =
            [e("a", 1000), e("b", 1000), e("c", 1000)]
                .into_iter()
                .map(|x| (x.output.id(), x))
                .collect();
        let mut influx = e("x", 1000);
        influx.output = Output::InfluxDb;
        let p = diff(&[e("a", 1000), e("b", 2000), influx.clone()], &running);
        assert_eq!(p.keep, vec!["host_metrics:topic:a"]);
        assert_eq!(p.restart, vec![e("b", 2000)]);
        assert_eq!(p.start, vec![influx]);
        assert_eq!(p.stop, vec!["host_metrics:topic:c"]);
    }

    fn kafka_shipper(capacity: usize) -> (Shipper, mpsc::Receiver<Batch>, Arc<Metrics>) {
        let (tx, rx) = mpsc::channel(capacity);
        let metrics = Metrics::new(false);
        let ctx = Arc::new(Context {
            tx,
            metrics: metrics.clone(),
            tags: HostTags {
                host: "h".into(),
                ip: "10.0.0.1".into(),
            },
            influx: None,
        });
        (Shipper::new(&e("hm", 1000), &ctx), rx, metrics)
    }

    fn dropped(metrics: &Metrics, reason: &str) -> u64 {
        let page = metrics.encode();
        let needle = format!("logagent_host_metrics_points_dropped_total{{reason=\"{reason}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .map_or(0, |v| v.parse().unwrap())
    }

    /// A sample is one batch, one record per point, on the entry's topic; settling its records
    /// (as delivery reports do) takes it out of flight.
    #[test]
    fn a_sample_goes_to_the_sink_as_one_batch_and_settles() {
        let (mut s, mut rx, metrics) = kafka_shipper(4);
        s.ship(vec!["cpu a=1 1".into(), "mem b=2i 1".into()]);
        let b = rx.try_recv().expect("a batch in the channel");
        assert_eq!(b.route.topic, "hm");
        assert_eq!(
            b.lines,
            vec![Bytes::from("cpu a=1 1"), Bytes::from("mem b=2i 1")]
        );
        let Shipper::Kafka { progress, .. } = &s else {
            panic!("a topic entry ships to Kafka")
        };
        assert_eq!(progress.in_flight(), 1);
        assert!(!b.ticket.record_settled());
        assert!(b.ticket.record_settled());
        assert_eq!(progress.in_flight(), 0);
        assert_eq!(dropped(&metrics, "kafka_backlog"), 0);
    }

    /// Never waits and never grows: a full channel, or too many samples unacknowledged, drops the
    /// new sample and counts its points.
    #[test]
    fn a_kafka_backlog_drops_new_samples_and_counts_them() {
        let (mut s, _rx, metrics) = kafka_shipper(1);
        s.ship(vec!["a x=1 1".into()]);
        s.ship(vec!["b x=1 1".into(), "c x=1 1".into()]);
        assert_eq!(dropped(&metrics, "kafka_backlog"), 2, "channel full");

        let (mut s, _rx, metrics) = kafka_shipper(MAX_SAMPLES_IN_FLIGHT + 10);
        for _ in 0..MAX_SAMPLES_IN_FLIGHT + 5 {
            s.ship(vec!["a x=1 1".into()]);
        }
        assert_eq!(dropped(&metrics, "kafka_backlog"), 5, "in-flight bound");
    }

    #[test]
    fn alignment_lands_on_multiples_of_the_interval() {
        assert_eq!(
            until_aligned(1_000_003_000, 10_000),
            Duration::from_millis(7_000)
        );
        assert_eq!(
            until_aligned(1_000_000_000, 10_000),
            Duration::from_millis(10_000)
        );
        assert_eq!(until_aligned(999, 1_000), Duration::from_millis(1));
    }

    /// The schedule does not drift: with a sample costing 300 ms of a 1 s interval, samples still
    /// start at start + k s (virtual time); after a sample stuck for 2.5 s, the late tick fires once
    /// at once and the grid resumes (6 s, 7 s), instead of every later tick shifting by the delay.
    #[tokio::test(start_paused = true)]
    async fn ticks_do_not_drift_with_the_cost_of_a_sample() {
        let start = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut ticks = tokio::time::interval_at(start, Duration::from_secs(1));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut at = Vec::new();
        for i in 0..7 {
            ticks.tick().await;
            at.push(
                tokio::time::Instant::now()
                    .duration_since(start)
                    .as_millis(),
            );
            // Sample cost; the fourth sample is stuck for 2.5 s.
            let cost = if i == 3 { 2_500 } else { 300 };
            tokio::time::sleep(Duration::from_millis(cost)).await;
        }
        assert_eq!(at, vec![0, 1000, 2000, 3000, 5500, 6000, 7000]);
    }
}
