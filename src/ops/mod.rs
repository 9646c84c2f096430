//! What operators see: metrics and logged events, the HTTP endpoints, this host's status in etcd,
//! the fleet table, and the broker probe behind readiness.

pub mod fleet;
pub mod http;
pub mod kafka_probe;
pub mod preview;
pub mod status;
