//! The Kafka sink: one rdkafka producer fed by the bounded batch channel.
//!
//! Backpressure: when librdkafka's queue is full, `send` returns `QueueFull`; the sink waits and retries
//! the same record, stops draining the channel, the channel fills, and tailers stop reading. Memory is
//! therefore bounded by the channel capacity and librdkafka's queue limits, not by the outage length.
//!
//! Delivery reports complete batch tickets (see `progress`); only then may offsets advance. Records
//! librdkafka gives back after a timeout or a transient error are sent again; records Kafka rejects for
//! good (too large, not authorized, unknown topic) are logged with topic and file, counted and skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::progress::Ticket;
use crate::telemetry::{Metrics, TopicCounters};

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
}

#[derive(thiserror::Error, Debug)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
}

pub struct SinkContext {
    metrics: Arc<Metrics>,
    retry_tx: mpsc::UnboundedSender<Retry>,
    reachable: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {
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
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            if self.reachable.swap(false, Ordering::Relaxed) {
                error!("all Kafka brokers are down; records wait in the files until they return: {reason}");
            }
        } else {
            warn!("Kafka client error: {error}: {reason}");
        }
    }
}

/// Errors Kafka will not get over by retrying the same record.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidRecord
            | MessageBatchTooLarge
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition
            | InvalidTopic
            | InvalidRequiredAcks
            | PolicyViolation
    )
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Arc<InFlight>) {
        match result {
            Ok(_) => {
                self.reachable.store(true, Ordering::Relaxed);
            }
            Err((err, msg)) => {
                let code = err.rdkafka_error_code();
                if matches!(
                    code,
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                ) {
                    // Only dropping the producer at shutdown purges. The record's offset was never
                    // acknowledged, so it is read again at the next start: one warning per record
                    // (up to queue_max_messages of them) would say nothing more.
                    return;
                }
                let kind = code.map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
                self.metrics.delivery_error(&kind);
                if code.is_some_and(is_permanent) {
                    self.metrics.record_skipped(
                        &opaque.route.topic,
                        &opaque.route.path,
                        &err.to_string(),
                    );
                } else {
                    // Transient (timed out, broker gone): send it again rather than lose it.
                    warn!(topic = %opaque.route.topic, "delivery failed ({err}); sending the record again");
                    let retry = Retry {
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        partition: msg.partition(),
                        opaque,
                    };
                    // The sink is gone only at shutdown: the record is then re-read at the next start.
                    let _ = self.retry_tx.send(retry);
                    return;
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

pub type KafkaProducer = ThreadedProducer<SinkContext>;

pub struct Sink {
    producer: Arc<KafkaProducer>,
    retry_rx: mpsc::UnboundedReceiver<Retry>,
    metrics: Arc<Metrics>,
    partitions: HashMap<String, (i32, Instant)>,
    pub reachable: Arc<AtomicBool>,
}

const PARTITIONS_TTL: Duration = Duration::from_secs(60);
const UNKNOWN_TOPIC_TTL: Duration = Duration::from_secs(5);
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

impl Sink {
    pub fn new(properties: &[(String, String)], metrics: Arc<Metrics>) -> Result<Sink, SinkError> {
        let mut cfg = ClientConfig::new();
        for (k, v) in properties {
            cfg.set(k, v);
        }
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let reachable = Arc::new(AtomicBool::new(true));
        let ctx = SinkContext {
            metrics: metrics.clone(),
            retry_tx,
            reachable: reachable.clone(),
        };
        let producer: KafkaProducer = cfg.create_with_context(ctx).map_err(SinkError::Create)?;
        Ok(Sink {
            producer: Arc::new(producer),
            retry_rx,
            metrics,
            partitions: HashMap::new(),
            reachable,
        })
    }

    pub fn producer(&self) -> Arc<KafkaProducer> {
        self.producer.clone()
    }

    /// Produces batches until `stop` is cancelled or the channel closes. Batches still in the channel
    /// then are dropped: their offsets were never acknowledged, so they are read again at the next start.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Batch>, stop: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(retry) = self.retry_rx.recv() => {
                    if !self.resend(retry, &stop).await { break; }
                }
                batch = rx.recv() => match batch {
                    Some(batch) => if !self.produce(batch, &stop).await { break; },
                    None => break,
                },
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

    /// The partition for an unkeyed route (keyed routes leave it to librdkafka's key hash).
    /// `Err(())` when stopping while waiting for the cluster.
    async fn partition_for(
        &mut self,
        route: &Route,
        stop: &CancellationToken,
    ) -> Result<Option<i32>, ()> {
        if route.key.is_some() {
            return Ok(None);
        }
        let count = match self.partitions.get(&route.topic) {
            Some((n, at))
                if at.elapsed()
                    < if *n > 0 {
                        PARTITIONS_TTL
                    } else {
                        UNKNOWN_TOPIC_TTL
                    } =>
            {
                *n
            }
            _ => {
                let n = self.fetch_partitions(&route.topic, stop).await.ok_or(())?;
                self.partitions
                    .insert(route.topic.clone(), (n, Instant::now()));
                n
            }
        };
        // An unknown topic (0) gets no explicit partition: librdkafka then waits for the topic to
        // appear (topic.metadata.propagation.max.ms) and reports UnknownTopic if it never does, which
        // is skipped by policy. That blocks neither the other files nor the sink.
        Ok((count > 0).then(|| (route.partition_seed % count as u64) as i32))
    }

    /// The topic's partition count (0: the cluster answered and does not know the topic), waiting for
    /// the cluster while it is unreachable. `None` when stopping.
    async fn fetch_partitions(&self, topic: &str, stop: &CancellationToken) -> Option<i32> {
        let mut warned = false;
        let mut wait = Duration::from_millis(100);
        loop {
            let producer = self.producer.clone();
            let t = topic.to_owned();
            // A thread of its own, not spawn_blocking: against an unreachable cluster the request
            // blocks for METADATA_TIMEOUT, and the runtime waits for its blocking tasks before the
            // process may exit, past the shutdown deadline. Stopping abandons the request instead.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("kafka-metadata".into())
                .spawn(move || {
                    let _ = tx.send(
                        producer
                            .client()
                            .fetch_metadata(Some(&t), METADATA_TIMEOUT)
                            .map(|md| {
                                md.topics()
                                    .iter()
                                    .find(|mt| mt.name() == t)
                                    .map_or(0, |mt| {
                                        if mt.error().is_some() {
                                            0
                                        } else {
                                            mt.partitions().len() as i32
                                        }
                                    })
                            }),
                    );
                });
            let res = match spawned {
                Ok(_) => tokio::select! {
                    _ = stop.cancelled() => return None,
                    r = rx => r.map_err(|e| e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match res {
                Ok(Ok(n)) => {
                    if n == 0 {
                        warn!(topic, "Kafka does not know this topic (auto-creation off?); its records will be skipped if it does not appear");
                    }
                    return Some(n);
                }
                Ok(Err(e)) => {
                    if !warned {
                        warn!(
                            topic,
                            "cannot read Kafka metadata ({e}); waiting for the cluster"
                        );
                    }
                }
                Err(e) => error!("metadata task failed: {e}"),
            }
            warned = true;
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    async fn produce(&mut self, batch: Batch, stop: &CancellationToken) -> bool {
        let Batch {
            route,
            ticket,
            lines,
        } = batch;
        let Ok(partition) = self.partition_for(&route, stop).await else {
            return false;
        };
        let headers = route.kafka_headers();
        let opaque = Arc::new(InFlight {
            route: route.clone(),
            ticket,
        });
        for line in &lines {
            if !self
                .send(
                    &route,
                    opaque.clone(),
                    line,
                    partition,
                    headers.as_ref(),
                    stop,
                )
                .await
            {
                return false;
            }
        }
        true
    }

    async fn resend(&mut self, retry: Retry, stop: &CancellationToken) -> bool {
        let route = retry.opaque.route.clone();
        let headers = route.kafka_headers();
        self.metrics.records_in_flight.dec();
        let partition = (retry.partition >= 0).then_some(retry.partition);
        self.send(
            &route,
            retry.opaque,
            &retry.payload,
            partition,
            headers.as_ref(),
            stop,
        )
        .await
    }

    /// Hands one record to librdkafka, waiting while its queue is full. False when stopping.
    async fn send(
        &self,
        route: &Route,
        opaque: Arc<InFlight>,
        payload: &[u8],
        partition: Option<i32>,
        headers: Option<&OwnedHeaders>,
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
            record = record.headers(h.clone());
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.metrics.records_in_flight.inc();
                    return true;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                    }
                }
                Err((err, back)) => {
                    // Rejected before it left (e.g. larger than message.max.bytes): permanent.
                    self.metrics.delivery_error(
                        &err.rdkafka_error_code()
                            .map_or_else(|| "other".to_owned(), |c| format!("{c:?}")),
                    );
                    self.metrics
                        .record_skipped(&route.topic, &route.path, &err.to_string());
                    let InFlight { ticket, .. } = &*back.delivery_opaque;
                    if ticket.record_settled() {
                        route.counters.lines_acked.inc_by(ticket.records as u64);
                        route.counters.bytes_acked.inc_by(ticket.bytes);
                    }
                    return true;
                }
            }
        }
    }
}
