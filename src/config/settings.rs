//! Local agent configuration: the TOML file plus `LOGAGENT_SECTION__KEY` environment overrides.
//!
//! The user-facing types (`Raw*`) mirror the file one to one, with units in the key names; they
//! are turned into the runtime types (`Settings` and its sections) by [`RawConfig::validate`],
//! which reports every problem at once so an operator fixes the file in one pass.

mod influxdb;
mod raw;
mod runtime;
mod validate;

use std::path::{Path, PathBuf};

pub use influxdb::{InfluxApi, InfluxSettings, RawInfluxDb};
pub use raw::{
    RawAgent, RawCheckpoint, RawConfig, RawEtcd, RawHttp, RawKafka, RawLog, RawShutdown, RawTail,
};
pub use runtime::{
    AgentSettings, CheckpointSettings, EtcdSettings, EtcdTls, FatalErrorPolicy, HttpSettings,
    KafkaSettings, LogFormat, LogSettings, Settings, ShutdownSettings, TailSettings,
};

const ENV_PREFIX: &str = "LOGAGENT";
const ENV_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {}: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Reads `path` (which must exist), applies the `LOGAGENT_*` process environment, validates.
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Load {
        path: path.to_path_buf(),
        source,
    })?;
    let env = process_env()?;
    let mut settings = parse_raw(&text, path, &env)?.validate()?;
    // Absolute, so the read policy's deny list holds whatever the working directory.
    settings.agent.config_file =
        Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    Ok(settings)
}

/// Like [`load`], but from a string and with the environment given explicitly.
pub fn load_from_str(toml: &str, env: &[(String, String)]) -> Result<Settings, SettingsError> {
    parse_raw(toml, Path::new("<string>"), env)?.validate()
}

fn process_env() -> Result<Vec<(String, String)>, SettingsError> {
    let mut env = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().map(str::to_owned) else {
            continue;
        };
        if !is_override_var(&key) {
            continue;
        }
        match value.into_string() {
            Ok(value) => env.push((key, value)),
            Err(_) => problems.push(format!("environment variable {key} is not valid UTF-8")),
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(SettingsError::Invalid(problems))
    }
}

/// Only `LOGAGENT_SECTION__KEY` variables are overrides, so other `LOGAGENT_*` variables (for
/// example a CLI flag's env fallback such as `LOGAGENT_CONFIG`) are not mistaken for config keys.
fn is_override_var(key: &str) -> bool {
    key.strip_prefix(ENV_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| rest.contains(ENV_SEPARATOR))
}

fn parse_raw(
    toml: &str,
    origin: &Path,
    env: &[(String, String)],
) -> Result<RawConfig, SettingsError> {
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(key, _)| is_override_var(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    // No `try_parsing`: it would turn a password such as "007" or "nan" into a number and
    // back. Every override stays a string; the config crate converts it to the field's type.
    let environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator(ENV_SEPARATOR)
        .source(Some(overrides));
    let parse_error = |source| SettingsError::Parse {
        path: origin.to_path_buf(),
        source,
    };
    config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .add_source(environment)
        .build()
        .map_err(parse_error)?
        .try_deserialize()
        .map_err(parse_error)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::runtime::{FIXED_PROPERTIES, MANAGED_PROPERTIES};
    use super::validate::host_port_problem;
    use super::*;

    const CONF: &str = include_str!("../../conf/logagent.toml");

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn raw(toml: &str, pairs: &[(&str, &str)]) -> RawConfig {
        parse_raw(toml, Path::new("<test>"), &env(pairs)).expect("parses")
    }

    fn problems(config: &RawConfig) -> Vec<String> {
        match config.validate_with_hostname("web-1") {
            Err(SettingsError::Invalid(problems)) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|problem| problem.contains(needle))
    }

    #[test]
    fn auto_log_format_is_json_under_systemd_only() {
        assert!(LogFormat::Auto.is_json(true));
        assert!(!LogFormat::Auto.is_json(false));
        assert!(LogFormat::Json.is_json(false));
        assert!(!LogFormat::Compact.is_json(true));
    }

    #[test]
    fn empty_file_gives_defaults_that_validate() {
        assert_eq!(raw("", &[]), RawConfig::default());
        let settings = RawConfig::default()
            .validate_with_hostname("web-1")
            .expect("defaults are valid");
        assert_eq!(settings.agent.ip, None);
        assert_eq!(settings.agent.hostname, "web-1");
        assert_eq!(settings.agent.state_dir, PathBuf::from("/var/lib/logagent"));
        assert_eq!(settings.log.format, LogFormat::Auto);
        assert_eq!(settings.etcd.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!(settings.etcd.status_lease_ttl, Duration::from_secs(15));
        assert!(settings.etcd.auth.is_none());
        assert!(settings.etcd.tls.is_none());
        assert_eq!(settings.kafka.client_id, "logagent-web-1");
        assert_eq!(settings.kafka.message_timeout, None);
        assert_eq!(settings.kafka.on_fatal_error, FatalErrorPolicy::Skip);
        assert_eq!(settings.tail.read_buffer_bytes, 262_144);
        assert_eq!(settings.tail.poll_interval, Duration::from_millis(250));
        assert_eq!(
            settings.checkpoint.gone_retention,
            Duration::from_secs(86_400)
        );
        assert_eq!(settings.shutdown.grace, Duration::from_secs(10));
        assert_eq!(
            settings.http.listen,
            Some("127.0.0.1:9600".parse().unwrap())
        );
    }

    #[test]
    fn shipped_config_equals_defaults() {
        assert_eq!(raw(CONF, &[]), RawConfig::default());
        load_from_str(CONF, &[]).expect("shipped config is valid");
    }

    /// Key names of a config value tree, as dotted paths.
    fn key_paths(prefix: &str, value: config::Value, out: &mut Vec<String>) {
        if let Ok(table) = value.clone().into_table() {
            for (key, child) in table {
                let path = format!("{prefix}{key}");
                out.push(path.clone());
                key_paths(&format!("{path}."), child, out);
            }
        }
    }

    #[test]
    fn shipped_config_lists_every_key() {
        let mut documented = Vec::new();
        let file = config::Config::builder()
            .add_source(config::File::from_str(CONF, config::FileFormat::Toml))
            .build()
            .unwrap();
        key_paths("", file.cache, &mut documented);
        let mut all = Vec::new();
        let defaults = config::Config::try_from(&RawConfig::default()).unwrap();
        key_paths("", defaults.cache, &mut all);
        // The options map is empty by default, and an empty map serializes to nothing.
        all.push("kafka.options".into());
        documented.sort();
        all.sort();
        assert_eq!(documented, all);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let unknown_key = "[agent]\nipp = \"10.0.0.5\"\n";
        let err = parse_raw(unknown_key, Path::new("x.toml"), &[]).unwrap_err();
        assert!(matches!(err, SettingsError::Parse { .. }));
        assert!(err.to_string().contains("ipp"), "{err}");

        let unknown_section = "[agents]\nip = \"10.0.0.5\"\n";
        let err = parse_raw(unknown_section, Path::new("x.toml"), &[]).unwrap_err();
        assert!(err.to_string().contains("agents"), "{err}");

        let unknown_env = env(&[("LOGAGENT_TAIL__POLL_MS", "5")]);
        let err = parse_raw("", Path::new("x.toml"), &unknown_env).unwrap_err();
        assert!(err.to_string().contains("poll_ms"), "{err}");
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, SettingsError::Load { .. }));
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.conf");
        std::fs::write(&path, "[agent]\nip = \"192.0.2.7\"\n").unwrap();
        let settings = load(&path).expect("loads");
        assert_eq!(settings.agent.ip, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn dotted_option_keys_survive_as_one_key() {
        let toml = r#"
            [kafka.options]
            "socket.timeout.ms" = "1000"
            "topic.metadata.refresh.interval.ms" = 60000
        "#;
        let config = raw(toml, &[("LOGAGENT_KAFKA__LINGER_MS", "7")]);
        let expected: BTreeMap<String, String> = [
            ("socket.timeout.ms", "1000"),
            ("topic.metadata.refresh.interval.ms", "60000"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        assert_eq!(config.kafka.options, expected);
        assert_eq!(config.kafka.linger_ms, 7);
    }

    #[test]
    fn env_overrides_scalars_and_lists() {
        let toml = "[etcd]\nendpoints = [\"file:2379\"]\n[tail]\nskip_empty_lines = true\n";
        let overrides = env(&[
            ("LOGAGENT_AGENT__IP", "10.0.0.5"),
            ("LOGAGENT_KAFKA__BROKERS", "a:9092, b:9092"),
            (
                "LOGAGENT_ETCD__ENDPOINTS",
                "https://e1:2379,https://e2:2379",
            ),
            ("LOGAGENT_ETCD__STATUS_INTERVAL_MS", "2000"),
            ("LOGAGENT_TAIL__SKIP_EMPTY_LINES", "false"),
            ("LOGAGENT_KAFKA__SASL_PASSWORD", "007"),
            // Not of the SECTION__KEY form: left to the CLI, not a config key.
            ("LOGAGENT_CONFIG", "/etc/logagent.toml"),
            ("OTHER_AGENT__IP", "10.9.9.9"),
        ]);
        let config = parse_raw(toml, Path::new("<test>"), &overrides).unwrap();
        assert_eq!(config.agent.ip, "10.0.0.5");
        assert_eq!(config.kafka.brokers, vec!["a:9092", "b:9092"]);
        assert_eq!(
            config.etcd.endpoints,
            vec!["https://e1:2379", "https://e2:2379"]
        );
        assert_eq!(config.etcd.status_interval_ms, 2000);
        assert!(!config.tail.skip_empty_lines);
        assert_eq!(config.kafka.sasl_password, "007");

        let settings = load_from_str("", &env(&[("LOGAGENT_AGENT__IP", "10.0.0.5")])).unwrap();
        assert_eq!(settings.agent.ip, Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn env_type_errors_name_the_key() {
        let err = parse_raw(
            "",
            Path::new("<test>"),
            &env(&[("LOGAGENT_TAIL__POLL_INTERVAL_MS", "soon")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("poll_interval_ms"), "{err}");
    }

    #[test]
    fn ip_override_must_parse() {
        let good = raw("", &[("LOGAGENT_AGENT__IP", "fe80::1")]);
        let settings = good.validate_with_hostname("h").unwrap();
        assert_eq!(settings.agent.ip, Some("fe80::1".parse().unwrap()));

        let bad = raw("", &[("LOGAGENT_AGENT__IP", "10.0.0.300")]);
        assert!(has(&problems(&bad), "agent.ip: \"10.0.0.300\""));

        let unspecified = raw("[agent]\nip = \"0.0.0.0\"", &[]);
        assert!(has(&problems(&unspecified), "agent.ip"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let toml = r#"
            [agent]
            state_dir = "relative/dir"
            [log]
            level = "info,=bogus=["
            format = "xml"
            [etcd]
            endpoints = []
            key_template = "collect_log_conf/{host}"
            status_interval_ms = 0
            username = "root"
            [kafka]
            compression = "brotli"
            security_protocol = "sasl_ssl"
            [tail]
            read_buffer_bytes = 100
            max_line_bytes = 10
            [http]
            listen = "localhost"
        "#;
        let found = problems(&raw(toml, &[]));
        for needle in [
            "agent.state_dir",
            "log.level",
            "log.format",
            "etcd.endpoints",
            "etcd.key_template: \"collect_log_conf/{host}\" must contain {ip}",
            "unknown placeholder \"{host}\"",
            "etcd.status_interval_ms: must be greater than 0",
            "etcd.username and etcd.password",
            "kafka.compression",
            "kafka.sasl_mechanism: required",
            "kafka.sasl_username: required",
            "tail.read_buffer_bytes",
            "tail.max_line_bytes",
            "http.listen",
        ] {
            assert!(has(&found, needle), "missing {needle:?} in {found:#?}");
        }
        let message = SettingsError::Invalid(found.clone()).to_string();
        assert_eq!(message.lines().count(), found.len() + 1, "{message}");
    }

    #[test]
    fn passthrough_conflicts_are_errors() {
        let toml = r#"
            [kafka.options]
            "compression.type" = "gzip"
            "queue.buffering.max.ms" = "10"
            "acks" = "1"
            "enable.idempotence" = "false"
            "socket.keepalive.enable" = "true"
        "#;
        let found = problems(&raw(toml, &[]));
        assert!(has(
            &found,
            "kafka.options.\"compression.type\": conflicts with kafka.compression"
        ));
        assert!(has(
            &found,
            "kafka.options.\"queue.buffering.max.ms\": conflicts with kafka.linger_ms"
        ));
        assert!(has(&found, "kafka.options.\"acks\": not allowed"));
        assert!(has(
            &found,
            "kafka.options.\"enable.idempotence\": not allowed"
        ));
        assert!(!has(&found, "socket.keepalive.enable"));
        assert_eq!(found.len(), 4, "{found:#?}");
    }

    /// A producer limit below what the local line limit lets through would refuse such records
    /// (and the agent would skip them): refused at start instead, naming both keys.
    #[test]
    fn message_max_bytes_must_fit_the_line_limit() {
        let small = r#"
            [kafka.options]
            "message.max.bytes" = "20000"
        "#;
        let found = problems(&raw(small, &[]));
        assert!(
            has(
                &found,
                "kafka.options.\"message.max.bytes\": 20000 is below tail.max_line_bytes_limit + 65536"
            ),
            "{found:#?}"
        );
        let fits = r#"
            [kafka.options]
            "message.max.bytes" = "80000"
            [tail]
            max_line_bytes = 10240
            max_line_bytes_limit = 10240
        "#;
        let settings = raw(fits, &[]).validate_with_hostname("h");
        assert!(settings.is_ok(), "{settings:?}");
        let over = r#"
            [tail]
            max_line_bytes = 4096
            max_line_bytes_limit = 2048
        "#;
        assert!(has(
            &problems(&raw(over, &[])),
            "tail.max_line_bytes: 4096 is outside 1024..=2048"
        ));
    }

    #[test]
    fn the_producer_is_sized_for_the_line_limit() {
        let toml = r#"
            [tail]
            max_line_bytes_limit = 33554432
        "#;
        let settings = raw(toml, &[]).validate_with_hostname("h").unwrap();
        let props = settings.producer_properties();
        let max = props
            .iter()
            .find(|(k, _)| k == "message.max.bytes")
            .unwrap();
        assert_eq!(max.1, (33_554_432 + 65_536).to_string());
    }

    #[test]
    fn librdkafka_properties_lists_typed_then_options() {
        let toml = r#"
            [kafka]
            brokers = ["k1:9092", "k2:9092"]
            compression = "zstd"
            message_timeout_ms = 60000
            security_protocol = "sasl_ssl"
            sasl_mechanism = "SCRAM-SHA-512"
            sasl_username = "agent"
            sasl_password = "hunter2"
            ssl_ca_location = "/etc/ssl/kafka-ca.pem"
            [kafka.options]
            "socket.timeout.ms" = "1000"
        "#;
        let settings = load_from_str(toml, &[]).unwrap();
        let props = settings.kafka.librdkafka_properties();
        let get = |key: &str| {
            props
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("bootstrap.servers"), Some("k1:9092,k2:9092"));
        assert_eq!(get("acks"), Some("all"));
        assert_eq!(get("enable.idempotence"), Some("true"));
        assert_eq!(get("compression.type"), Some("zstd"));
        assert_eq!(get("linger.ms"), Some("20"));
        assert_eq!(get("message.timeout.ms"), Some("60000"));
        assert_eq!(get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.password"), Some("hunter2"));
        assert_eq!(get("ssl.ca.location"), Some("/etc/ssl/kafka-ca.pem"));
        assert_eq!(get("ssl.key.location"), None);
        assert_eq!(
            props.last().unwrap(),
            &("socket.timeout.ms".into(), "1000".into())
        );
        let keys: Vec<&str> = props.iter().map(|(k, _)| k.as_str()).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "no property twice: {keys:?}");
        // Every typed property is guarded against a passthrough override.
        for key in &keys[..keys.len() - 1] {
            let guarded = FIXED_PROPERTIES.contains(key)
                || MANAGED_PROPERTIES
                    .iter()
                    .any(|(property, _)| property == key);
            assert!(guarded, "{key} is not guarded");
        }
        let debug = format!("{:?}", settings.kafka);
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn default_properties_have_no_security_extras() {
        let settings = RawConfig::default().validate_with_hostname("h").unwrap();
        let props = settings.kafka.librdkafka_properties();
        assert!(props
            .iter()
            .all(|(k, _)| !k.starts_with("sasl.") && !k.starts_with("ssl.")));
        assert!(props.contains(&("message.timeout.ms".into(), "0".into())));
        assert!(props.contains(&("client.id".into(), "logagent-h".into())));
    }

    #[test]
    fn kafka_security_keys_must_match_the_protocol() {
        let toml = r#"
            [kafka]
            sasl_username = "u"
            ssl_key_location = "/k.pem"
            sasl_mechanism = "GSSAPI"
            message_timeout_ms = 5
            linger_ms = 5
        "#;
        let found = problems(&raw(toml, &[]));
        assert!(has(&found, "kafka.sasl_username: set, but"));
        assert!(has(&found, "kafka.ssl_key_location: set, but"));
        assert!(has(
            &found,
            "kafka.sasl_mechanism: \"GSSAPI\" is not one of"
        ));
        assert!(has(
            &found,
            "kafka.ssl_certificate_location and kafka.ssl_key_location"
        ));
        assert!(has(
            &found,
            "kafka.message_timeout_ms: 5 must be 0 or greater"
        ));
    }

    #[test]
    fn etcd_auth_and_tls() {
        let toml = r#"
            [etcd]
            endpoints = ["https://etcd-1:2379", "etcd-2:2379"]
            username = "agent"
            password = "s3cret"
            ca_file = "/etc/etcd/ca.pem"
            tls_domain = "etcd.internal"
        "#;
        let settings = load_from_str(toml, &[]).unwrap();
        let etcd = &settings.etcd;
        assert_eq!(etcd.auth, Some(("agent".into(), "s3cret".into())));
        let tls = etcd.tls.clone().expect("tls on");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/etcd/ca.pem")));
        assert_eq!(tls.cert_file, None);
        assert_eq!(tls.domain.as_deref(), Some("etcd.internal"));
        assert!(!format!("{etcd:?}").contains("s3cret"));

        let https_only = load_from_str("[etcd]\nendpoints = [\"https://e:2379\"]", &[]).unwrap();
        assert_eq!(
            https_only.etcd.tls,
            Some(EtcdTls {
                ca_file: None,
                cert_file: None,
                key_file: None,
                domain: None
            })
        );

        let toml = r#"
            [etcd]
            endpoints = ["http://e1:2379", "e2", "https://:2379"]
            cert_file = "/c.pem"
            status_lease_ttl_ms = 6000
            backoff_initial_ms = 20000
        "#;
        let found = problems(&raw(toml, &[]));
        assert!(has(&found, "\"e2\" is not host:port"));
        assert!(has(&found, "\"https://:2379\" has no valid host"));
        assert!(has(
            &found,
            "\"http://e1:2379\" uses http://, but TLS is on"
        ));
        assert!(has(&found, "etcd.cert_file and etcd.key_file"));
        assert!(has(
            &found,
            "etcd.status_lease_ttl_ms: 6000 must be at least twice"
        ));
        assert!(has(&found, "etcd.backoff_initial_ms: 20000 is greater"));

        let found = problems(&raw("[etcd]\ntls_domain = \"x\"", &[]));
        assert!(has(&found, "etcd.tls_domain: set, but TLS is off"));
    }

    #[test]
    fn render_key_fills_placeholders() {
        assert_eq!(
            EtcdSettings::render_key("collect_log_conf/{ip}", "10.0.0.5", "web-1"),
            "collect_log_conf/10.0.0.5"
        );
        assert_eq!(
            EtcdSettings::render_key("status/{hostname}/{ip}", "::1", "web-1"),
            "status/web-1/::1"
        );
        let settings = load_from_str("[etcd]\nstatus_lease_ttl_ms = 10001", &[]).unwrap();
        assert_eq!(settings.etcd.status_lease_ttl_secs(), 11);
    }

    #[test]
    fn host_port_forms() {
        for ok in [
            "127.0.0.1:2379",
            "etcd-1.internal:2379",
            "[::1]:9092",
            "h_1:1",
        ] {
            assert_eq!(host_port_problem(ok), None, "{ok}");
        }
        for bad in [
            "localhost",
            ":9092",
            "h:0",
            "h:70000",
            "[::1:9092",
            "a b:1",
            "h:p",
        ] {
            assert!(host_port_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn hostname_override_and_client_id() {
        let settings = raw(
            "[agent]\nhostname = \"db-7\"\n[kafka]\nclient_id = \"\"",
            &[],
        )
        .validate_with_hostname("ignored")
        .unwrap();
        assert_eq!(settings.agent.hostname, "db-7");
        assert_eq!(settings.kafka.client_id, "logagent-db-7");
        let found = problems(&raw("[agent]\nhostname = \"a/b\"", &[]));
        assert!(has(&found, "agent.hostname"));
    }

    #[test]
    fn zero_durations_are_rejected_except_message_timeout() {
        let toml = r#"
            [tail]
            poll_interval_ms = 0
            [checkpoint]
            interval_ms = 0
            [shutdown]
            grace_ms = 0
            [kafka]
            message_timeout_ms = 0
            linger_ms = 0
        "#;
        let found = problems(&raw(toml, &[]));
        assert!(has(&found, "tail.poll_interval_ms"));
        assert!(has(&found, "checkpoint.interval_ms"));
        assert!(has(&found, "shutdown.grace_ms"));
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn empty_listen_disables_http() {
        let settings = load_from_str("[http]\nlisten = \"\"", &[]).unwrap();
        assert_eq!(settings.http.listen, None);
    }

    /// A renamed file is kept for minutes (applications reopen late), and the number of them held
    /// open is bounded.
    #[test]
    fn rotated_files_are_kept_five_minutes_and_their_number_is_bounded() {
        let settings = RawConfig::default()
            .validate_with_hostname("web-1")
            .expect("defaults are valid");
        assert_eq!(settings.tail.rotated_idle_timeout, Duration::from_secs(300));
        assert_eq!(settings.tail.max_rotated_files, 64);
        let zero = raw("[tail]\nmax_rotated_files = 0\n", &[]);
        assert!(has(&problems(&zero), "tail.max_rotated_files"));
    }
}
