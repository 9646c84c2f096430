//! The user configuration, shaped like the file: units in key names, documented defaults.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub agent: RawAgent,
    pub log: RawLog,
    pub etcd: RawEtcd,
    pub kafka: RawKafka,
    pub tail: RawTail,
    pub checkpoint: RawCheckpoint,
    pub shutdown: RawShutdown,
    pub http: RawHttp,
    pub influxdb: super::influxdb::RawInfluxDb,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgent {
    pub ip: String,
    pub state_dir: String,
    pub hostname: String,
    /// Globs (absolute) a collected file's resolved path must match; the built-in deny list wins.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_paths: Vec<String>,
}

impl Default for RawAgent {
    fn default() -> Self {
        Self {
            ip: String::new(),
            state_dir: "/var/lib/logagent".into(),
            hostname: String::new(),
            allowed_paths: vec!["/**".into()],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEtcd {
    #[serde(deserialize_with = "string_or_list")]
    pub endpoints: Vec<String>,
    pub key_template: String,
    pub status_key_template: String,
    pub status_interval_ms: u64,
    pub status_lease_ttl_ms: u64,
    pub username: String,
    pub password: String,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
    pub tls_domain: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for RawEtcd {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            key_template: "collect_log_conf/{ip}".into(),
            status_key_template: "logagent/status/{ip}".into(),
            status_interval_ms: 5_000,
            status_lease_ttl_ms: 15_000,
            username: String::new(),
            password: String::new(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            tls_domain: String::new(),
            connect_timeout_ms: 3_000,
            request_timeout_ms: 5_000,
            backoff_initial_ms: 250,
            backoff_max_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    #[serde(deserialize_with = "string_or_list")]
    pub brokers: Vec<String>,
    pub client_id: String,
    pub compression: String,
    pub linger_ms: u64,
    pub idle_flush_ms: u64,
    pub batch_size_bytes: u64,
    pub batch_num_messages: u64,
    pub queue_max_kbytes: u64,
    pub queue_max_messages: u64,
    pub message_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub security_protocol: String,
    pub sasl_mechanism: String,
    pub sasl_username: String,
    pub sasl_password: String,
    pub ssl_ca_location: String,
    pub ssl_certificate_location: String,
    pub ssl_key_location: String,
    pub on_fatal_error: String,
    pub options: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".into()],
            client_id: String::new(),
            compression: "lz4".into(),
            linger_ms: 20,
            idle_flush_ms: 1_000,
            batch_size_bytes: 1_000_000,
            batch_num_messages: 10_000,
            queue_max_kbytes: 16_384,
            queue_max_messages: 20_000,
            message_timeout_ms: 0,
            request_timeout_ms: 30_000,
            security_protocol: "plaintext".into(),
            sasl_mechanism: String::new(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            on_fatal_error: "skip".into(),
            options: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTail {
    pub poll_interval_ms: u64,
    pub read_buffer_bytes: u64,
    pub max_line_bytes: u64,
    pub max_line_bytes_limit: u64,
    pub partial_line_timeout_ms: u64,
    pub rotated_idle_timeout_ms: u64,
    pub close_inactive_ms: u64,
    pub glob_rescan_ms: u64,
    pub channel_capacity: u64,
    pub batch_max_lines: u64,
    pub max_open_files: u64,
    pub max_rotated_files: u64,
    pub skip_empty_lines: bool,
}

impl Default for RawTail {
    fn default() -> Self {
        Self {
            poll_interval_ms: 250,
            read_buffer_bytes: 262_144,
            max_line_bytes: 1_048_576,
            max_line_bytes_limit: 16_777_216,
            partial_line_timeout_ms: 5_000,
            rotated_idle_timeout_ms: 300_000,
            close_inactive_ms: 300_000,
            glob_rescan_ms: 1_000,
            channel_capacity: 8,
            batch_max_lines: 4_096,
            max_open_files: 4_096,
            max_rotated_files: 64,
            skip_empty_lines: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCheckpoint {
    pub interval_ms: u64,
    pub gone_retention_ms: u64,
}

impl Default for RawCheckpoint {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            gone_retention_ms: 86_400_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShutdown {
    pub grace_ms: u64,
}

impl Default for RawShutdown {
    fn default() -> Self {
        Self { grace_ms: 10_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: String,
    pub per_file_metrics: bool,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9600".into(),
            per_file_metrics: true,
        }
    }
}

/// Accepts a list or, for environment overrides, one comma-separated string.
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
            Ok(value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_any(ListVisitor)
}
