//! Reads a topic back from the beginning of every partition, without a consumer group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How long no new record may arrive before a read counts as complete.
const QUIET: Duration = Duration::from_secs(1);
/// Allowance for finding the topic and starting a consumer on a loaded machine.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The value as text (lossy), which is what most assertions compare.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// Reads until at least `expected_at_least` records arrived and then none for ~1 s; fails at
/// `timeout` saying how many were read. Records come in arrival order: ordered per partition,
/// interleaved across partitions.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    expected_at_least: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Consumed>> {
    let deadline = Instant::now() + timeout;
    let consumer = assigned_consumer(bootstrap, topic, timeout).await?;
    let mut out = Vec::new();
    let mut last_err = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "read {} of at least {expected_at_least} records from {topic} on {bootstrap} \
                 within {timeout:?}{}",
                out.len(),
                last_err
                    .map(|e| format!(" (last consumer error: {e})"))
                    .unwrap_or_default()
            );
        }
        let wait = if out.len() >= expected_at_least {
            QUIET
        } else {
            deadline - now
        };
        match tokio::time::timeout(wait.min(deadline - now), consumer.recv()).await {
            Ok(Ok(m)) => out.push(to_consumed(&m)),
            // Transient (broker restarting, leader moving): librdkafka retries on its own.
            Ok(Err(e)) => last_err = Some(e),
            Err(_) if out.len() >= expected_at_least => return Ok(out),
            Err(_) => {}
        }
    }
}

/// Reads everything the topic held when called, then whatever else arrives until `duration` has
/// passed. The first part does not depend on `duration`: a slow consumer start cannot make an
/// assertion that something is absent pass on an empty read.
pub async fn consume_for(
    bootstrap: &str,
    topic: &str,
    duration: Duration,
) -> anyhow::Result<Vec<Consumed>> {
    let start = Instant::now();
    let consumer = assigned_consumer(bootstrap, topic, SETUP_TIMEOUT).await?;
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    // Partition -> offset of the last record present now (partitions with none are left out).
    let mut pending = tokio::task::spawn_blocking(move || last_offsets(&b, &t)).await??;
    let catch_up_deadline = start + duration + SETUP_TIMEOUT;
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        let done_waiting = now >= start + duration;
        if done_waiting && pending.is_empty() {
            return Ok(out);
        }
        if now >= catch_up_deadline {
            anyhow::bail!(
                "read {} records from {topic} on {bootstrap} but never reached the end of \
                 partitions {:?} that existed at the start",
                out.len(),
                pending.keys().collect::<Vec<_>>()
            );
        }
        let wait = if done_waiting {
            catch_up_deadline - now
        } else {
            start + duration - now
        };
        if let Ok(Ok(m)) = tokio::time::timeout(wait, consumer.recv()).await {
            let c = to_consumed(&m);
            if pending
                .get(&c.partition)
                .is_some_and(|last| c.offset >= *last)
            {
                pending.remove(&c.partition);
            }
            out.push(c);
        }
    }
}

/// For each non-empty partition, the offset of its last record (high watermark - 1).
fn last_offsets(bootstrap: &str, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut out = HashMap::new();
    for p in topic_partitions(bootstrap, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("watermarks of {topic}/{p}: {e}"))?;
        if high > low {
            out.insert(p, high - 1);
        }
    }
    Ok(out)
}

/// Partition ids of `topic` per the broker's metadata.
pub fn topic_partitions(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(3))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow::anyhow!("topic {topic} missing from metadata"))?;
    if let Some(err) = t.error() {
        anyhow::bail!("topic {topic}: {err:?}");
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

pub async fn assigned_consumer(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<StreamConsumer> {
    let (b, t) = (bootstrap.to_string(), topic.to_string());
    let partitions = super::wait_for(
        &format!("metadata of topic {topic} on {bootstrap}"),
        timeout,
        || {
            let (b, t) = (b.clone(), t.clone());
            async move {
                tokio::task::spawn_blocking(move || topic_partitions(&b, &t))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .filter(|p| !p.is_empty())
            }
        },
    )
    .await?;
    // Explicit assignment, every partition from offset 0. librdkafka refuses `assign` without a
    // group.id, so each consumer gets a fresh one; it never joins or commits.
    static GROUPS: AtomicU64 = AtomicU64::new(0);
    let group = format!(
        "harness-{}-{}",
        std::process::id(),
        GROUPS.fetch_add(1, Ordering::Relaxed)
    );
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn to_consumed<M: Message>(m: &M) -> Consumed {
    Consumed {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
