//! Turns the user configuration into runtime settings, collecting every problem.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::runtime::{
    FIXED_PROPERTIES, MANAGED_PROPERTIES, MESSAGE_MAX_BYTES_CEILING, RECORD_OVERHEAD_BYTES,
};
use super::*;

/// librdkafka stores these as C ints.
const RDKAFKA_INT_MAX: u64 = i32::MAX as u64;

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, problem: String) {
        self.0.push(problem);
    }

    fn millis(&mut self, key: &str, value: u64) -> Duration {
        if value == 0 {
            self.push(format!("{key}: must be greater than 0"));
        }
        Duration::from_millis(value)
    }

    fn range(&mut self, key: &str, value: u64, min: u64, max: u64) -> usize {
        if value < min || value > max {
            self.push(format!("{key}: {value} is outside {min}..={max}"));
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    fn one_of(&mut self, key: &str, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            self.push(format!(
                "{key}: {value:?} is not one of {}",
                allowed.join(", ")
            ));
        }
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn non_empty_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

impl RawConfig {
    /// Checks every key and builds the runtime settings; all problems are reported together.
    pub fn validate(&self) -> Result<Settings, SettingsError> {
        let system_hostname = gethostname::gethostname().to_string_lossy().into_owned();
        self.validate_with_hostname(&system_hostname)
    }

    pub(super) fn validate_with_hostname(
        &self,
        system_hostname: &str,
    ) -> Result<Settings, SettingsError> {
        let mut problems = Problems::default();
        let agent = self.agent.validate(system_hostname, &mut problems);
        let settings = Settings {
            log: self.log.validate(&mut problems),
            etcd: self.etcd.validate(&mut problems),
            kafka: self.kafka.validate(&agent.hostname, &mut problems),
            tail: self.tail.validate(&mut problems),
            checkpoint: CheckpointSettings {
                interval: problems.millis("checkpoint.interval_ms", self.checkpoint.interval_ms),
                gone_retention: problems.millis(
                    "checkpoint.gone_retention_ms",
                    self.checkpoint.gone_retention_ms,
                ),
            },
            shutdown: ShutdownSettings {
                grace: problems.millis("shutdown.grace_ms", self.shutdown.grace_ms),
            },
            http: self.http.validate(&mut problems),
            influxdb: self.influxdb.validate(&mut problems.0),
            agent,
        };
        producer_fits_lines(&settings, &mut problems);
        if problems.0.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError::Invalid(problems.0))
        }
    }
}

impl RawAgent {
    fn validate(&self, system_hostname: &str, problems: &mut Problems) -> AgentSettings {
        let ip = if self.ip.is_empty() {
            None
        } else {
            match self.ip.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {
                    problems.push(format!(
                        "agent.ip: {} is the unspecified address; leave it empty to discover",
                        self.ip
                    ));
                    None
                }
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!("agent.ip: {:?} is not an IP address", self.ip));
                    None
                }
            }
        };
        if self.state_dir.is_empty() {
            problems.push("agent.state_dir: must not be empty".into());
        } else if !Path::new(&self.state_dir).is_absolute() {
            problems.push(format!(
                "agent.state_dir: {:?} is not an absolute path",
                self.state_dir
            ));
        }
        let (hostname, origin) = if self.hostname.is_empty() {
            (system_hostname, "the system hostname")
        } else {
            (self.hostname.as_str(), "agent.hostname")
        };
        // The hostname can be part of an etcd key, where '/' would change the key's hierarchy.
        if hostname.is_empty() {
            problems.push("agent.hostname: empty, and the system hostname is unknown".into());
        } else if hostname.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control()) {
            problems.push(format!(
                "agent.hostname: {origin} {hostname:?} contains '/', whitespace or control characters"
            ));
        }
        if self.allowed_paths.is_empty() {
            problems.push(
                "agent.allowed_paths: empty allows no file at all; use [\"/**\"] to allow every path the built-in deny list does not cover".into(),
            );
        }
        for pattern in &self.allowed_paths {
            if !pattern.starts_with('/') {
                problems.push(format!(
                    "agent.allowed_paths: {pattern:?} is not an absolute path or glob"
                ));
            } else if let Err(e) = glob::Pattern::new(pattern) {
                problems.push(format!(
                    "agent.allowed_paths: {pattern:?} is not a valid glob: {e}"
                ));
            }
        }
        AgentSettings {
            ip,
            state_dir: PathBuf::from(&self.state_dir),
            hostname: hostname.to_owned(),
            allowed_paths: self.allowed_paths.clone(),
            config_file: None,
        }
    }
}

impl RawLog {
    fn validate(&self, problems: &mut Problems) -> LogSettings {
        if self.level.trim().is_empty() {
            problems.push("log.level: must not be empty".into());
        } else if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            problems.push(format!(
                "log.level: {:?} is not a valid filter directive: {err}",
                self.level
            ));
        }
        let format = match self.format.as_str() {
            "auto" => LogFormat::Auto,
            "compact" => LogFormat::Compact,
            "json" => LogFormat::Json,
            other => {
                problems.one_of("log.format", other, &["auto", "compact", "json"]);
                LogFormat::Auto
            }
        };
        LogSettings {
            level: self.level.clone(),
            format,
        }
    }
}

/// Checks `host:port`: a name or address (IPv6 in brackets) and a non-zero port.
pub(super) fn host_port_problem(address: &str) -> Option<&'static str> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Some("is not host:port");
    };
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return Some("has no valid port");
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    (!host_ok).then_some("has no valid host")
}

fn template_problems(key: &str, template: &str, required: &[&str], problems: &mut Problems) {
    if template.is_empty() {
        problems.push(format!("{key}: must not be empty"));
        return;
    }
    if !required
        .iter()
        .any(|placeholder| template.contains(placeholder))
    {
        problems.push(format!(
            "{key}: {template:?} must contain {}",
            required.join(" or ")
        ));
    }
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start..];
        let end = tail.find('}').map_or(tail.len(), |end| end + 1);
        let placeholder = &tail[..end];
        if placeholder != "{ip}" && placeholder != "{hostname}" {
            problems.push(format!(
                "{key}: unknown placeholder {placeholder:?} (known: {{ip}}, {{hostname}})"
            ));
        }
        rest = &tail[end..];
    }
}

impl RawEtcd {
    fn validate(&self, problems: &mut Problems) -> EtcdSettings {
        if self.endpoints.is_empty() {
            problems.push("etcd.endpoints: must list at least one endpoint".into());
        }
        for endpoint in &self.endpoints {
            let address = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or(endpoint);
            if let Some(problem) = host_port_problem(address) {
                problems.push(format!(
                    "etcd.endpoints: {endpoint:?} {problem} (expected host:port or http(s)://host:port)"
                ));
            }
        }
        template_problems("etcd.key_template", &self.key_template, &["{ip}"], problems);
        template_problems(
            "etcd.status_key_template",
            &self.status_key_template,
            &["{ip}", "{hostname}"],
            problems,
        );
        let status_interval = problems.millis("etcd.status_interval_ms", self.status_interval_ms);
        let status_lease_ttl =
            problems.millis("etcd.status_lease_ttl_ms", self.status_lease_ttl_ms);
        // One late refresh must not let the lease, and with it the status key, expire.
        if self.status_lease_ttl_ms < self.status_interval_ms.saturating_mul(2) {
            problems.push(format!(
                "etcd.status_lease_ttl_ms: {} must be at least twice etcd.status_interval_ms ({})",
                self.status_lease_ttl_ms, self.status_interval_ms
            ));
        }
        let auth = match (self.username.is_empty(), self.password.is_empty()) {
            (true, true) => None,
            (false, false) => Some((self.username.clone(), self.password.clone())),
            _ => {
                problems.push("etcd.username and etcd.password: set both or neither".into());
                None
            }
        };
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            problems.push("etcd.cert_file and etcd.key_file: set both or neither".into());
        }
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        let wants_tls = https
            || !self.ca_file.is_empty()
            || !self.cert_file.is_empty()
            || !self.key_file.is_empty();
        // One client serves every endpoint, so TLS is all or nothing.
        if let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
            if wants_tls {
                problems.push(format!(
                    "etcd.endpoints: {plain:?} uses http://, but TLS is on (an https:// endpoint or a ca/cert/key file)"
                ));
            }
        }
        if !wants_tls && !self.tls_domain.is_empty() {
            problems.push(
                "etcd.tls_domain: set, but TLS is off (no ca/cert/key file and no https:// endpoint)"
                    .into(),
            );
        }
        let tls = wants_tls.then(|| EtcdTls {
            ca_file: non_empty_path(&self.ca_file),
            cert_file: non_empty_path(&self.cert_file),
            key_file: non_empty_path(&self.key_file),
            domain: non_empty(&self.tls_domain),
        });
        let backoff_initial = problems.millis("etcd.backoff_initial_ms", self.backoff_initial_ms);
        let backoff_max = problems.millis("etcd.backoff_max_ms", self.backoff_max_ms);
        if self.backoff_initial_ms > self.backoff_max_ms {
            problems.push(format!(
                "etcd.backoff_initial_ms: {} is greater than etcd.backoff_max_ms ({})",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        EtcdSettings {
            endpoints: self.endpoints.clone(),
            key_template: self.key_template.clone(),
            status_key_template: self.status_key_template.clone(),
            status_interval,
            status_lease_ttl,
            auth,
            tls,
            connect_timeout: problems.millis("etcd.connect_timeout_ms", self.connect_timeout_ms),
            request_timeout: problems.millis("etcd.request_timeout_ms", self.request_timeout_ms),
            backoff_initial,
            backoff_max,
        }
    }
}

impl RawKafka {
    fn validate(&self, hostname: &str, problems: &mut Problems) -> KafkaSettings {
        if self.brokers.is_empty() {
            problems.push("kafka.brokers: must list at least one broker".into());
        }
        for broker in &self.brokers {
            if let Some(problem) = host_port_problem(broker) {
                problems.push(format!(
                    "kafka.brokers: {broker:?} {problem} (expected host:port)"
                ));
            }
        }
        problems.one_of(
            "kafka.compression",
            &self.compression,
            &["none", "gzip", "snappy", "lz4", "zstd"],
        );
        // librdkafka's own limits, checked here so a bad value fails at startup with a key name.
        problems.range("kafka.linger_ms", self.linger_ms, 0, 900_000);
        problems.range("kafka.idle_flush_ms", self.idle_flush_ms, 0, 60_000);
        let batch_size_bytes = problems.range(
            "kafka.batch_size_bytes",
            self.batch_size_bytes,
            1,
            RDKAFKA_INT_MAX,
        );
        let batch_num_messages = problems.range(
            "kafka.batch_num_messages",
            self.batch_num_messages,
            1,
            1_000_000,
        );
        let queue_max_kbytes = problems.range(
            "kafka.queue_max_kbytes",
            self.queue_max_kbytes,
            1,
            RDKAFKA_INT_MAX,
        );
        let queue_max_messages = problems.range(
            "kafka.queue_max_messages",
            self.queue_max_messages,
            1,
            RDKAFKA_INT_MAX,
        );
        problems.range(
            "kafka.message_timeout_ms",
            self.message_timeout_ms,
            0,
            RDKAFKA_INT_MAX,
        );
        if self.message_timeout_ms != 0 && self.message_timeout_ms <= self.linger_ms {
            problems.push(format!(
                "kafka.message_timeout_ms: {} must be 0 or greater than kafka.linger_ms ({})",
                self.message_timeout_ms, self.linger_ms
            ));
        }
        problems.range(
            "kafka.request_timeout_ms",
            self.request_timeout_ms,
            1,
            900_000,
        );
        self.validate_security(problems);
        if self.on_fatal_error != "skip" {
            problems.one_of("kafka.on_fatal_error", &self.on_fatal_error, &["skip"]);
        }
        self.validate_options(problems);

        let client_id = if self.client_id.is_empty() {
            format!("logagent-{hostname}")
        } else {
            self.client_id.clone()
        };
        KafkaSettings {
            brokers: self.brokers.clone(),
            client_id,
            compression: self.compression.clone(),
            linger: Duration::from_millis(self.linger_ms),
            idle_flush: Duration::from_millis(self.idle_flush_ms),
            batch_size_bytes,
            batch_num_messages,
            queue_max_kbytes,
            queue_max_messages,
            message_timeout: (self.message_timeout_ms != 0)
                .then(|| Duration::from_millis(self.message_timeout_ms)),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            security_protocol: self.security_protocol.clone(),
            sasl_mechanism: non_empty(&self.sasl_mechanism),
            sasl_username: non_empty(&self.sasl_username),
            sasl_password: non_empty(&self.sasl_password),
            ssl_ca_location: non_empty_path(&self.ssl_ca_location),
            ssl_certificate_location: non_empty_path(&self.ssl_certificate_location),
            ssl_key_location: non_empty_path(&self.ssl_key_location),
            on_fatal_error: FatalErrorPolicy::Skip,
            options: self.options.clone(),
        }
    }

    fn validate_security(&self, problems: &mut Problems) {
        let protocol = self.security_protocol.as_str();
        problems.one_of(
            "kafka.security_protocol",
            protocol,
            &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
        );
        let sasl = protocol.starts_with("sasl_");
        let sasl_keys = [
            ("kafka.sasl_mechanism", &self.sasl_mechanism),
            ("kafka.sasl_username", &self.sasl_username),
            ("kafka.sasl_password", &self.sasl_password),
        ];
        for (key, value) in sasl_keys {
            if sasl && value.is_empty() {
                problems.push(format!(
                    "{key}: required when kafka.security_protocol is {protocol}"
                ));
            } else if !sasl && !value.is_empty() {
                problems.push(format!(
                    "{key}: set, but kafka.security_protocol {protocol:?} does not use SASL"
                ));
            }
        }
        if !self.sasl_mechanism.is_empty() {
            problems.one_of(
                "kafka.sasl_mechanism",
                &self.sasl_mechanism,
                &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
            );
        }
        let ssl = matches!(protocol, "ssl" | "sasl_ssl");
        let ssl_keys = [
            ("kafka.ssl_ca_location", &self.ssl_ca_location),
            (
                "kafka.ssl_certificate_location",
                &self.ssl_certificate_location,
            ),
            ("kafka.ssl_key_location", &self.ssl_key_location),
        ];
        for (key, value) in ssl_keys {
            if !ssl && !value.is_empty() {
                problems.push(format!(
                    "{key}: set, but kafka.security_protocol {protocol:?} does not use SSL"
                ));
            }
        }
        if self.ssl_certificate_location.is_empty() != self.ssl_key_location.is_empty() {
            problems.push(
                "kafka.ssl_certificate_location and kafka.ssl_key_location: set both or neither"
                    .into(),
            );
        }
    }

    fn validate_options(&self, problems: &mut Problems) {
        for key in self.options.keys() {
            let normalized = key.trim().to_ascii_lowercase();
            if normalized.is_empty() {
                problems.push("kafka.options: a key is empty".into());
            } else if FIXED_PROPERTIES.contains(&normalized.as_str()) {
                problems.push(format!(
                    "kafka.options.{key:?}: not allowed: the agent requires acks=all and idempotence"
                ));
            } else if let Some((_, typed)) = MANAGED_PROPERTIES
                .iter()
                .find(|(property, _)| *property == normalized)
            {
                problems.push(format!(
                    "kafka.options.{key:?}: conflicts with {typed}, which sets it; use {typed}"
                ));
            }
        }
    }
}

/// A line the local limit allows must be producible: an operator's `message.max.bytes` below it
/// would make the producer refuse such records, and they would be lost.
fn producer_fits_lines(settings: &Settings, problems: &mut Problems) {
    let need = settings.tail.max_line_bytes_limit + RECORD_OVERHEAD_BYTES;
    let set = settings
        .kafka
        .options
        .iter()
        .find(|(k, _)| k.trim() == "message.max.bytes");
    if let Some((_, value)) = set {
        match value.trim().parse::<u64>() {
            Ok(n) if (n as usize) < need => problems.push(format!(
                "kafka.options.\"message.max.bytes\": {n} is below tail.max_line_bytes_limit + {RECORD_OVERHEAD_BYTES} = {need}: \
                 records of lines the limit allows would be refused by the producer and lost; \
                 raise it or lower tail.max_line_bytes_limit (and tail.max_line_bytes)"
            )),
            Ok(_) => {}
            Err(_) => problems.push(format!(
                "kafka.options.\"message.max.bytes\": {value:?} is not a number"
            )),
        }
    }
}

impl RawTail {
    fn validate(&self, problems: &mut Problems) -> TailSettings {
        TailSettings {
            poll_interval: problems.millis("tail.poll_interval_ms", self.poll_interval_ms),
            read_buffer_bytes: problems.range(
                "tail.read_buffer_bytes",
                self.read_buffer_bytes,
                4_096,
                16_777_216,
            ),
            max_line_bytes: problems.range(
                "tail.max_line_bytes",
                self.max_line_bytes,
                1_024,
                self.max_line_bytes_limit,
            ),
            max_line_bytes_limit: problems.range(
                "tail.max_line_bytes_limit",
                self.max_line_bytes_limit,
                1_024,
                (MESSAGE_MAX_BYTES_CEILING - RECORD_OVERHEAD_BYTES) as u64,
            ),
            partial_line_timeout: problems
                .millis("tail.partial_line_timeout_ms", self.partial_line_timeout_ms),
            rotated_idle_timeout: problems
                .millis("tail.rotated_idle_timeout_ms", self.rotated_idle_timeout_ms),
            close_inactive: (self.close_inactive_ms > 0)
                .then(|| problems.millis("tail.close_inactive_ms", self.close_inactive_ms)),
            glob_rescan: problems.millis("tail.glob_rescan_ms", self.glob_rescan_ms),
            channel_capacity: problems.range(
                "tail.channel_capacity",
                self.channel_capacity,
                1,
                1 << 20,
            ),
            batch_max_lines: problems.range(
                "tail.batch_max_lines",
                self.batch_max_lines,
                1,
                1 << 20,
            ),
            max_open_files: problems.range("tail.max_open_files", self.max_open_files, 1, 1 << 20),
            max_rotated_files: problems.range(
                "tail.max_rotated_files",
                self.max_rotated_files,
                1,
                1 << 20,
            ),
            skip_empty_lines: self.skip_empty_lines,
        }
    }
}

impl RawHttp {
    fn validate(&self, problems: &mut Problems) -> HttpSettings {
        let listen = if self.listen.is_empty() {
            None
        } else {
            match self.listen.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.push(format!(
                        "http.listen: {:?} is not ip:port (leave it empty to disable)",
                        self.listen
                    ));
                    None
                }
            }
        };
        HttpSettings {
            listen,
            per_file_metrics: self.per_file_metrics,
        }
    }
}
