//! Whether Kafka is reachable, for `/readyz`, `/metrics` and the status in etcd.
//!
//! librdkafka says when every broker is down (error callback) and deliveries say when one answers, but
//! with no traffic nothing would ever say it came back. So while the flag is down, this asks the cluster
//! for metadata every few seconds; while it is up, the callbacks are enough and the cluster is not
//! bothered.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::sink::{metadata, KafkaHealth, KafkaProducer};

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs until `stop`.
pub async fn run(producer: Arc<KafkaProducer>, health: Arc<KafkaHealth>, stop: CancellationToken) {
    let mut last = health.is_reachable();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        if !health.is_reachable() {
            let answered = tokio::select! {
                _ = stop.cancelled() => return,
                up = metadata::cluster_answers(producer.clone(), PROBE_TIMEOUT) => up,
            };
            if answered {
                health.set_reachable(true);
            }
        }
        let now = health.is_reachable();
        // Going down is logged by the sink's error callback, which knows why.
        if now && !last {
            info!("Kafka is reachable again");
        }
        last = now;
    }
}
