//! What to collect and how: the local TOML file, the etcd value, and where this host stands.
//!
//! Nothing here reads a log file or talks to Kafka; the rest of the agent reads these types.

pub mod collect;
pub mod etcd;
pub mod host;
pub mod host_metrics;
pub mod read_policy;
pub mod records;
pub mod reload;
pub mod saved;
pub mod settings;
pub mod source;
