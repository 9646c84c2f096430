//! The Kafka sink: one rdkafka producer fed by the bounded batch channel.
//!
//! Backpressure: when librdkafka's queue is full, `send` returns `QueueFull`; the sink waits and retries
//! the same record, stops draining the channel, the channel fills, and tailers stop reading. Memory is
//! therefore bounded by the channel capacity and librdkafka's queue limits, not by the outage length.
//!
//! Delivery reports complete batch tickets (see `progress`); only then may offsets advance. What an
//! error means for its record is decided in one place ([`mod@classify`]): only a short list of per-record
//! permanent errors may skip a record; a fatal producer error stops the sink (and the agent) with the
//! record unsettled; every other error, unknown ones included, sends the record again.

pub mod classify;
pub mod health;
pub mod hold;
pub mod metadata;
mod native;
pub mod poll;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::state::progress::Ticket;
use crate::telemetry::{Metrics, TopicCounters};
use classify::{classify, Disposition};
pub use health::KafkaHealth;
pub use poll::KafkaProducer;

/// Where and how the lines of one file are produced; shared by all of the file's batches.
#[derive(Debug)]
pub struct Route {
    pub topic: String,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, String)>,
    /// Picks the partition when there is no key, so one file's lines stay in one partition, in order.
    pub partition_seed: u64,
    pub path: String,
    pub counters: TopicCounters,
}

impl Route {
    /// How the lines of the file at `path`, collected by `entry`, are produced: the key the entry
    /// asks for, its fields as headers, and a partition seed from the path (one file, one partition).
    pub fn for_file(
        entry: &crate::config::collect::CollectEntry,
        path: &std::path::Path,
        hostname: &str,
        metrics: &Metrics,
    ) -> Route {
        use crate::config::collect::KeyMode;
        let path_str = path.to_string_lossy().into_owned();
        let key = match &entry.key {
            KeyMode::None => None,
            KeyMode::Path => Some(Bytes::from(path_str.clone())),
            KeyMode::Host => Some(Bytes::from(hostname.to_owned())),
            KeyMode::Fixed(s) => Some(Bytes::from(s.clone())),
        };
        Route {
            topic: entry.topic.clone(),
            key,
            headers: entry
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            partition_seed: xxhash_rust::xxh3::xxh3_64(path_str.as_bytes()),
            counters: metrics.topic(&entry.topic),
            path: path_str,
        }
    }

    /// The entry's `fields` as Kafka headers, built once per batch.
    fn kafka_headers(&self) -> Option<OwnedHeaders> {
        (!self.headers.is_empty()).then(|| {
            self.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            })
        })
    }
}

/// Lines read from one file, sent through the channel as one message.
#[derive(Debug)]
pub struct Batch {
    pub route: Arc<Route>,
    pub ticket: Arc<Ticket>,
    pub lines: Vec<Bytes>,
    /// Empty, or every header of each record (the entry's fields, then its metadata headers), built
    /// by the record stage; when empty, records carry the route's headers.
    pub headers: Vec<OwnedHeaders>,
}

/// What a record's delivery report carries back.
#[derive(Debug)]
pub struct InFlight {
    route: Arc<Route>,
    ticket: Arc<Ticket>,
}

/// A record to send again (librdkafka gave it back after a transient failure).
struct Retry {
    opaque: Arc<InFlight>,
    payload: Vec<u8>,
    partition: i32,
    /// The record's own headers, as sent the first time (per-record ids and offsets included).
    headers: Option<OwnedHeaders>,
}

#[derive(thiserror::Error, Debug)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot start the Kafka producer's event thread: {0}")]
    Poller(#[source] std::io::Error),
}

pub struct SinkContext {
    metrics: Arc<Metrics>,
    retry_tx: mpsc::UnboundedSender<Retry>,
    health: Arc<KafkaHealth>,
    /// librdkafka's request count at its last statistics report.
    requests_seen: std::sync::atomic::AtomicU64,
}

impl SinkContext {
    fn fatal(&self, reason: String) {
        if self.health.set_fatal(reason.clone()) {
            self.metrics.producer_fatal(&reason);
        }
    }
}

impl ClientContext for SinkContext {
    /// Only the request count is taken from librdkafka's statistics (`statistics.interval.ms`).
    fn stats_raw(&self, statistics: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Totals {
            tx: u64,
        }
        if let Ok(t) = serde_json::from_slice::<Totals>(statistics) {
            let before = self
                .requests_seen
                .swap(t.tx, std::sync::atomic::Ordering::Relaxed);
            self.metrics
                .kafka_requests
                .inc_by(t.tx.saturating_sub(before));
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if self.health.set_reachable(false) {
                    error!("all Kafka brokers are down; records wait in the files until they return: {reason}");
                }
            }
            Some(RDKafkaErrorCode::Fatal) => self.fatal(reason.to_owned()),
            _ => warn!("Kafka client error: {error}: {reason}"),
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Arc<InFlight>) {
        match result {
            Ok(_) => {
                self.health.set_reachable(true);
            }
            Err((err, msg)) => {
                let code = err.rdkafka_error_code();
                let disposition = classify(code);
                if disposition == Disposition::Purged {
                    // Only dropping the producer at shutdown purges. The record's offset was never
                    // acknowledged, so it is read again at the next start: one warning per record
                    // (up to queue_max_messages of them) would say nothing more.
                    return;
                }
                self.metrics.delivery_error(&classify::kind(code));
                match disposition {
                    Disposition::Skip => {
                        opaque.ticket.mark_out_of_order();
                        self.metrics.record_skipped(
                            &opaque.route.topic,
                            &opaque.route.path,
                            &err.to_string(),
                        );
                    }
                    Disposition::Fatal => {
                        // Unsettled: the offset stays before this record.
                        self.fatal(err.to_string());
                        return;
                    }
                    Disposition::Retry | Disposition::Purged => {
                        if self.health.fatal().is_some() {
                            // Records failed by a fatal error carry their own code: not sent again,
                            // never settled; the next start reads them again.
                            return;
                        }
                        // Transient (timed out, broker gone): send it again rather than lose it.
                        warn!(topic = %opaque.route.topic, "delivery failed ({err}); sending the record again");
                        opaque.ticket.mark_out_of_order();
                        let retry = Retry {
                            payload: msg.payload().unwrap_or_default().to_vec(),
                            partition: msg.partition(),
                            headers: msg.headers().map(|h| h.detach()),
                            opaque,
                        };
                        // The sink is gone only at shutdown: the record is then re-read at the next start.
                        let _ = self.retry_tx.send(retry);
                        return;
                    }
                }
            }
        }
        self.metrics.records_in_flight.dec();
        let t = &opaque.ticket;
        if t.record_settled() {
            opaque.route.counters.lines_acked.inc_by(t.records as u64);
            opaque.route.counters.bytes_acked.inc_by(t.bytes);
        }
    }
}

pub struct Sink {
    producer: Arc<KafkaProducer>,
    retry_rx: mpsc::UnboundedReceiver<Retry>,
    metrics: Arc<Metrics>,
    partitions: HashMap<String, (i32, Instant)>,
    /// Topic handles for batch produce calls; `None` when librdkafka refused one (then `send` is used).
    topics: HashMap<String, Option<native::TopicHandle>>,
    pub health: Arc<KafkaHealth>,
    /// How long small batches are held to go out together ([`hold`]).
    idle_flush: Duration,
}

const PARTITIONS_TTL: Duration = Duration::from_secs(60);
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
/// Pause before enqueueing again after an enqueue error that is not final.
const ENQUEUE_RETRY_WAIT: Duration = Duration::from_millis(500);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between metadata requests while the cluster is away or the topic unknown.
const METADATA_MIN_WAIT: Duration = Duration::from_millis(100);
const METADATA_MAX_WAIT: Duration = Duration::from_secs(5);

impl Sink {
    pub fn new(properties: &[(String, String)], metrics: Arc<Metrics>) -> Result<Sink, SinkError> {
        let mut cfg = ClientConfig::new();
        for (k, v) in properties {
            cfg.set(k, v);
        }
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let health = Arc::new(KafkaHealth::default());
        let ctx = SinkContext {
            metrics: metrics.clone(),
            retry_tx,
            health: health.clone(),
            requests_seen: Default::default(),
        };
        let base: BaseProducer<SinkContext> =
            cfg.create_with_context(ctx).map_err(SinkError::Create)?;
        let producer = KafkaProducer::start(base).map_err(SinkError::Poller)?;
        Ok(Sink {
            producer: Arc::new(producer),
            retry_rx,
            metrics,
            partitions: HashMap::new(),
            topics: HashMap::new(),
            health,
            idle_flush: Duration::ZERO,
        })
    }

    /// Small batches wait up to `idle_flush` to go to Kafka together (`kafka.idle_flush_ms`).
    pub fn set_idle_flush(&mut self, idle_flush: Duration) {
        self.idle_flush = idle_flush;
    }

    pub fn producer(&self) -> Arc<KafkaProducer> {
        self.producer.clone()
    }

    /// Produces batches until `stop` is cancelled, the producer hits a fatal error, or the channel
    /// closes. Batches still in the channel then are dropped: their offsets were never acknowledged,
    /// so they are read again at the next start. The agent passes a child of the health's
    /// `fatal_signal()`, so a fatal error seen in a delivery report also ends every wait in here.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Batch>, stop: CancellationToken) {
        // Held batches are dropped with the channel's at a stop: never acknowledged, read again.
        let mut held = hold::Held::default();
        // Made once and re-armed only when the held batches' deadline moves, not afresh for every
        // batch a trickling file sends.
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        let flush = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(flush);
        let mut armed = None;
        'run: loop {
            let due = held.due(self.idle_flush);
            if let Some(at) = due.filter(|at| armed != Some(*at)) {
                flush.as_mut().reset(at);
                armed = Some(at);
            }
            let ready = tokio::select! {
                biased;
                _ = &mut stopped => break,
                Some(retry) = self.retry_rx.recv() => {
                    if !self.resend(retry, &stop).await { break; }
                    continue;
                }
                _ = &mut flush, if due.is_some() => held.take(),
                batch = rx.recv() => match batch {
                    Some(batch) => held.offer(batch, self.idle_flush),
                    None => break,
                },
            };
            for batch in ready {
                if !self.produce(batch, &stop).await {
                    break 'run;
                }
            }
        }
        debug!("sink stopped taking batches");
    }

    /// Flushes what librdkafka holds, waiting at most `deadline`. Returns the records still unacknowledged.
    pub async fn flush(producer: Arc<KafkaProducer>, deadline: Duration) -> i32 {
        tokio::task::spawn_blocking(move || {
            let _ = producer.flush(deadline);
            producer.in_flight_count()
        })
        .await
        .unwrap_or(-1)
    }

    /// The partition for an unkeyed route, once the cluster knows the topic (keyed routes leave it to
    /// librdkafka's key hash). A topic it does not know is waited for rather than produced to: the
    /// partitioner would then spread one file's lines over partitions at random, and librdkafka would
    /// fail the records after `topic.metadata.propagation.max.ms` anyway. `Err(())` when stopping.
    async fn partition_for(
        &mut self,
        route: &Route,
        stop: &CancellationToken,
    ) -> Result<Option<i32>, ()> {
        if route.key.is_some() {
            // The key's hash picks the partition, whatever the moment: no lookup, and records wait
            // in librdkafka's queue (bounded) while the cluster is away.
            return Ok(None);
        }
        let count = match self.partitions.get(&route.topic) {
            Some((n, at)) if at.elapsed() < PARTITIONS_TTL => *n,
            _ => {
                let n = self.wait_for_topic(&route.topic, stop).await.ok_or(())?;
                self.partitions
                    .insert(route.topic.clone(), (n, Instant::now()));
                n
            }
        };
        Ok(Some((route.partition_seed % count as u64) as i32))
    }

    /// The topic's partition count, waiting while the cluster is unreachable or does not know the
    /// topic (the lines wait in their files meanwhile). `None` when stopping.
    async fn wait_for_topic(&self, topic: &str, stop: &CancellationToken) -> Option<i32> {
        let (mut warned_unknown, mut warned_unreachable) = (false, false);
        let mut backoff = Backoff::new(METADATA_MIN_WAIT, METADATA_MAX_WAIT);
        loop {
            let res = tokio::select! {
                _ = stop.cancelled() => return None,
                r = metadata::partition_count(self.producer.clone(), topic, METADATA_TIMEOUT) => r,
            };
            match res {
                Ok(n) if n > 0 => {
                    if warned_unknown {
                        info!(
                            topic,
                            partitions = n,
                            "Kafka knows the topic now; producing"
                        );
                    }
                    return Some(n);
                }
                // The cluster answered and does not know the topic.
                Ok(_) if !warned_unknown => {
                    self.metrics.topic_unknown(topic);
                    warned_unknown = true;
                }
                Err(e) if !warned_unreachable => {
                    warn!(
                        topic,
                        "cannot read Kafka metadata ({e}); waiting for the cluster"
                    );
                    warned_unreachable = true;
                }
                _ => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    async fn produce(&mut self, batch: Batch, stop: &CancellationToken) -> bool {
        let Batch {
            route,
            ticket,
            lines,
            headers: record_headers,
        } = batch;
        let Ok(partition) = self.partition_for(&route, stop).await else {
            return false;
        };
        let opaque = Arc::new(InFlight {
            route: route.clone(),
            ticket,
        });
        self.metrics.records_in_flight.inc_by(lines.len() as i64);
        if !record_headers.is_empty() {
            if !self.topics.contains_key(&route.topic) {
                let handle = native::TopicHandle::new(&self.producer, &route.topic);
                self.topics.insert(route.topic.clone(), handle);
            }
            return self
                .send_with_headers(&route, &opaque, &lines, record_headers, partition, stop)
                .await;
        }
        // Headers cannot go through the batch call: such routes send record by record.
        if route.headers.is_empty() {
            if !self.topics.contains_key(&route.topic) {
                let handle = native::TopicHandle::new(&self.producer, &route.topic);
                self.topics.insert(route.topic.clone(), handle);
            }
            if self.topics[&route.topic].is_some() {
                return self
                    .send_batch(&route, &opaque, &lines, partition, stop)
                    .await;
            }
        }
        let headers = route.kafka_headers();
        for line in &lines {
            if !self
                .send(
                    &route,
                    opaque.clone(),
                    line,
                    partition,
                    headers.clone(),
                    stop,
                )
                .await
            {
                return false;
            }
        }
        true
    }

    /// Enqueues a batch with one librdkafka call, waiting while its queue is full. False when stopping
    /// (or when the producer is unusable).
    async fn send_batch(
        &self,
        route: &Route,
        opaque: &Arc<InFlight>,
        lines: &[Bytes],
        partition: Option<i32>,
        stop: &CancellationToken,
    ) -> bool {
        let Some(Some(topic)) = self.topics.get(&route.topic) else {
            return false;
        };
        let mut rest = lines;
        loop {
            let outcome =
                native::produce_batch(topic, partition, route.key.as_deref(), rest, opaque);
            if !outcome.refused.is_empty() {
                // Refused one by one while the records around them were enqueued: each gets its
                // own verdict (skip, fatal, or sent again on its own, after the others).
                let headers = route.kafka_headers();
                for (i, _) in &outcome.refused {
                    opaque.ticket.mark_out_of_order();
                    if !self
                        .send(
                            route,
                            opaque.clone(),
                            &rest[*i],
                            partition,
                            headers.clone(),
                            stop,
                        )
                        .await
                    {
                        return false;
                    }
                }
            }
            let Some(at) = outcome.queue_full_at else {
                return true;
            };
            rest = &rest[at..];
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
            }
        }
    }

    /// Enqueues records that each carry their own headers, one call each on the topic handle,
    /// waiting while the queue is full; a record refused for another reason goes through `send`,
    /// which judges it. False when stopping (or when the producer is unusable).
    async fn send_with_headers(
        &self,
        route: &Route,
        opaque: &Arc<InFlight>,
        lines: &[Bytes],
        headers: Vec<OwnedHeaders>,
        partition: Option<i32>,
        stop: &CancellationToken,
    ) -> bool {
        let topic = self.topics.get(&route.topic).and_then(Option::as_ref);
        for (line, h) in lines.iter().zip(headers) {
            let Some(topic) = topic else {
                if !self
                    .send(route, opaque.clone(), line, partition, Some(h), stop)
                    .await
                {
                    return false;
                }
                continue;
            };
            let (mut h, mut o) = (h, opaque.clone());
            loop {
                let key = route.key.as_deref();
                match native::produce_with_headers(
                    &self.producer,
                    topic,
                    partition,
                    key,
                    line,
                    h,
                    o,
                ) {
                    Ok(()) => break,
                    Err((RDKafkaErrorCode::QueueFull, back_h, back_o)) => {
                        (h, o) = (back_h, back_o);
                        tokio::select! {
                            _ = stop.cancelled() => return false,
                            _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                        }
                    }
                    Err((_, back_h, back_o)) => {
                        if !self
                            .send(route, back_o, line, partition, Some(back_h), stop)
                            .await
                        {
                            return false;
                        }
                        break;
                    }
                }
            }
        }
        true
    }

    /// A record Kafka will never take (refused before it left): logged, counted, settled.
    fn reject(&self, route: &Route, opaque: &InFlight, err: &KafkaError) {
        self.metrics
            .delivery_error(&classify::kind(err.rdkafka_error_code()));
        self.metrics
            .record_skipped(&route.topic, &route.path, &err.to_string());
        self.metrics.records_in_flight.dec();
        let ticket = &opaque.ticket;
        ticket.mark_out_of_order();
        if ticket.record_settled() {
            route.counters.lines_acked.inc_by(ticket.records as u64);
            route.counters.bytes_acked.inc_by(ticket.bytes);
        }
    }

    async fn resend(&mut self, retry: Retry, stop: &CancellationToken) -> bool {
        let route = retry.opaque.route.clone();
        let headers = retry.headers.or_else(|| route.kafka_headers());
        let partition = (retry.partition >= 0).then_some(retry.partition);
        self.send(
            &route,
            retry.opaque,
            &retry.payload,
            partition,
            headers,
            stop,
        )
        .await
    }

    /// Hands one record to librdkafka, waiting while its queue is full or while an error that is not
    /// final lasts. False when stopping, or when the producer is unusable (the record stays unsettled).
    async fn send(
        &self,
        route: &Route,
        opaque: Arc<InFlight>,
        payload: &[u8],
        partition: Option<i32>,
        headers: Option<OwnedHeaders>,
        stop: &CancellationToken,
    ) -> bool {
        let mut record = BaseRecord::with_opaque_to(&route.topic, opaque).payload(payload);
        if let Some(k) = &route.key {
            record = record.key(&k[..]);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let mut warned = false;
        loop {
            let (err, back) = match self.producer.send(record) {
                Ok(()) => return true,
                Err(e) => e,
            };
            let code = err.rdkafka_error_code();
            let wait = match (code, classify(code)) {
                (Some(RDKafkaErrorCode::QueueFull), _) => QUEUE_FULL_WAIT,
                (_, Disposition::Skip) => {
                    self.reject(route, &back.delivery_opaque, &err);
                    return true;
                }
                (_, Disposition::Fatal | Disposition::Purged) => {
                    let reason = self
                        .producer
                        .client()
                        .fatal_error()
                        .map_or_else(|| err.to_string(), |(c, r)| format!("{c:?}: {r}"));
                    if self.health.set_fatal(reason.clone()) {
                        self.metrics.producer_fatal(&reason);
                    }
                    return false;
                }
                (_, Disposition::Retry) => {
                    if !warned {
                        self.metrics.delivery_error(&classify::kind(code));
                        warn!(topic = %route.topic, path = %route.path, "Kafka producer refused a record ({err}); trying again");
                        warned = true;
                    }
                    ENQUEUE_RETRY_WAIT
                }
            };
            record = back;
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
