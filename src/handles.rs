//! What a running agent shares with the parts that report on it (`/metrics`, `/readyz`, the
//! status in etcd, tests): read-only views of facts other parts own.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::source::SourceStatus;
use crate::state::registry::Registry;
use crate::telemetry::Metrics;

/// Handles a running agent exposes (metrics endpoint, status publisher, tests).
#[derive(Clone)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub source_status: watch::Receiver<SourceStatus>,
    pub kafka: Arc<crate::sink::KafkaHealth>,
    pub ip: String,
    pub hostname: String,
    /// The collect configuration key.
    pub key: String,
    pub started_unix_ms: u64,
}
