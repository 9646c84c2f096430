//! The validated settings the agent runs with.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    pub agent: AgentSettings,
    pub log: LogSettings,
    pub etcd: EtcdSettings,
    pub kafka: KafkaSettings,
    pub tail: TailSettings,
    pub checkpoint: CheckpointSettings,
    pub shutdown: ShutdownSettings,
    pub http: HttpSettings,
    /// `None`: no `[influxdb]` url, so no entry may use `"output": "influxdb"`.
    pub influxdb: Option<super::influxdb::InfluxSettings>,
}

#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// `None`: discover the host's address at startup.
    pub ip: Option<IpAddr>,
    pub state_dir: PathBuf,
    pub hostname: String,
    /// Globs a collected file's resolved path must match (validated: absolute, parse).
    pub allowed_paths: Vec<String>,
    /// The config file the settings were loaded from (`None` when loaded from a string): never read
    /// as a log file.
    pub config_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON under systemd (the journal stores each event's fields), compact otherwise.
    Auto,
    Compact,
    Json,
}

impl LogFormat {
    /// Whether to log JSON; `under_journal`: stderr goes to the journal (`JOURNAL_STREAM` is set).
    pub fn is_json(self, under_journal: bool) -> bool {
        match self {
            LogFormat::Auto => under_journal,
            LogFormat::Compact => false,
            LogFormat::Json => true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    /// A `tracing_subscriber::EnvFilter` directive string, already checked to parse.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub key_template: String,
    pub status_key_template: String,
    pub status_interval: Duration,
    pub status_lease_ttl: Duration,
    /// (username, password)
    pub auth: Option<(String, String)>,
    pub tls: Option<EtcdTls>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub domain: Option<String>,
}

impl EtcdSettings {
    /// Fills the `{ip}` and `{hostname}` placeholders of a key template.
    pub fn render_key(template: &str, ip: &str, hostname: &str) -> String {
        template.replace("{ip}", ip).replace("{hostname}", hostname)
    }

    /// etcd leases are granted in whole seconds; rounds up so the lease never outlives less
    /// than the configured time.
    pub fn status_lease_ttl_secs(&self) -> i64 {
        let secs = self.status_lease_ttl.as_millis().div_ceil(1000);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

// Hand-written so that logging the settings never prints the password.
impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("key_template", &self.key_template)
            .field("status_key_template", &self.status_key_template)
            .field("status_interval", &self.status_interval)
            .field("status_lease_ttl", &self.status_lease_ttl)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .finish()
    }
}

/// What to do with a record Kafka rejects permanently (too large, invalid topic, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatalErrorPolicy {
    /// Log it, count it, and acknowledge it as done so the file's offset moves on.
    Skip,
}

#[derive(Clone)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub client_id: String,
    pub compression: String,
    pub linger: Duration,
    /// How long small batches wait to go to Kafka together ([`crate::sink::hold`]); 0: never.
    pub idle_flush: Duration,
    pub batch_size_bytes: usize,
    pub batch_num_messages: usize,
    pub queue_max_kbytes: usize,
    pub queue_max_messages: usize,
    /// `None`: never give up on a record.
    pub message_timeout: Option<Duration>,
    pub request_timeout: Duration,
    pub security_protocol: String,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub on_fatal_error: FatalErrorPolicy,
    /// Passed to librdkafka verbatim, after the typed properties.
    pub options: BTreeMap<String, String>,
}

/// librdkafka properties set from typed keys, with the typed key to use instead. Aliases are
/// listed too: librdkafka treats them as the same property.
pub(super) const MANAGED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("client.id", "kafka.client_id"),
    ("compression.type", "kafka.compression"),
    ("compression.codec", "kafka.compression"),
    ("linger.ms", "kafka.linger_ms"),
    ("queue.buffering.max.ms", "kafka.linger_ms"),
    ("batch.size", "kafka.batch_size_bytes"),
    ("batch.num.messages", "kafka.batch_num_messages"),
    ("queue.buffering.max.kbytes", "kafka.queue_max_kbytes"),
    ("queue.buffering.max.messages", "kafka.queue_max_messages"),
    ("message.timeout.ms", "kafka.message_timeout_ms"),
    ("delivery.timeout.ms", "kafka.message_timeout_ms"),
    ("request.timeout.ms", "kafka.request_timeout_ms"),
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    ("sasl.password", "kafka.sasl_password"),
    ("ssl.ca.location", "kafka.ssl_ca_location"),
    ("ssl.certificate.location", "kafka.ssl_certificate_location"),
    ("ssl.key.location", "kafka.ssl_key_location"),
];

/// What a record may carry beyond its line (key, headers, protocol framing): the producer's
/// `message.max.bytes` is the line limit plus this.
pub const RECORD_OVERHEAD_BYTES: usize = 65_536;

/// How often librdkafka reports its statistics (only the request count is read from them).
pub const STATISTICS_INTERVAL_MS: u64 = 5_000;

/// librdkafka's ceiling for `message.max.bytes`.
pub const MESSAGE_MAX_BYTES_CEILING: usize = 1_000_000_000;

/// Delivery guarantees the agent relies on; no option may weaken them.
pub(super) const FIXED_PROPERTIES: &[&str] =
    &["acks", "request.required.acks", "enable.idempotence"];

impl Settings {
    /// The producer's properties, with `message.max.bytes` sized for the longest line any entry may
    /// ask for (unless set explicitly, which validation checked is large enough).
    pub fn producer_properties(&self) -> Vec<(String, String)> {
        let mut props = self.kafka.librdkafka_properties();
        if !props.iter().any(|(k, _)| k.trim() == "message.max.bytes") {
            let max = (self.tail.max_line_bytes_limit + RECORD_OVERHEAD_BYTES).max(1_000_000);
            props.push(("message.max.bytes".into(), max.to_string()));
        }
        // The request count (logagent_kafka_requests_total) comes from librdkafka's statistics.
        if !props
            .iter()
            .any(|(k, _)| k.trim() == "statistics.interval.ms")
        {
            props.push((
                "statistics.interval.ms".into(),
                STATISTICS_INTERVAL_MS.to_string(),
            ));
        }
        props
    }
}

impl KafkaSettings {
    /// Every librdkafka producer property: typed ones first, then the passthrough options.
    pub fn librdkafka_properties(&self) -> Vec<(String, String)> {
        let mut props: Vec<(String, String)> = Vec::new();
        let mut set = |key: &str, value: String| props.push((key.to_owned(), value));
        set("bootstrap.servers", self.brokers.join(","));
        set("client.id", self.client_id.clone());
        set("acks", "all".into());
        set("enable.idempotence", "true".into());
        set("compression.type", self.compression.clone());
        set("linger.ms", self.linger.as_millis().to_string());
        set("batch.size", self.batch_size_bytes.to_string());
        set("batch.num.messages", self.batch_num_messages.to_string());
        set(
            "queue.buffering.max.kbytes",
            self.queue_max_kbytes.to_string(),
        );
        set(
            "queue.buffering.max.messages",
            self.queue_max_messages.to_string(),
        );
        set(
            "message.timeout.ms",
            self.message_timeout
                .map_or(0, |timeout| timeout.as_millis())
                .to_string(),
        );
        set(
            "request.timeout.ms",
            self.request_timeout.as_millis().to_string(),
        );
        set("security.protocol", self.security_protocol.clone());
        if let Some(mechanism) = &self.sasl_mechanism {
            set("sasl.mechanisms", mechanism.clone());
        }
        if let Some(username) = &self.sasl_username {
            set("sasl.username", username.clone());
        }
        if let Some(password) = &self.sasl_password {
            set("sasl.password", password.clone());
        }
        let paths = [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ];
        for (key, path) in paths {
            if let Some(path) = path {
                set(key, path.display().to_string());
            }
        }
        for (key, value) in &self.options {
            set(key, value.clone());
        }
        props
    }
}

fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret")
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |value: &Option<String>| value.as_ref().map(|_| "<redacted>");
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_property(key) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("compression", &self.compression)
            .field("linger", &self.linger)
            .field("idle_flush", &self.idle_flush)
            .field("batch_size_bytes", &self.batch_size_bytes)
            .field("batch_num_messages", &self.batch_num_messages)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("queue_max_messages", &self.queue_max_messages)
            .field("message_timeout", &self.message_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &redact(&self.sasl_password))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("on_fatal_error", &self.on_fatal_error)
            .field("options", &options)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct TailSettings {
    pub poll_interval: Duration,
    pub read_buffer_bytes: usize,
    pub max_line_bytes: usize,
    /// The most an etcd entry's `max_line_bytes` may ask for; the producer is sized for it.
    pub max_line_bytes_limit: usize,
    pub partial_line_timeout: Duration,
    /// How long a rotated-away file must sit idle at EOF, fully acknowledged, before its
    /// handle is released.
    pub rotated_idle_timeout: Duration,
    /// A live file with nothing new for this long, every byte acknowledged, is closed until its path
    /// changes (`None`: never; `tail.close_inactive_ms = 0`).
    pub close_inactive: Option<Duration>,
    pub glob_rescan: Duration,
    /// In batches.
    pub channel_capacity: usize,
    pub batch_max_lines: usize,
    pub max_open_files: usize,
    /// Most rotated-away files held open at once: past it, the fully acknowledged ones idle longest
    /// are released first.
    pub max_rotated_files: usize,
    pub skip_empty_lines: bool,
}

#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    pub interval: Duration,
    pub gone_retention: Duration,
}

#[derive(Clone, Debug)]
pub struct ShutdownSettings {
    pub grace: Duration,
}

#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `None`: no HTTP endpoint.
    pub listen: Option<SocketAddr>,
    pub per_file_metrics: bool,
}
