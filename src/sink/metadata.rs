//! Metadata requests, made on a thread of their own rather than with `spawn_blocking`: against an
//! unreachable cluster a request blocks for its whole timeout, and the runtime waits for its blocking
//! tasks before the process may exit, past the shutdown deadline. Dropping the returned future
//! abandons the request instead (its thread ends when librdkafka gives up).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::KafkaProducer;

/// Runs `f` on a thread of its own; `Err` when the thread could not start or died.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-metadata".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|e| e.to_string())
}

/// The topic's partition count: 0 when the cluster answered and does not know it.
pub async fn partition_count(
    producer: Arc<KafkaProducer>,
    topic: &str,
    timeout: Duration,
) -> Result<i32, String> {
    let t = topic.to_owned();
    off_runtime(move || {
        producer
            .client()
            .fetch_metadata(Some(&t), timeout)
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
            })
            .map_err(|e| e.to_string())
    })
    .await?
}

/// Whether any broker answers a metadata request within `timeout`.
pub async fn cluster_answers(producer: Arc<KafkaProducer>, timeout: Duration) -> bool {
    off_runtime(move || producer.client().fetch_metadata(None, timeout).is_ok())
        .await
        .unwrap_or(false)
}
