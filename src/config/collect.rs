//! The etcd value: which files this host collects and the Kafka topic each one goes to.
//!
//! The value is a JSON list of entries, e.g. `[{"path":"/var/log/nginx/access.log","topic":"web_log"}]`.
//! A value with any problem is rejected as a whole, with every problem listed, so the agent keeps
//! running on its last good configuration instead of applying half of a broken one.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use super::records::{Format, MetaHeader, RecordOptions};

/// What this host lets an etcd value ask for, from the local configuration (etcd cannot raise it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLimits {
    /// `tail.max_line_bytes_limit`: an entry's `max_line_bytes` may not exceed it, so memory stays
    /// bounded and every line an entry lets through fits the producer's `message.max.bytes`.
    pub max_line_bytes: usize,
    /// The local configuration has an `[influxdb]` section, so host-metrics entries may write there.
    pub influxdb: bool,
}

impl Default for EntryLimits {
    fn default() -> Self {
        EntryLimits {
            max_line_bytes: 16 << 20,
            influxdb: false,
        }
    }
}

/// The most an entry's `fields` (names and values, sent as headers on every record) may hold, so
/// that a record's key and headers fit the producer's room beyond the line.
pub const MAX_FIELDS_BYTES: usize = 16 * 1024;

/// Kafka's own limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CollectEntry {
    /// Absolute path, or an absolute glob pattern (see [`is_glob`]).
    pub path: String,
    pub topic: String,
    /// Glob patterns matched against the full path of each file the entry finds.
    pub exclude: Vec<String>,
    pub key: KeyMode,
    pub from: StartFrom,
    /// Overrides `tail.max_line_bytes` for this entry.
    pub max_line_bytes: Option<usize>,
    /// A regex matching the first line of a record; following lines that do not match are
    /// appended to it.
    pub multiline: Option<String>,
    /// Sent as Kafka headers with every record.
    pub fields: BTreeMap<String, String>,
    /// Overrides `tail.skip_empty_lines` for this entry.
    pub skip_empty_lines: Option<bool>,
    /// Encoding, format, metadata headers, line filters, throttle, ignore_older (all optional).
    #[serde(flatten)]
    pub records: RecordOptions,
}

/// Which file paths an entry covers: its path (a file, or a glob) minus its `exclude` globs. Built
/// once per use; the one place that answers "is this file the entry's?".
#[derive(Debug)]
pub struct PathMatcher {
    path: std::path::PathBuf,
    pattern: Option<glob::Pattern>,
    excludes: Vec<glob::Pattern>,
}

impl PathMatcher {
    pub fn new(entry: &CollectEntry) -> PathMatcher {
        PathMatcher {
            path: entry.path.clone().into(),
            pattern: glob::Pattern::new(&entry.path).ok(),
            excludes: entry
                .exclude
                .iter()
                .filter_map(|e| glob::Pattern::new(e).ok())
                .collect(),
        }
    }

    pub fn is_excluded(&self, path: &std::path::Path) -> bool {
        self.excludes
            .iter()
            .any(|e| e.matches_path_with(path, GLOB_OPTIONS))
    }

    pub fn owns(&self, path: &std::path::Path) -> bool {
        // The pattern first: a glob entry's files never equal its path, and `Path` equality
        // compares component by component once the bytes differ (a sixth of the status build
        // with 10,000 files). The literal comparison still owns a name the pattern reads as a glob.
        let matched = self
            .pattern
            .as_ref()
            .is_some_and(|p| p.matches_path_with(path, GLOB_OPTIONS))
            || path == self.path;
        matched && !self.is_excluded(path)
    }
}

/// The semantics discovery's directory walk (`glob::glob`) gives a pattern: `*`, `?` and `[...]`
/// never match `/` (only `**` spans directories). Status, the restart drain and excludes match
/// with the same rule, so they count exactly the files discovery opens.
pub const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl CollectEntry {
    /// An entry in the seed fleets' form: a path and a topic, every option at its default.
    pub fn new(path: impl Into<String>, topic: impl Into<String>) -> CollectEntry {
        CollectEntry {
            path: path.into(),
            topic: topic.into(),
            exclude: Vec::new(),
            key: KeyMode::None,
            from: StartFrom::Beginning,
            max_line_bytes: None,
            multiline: None,
            fields: BTreeMap::new(),
            skip_empty_lines: None,
            records: RecordOptions::default(),
        }
    }
}

/// The Kafka record key. JSON: `"none"`, `"path"`, `"host"` or `{"fixed": "text"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    #[default]
    None,
    Path,
    Host,
    Fixed(String),
}

/// Where reading starts in a file the agent has no offset for. JSON: `"beginning"` or `"end"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("etcd key {key} at revision {revision} rejected: {}", .problems.join("; "))]
pub struct CollectError {
    pub key: String,
    pub revision: i64,
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    path: String,
    topic: String,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    key: KeyMode,
    #[serde(default)]
    from: StartFrom,
    max_line_bytes: Option<u64>,
    multiline: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    skip_empty_lines: Option<bool>,
    // Record options (config::records), listed one by one: serde's flatten cannot be combined with
    // deny_unknown_fields.
    encoding: Option<String>,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    headers: Vec<MetaHeader>,
    #[serde(default)]
    include_lines: Vec<String>,
    #[serde(default)]
    exclude_lines: Vec<String>,
    max_bytes_per_s: Option<u64>,
    ignore_older_ms: Option<u64>,
}

impl RawEntry {
    fn records(&self) -> RecordOptions {
        RecordOptions {
            encoding: self.encoding.clone(),
            format: self.format,
            headers: self.headers.clone(),
            include_lines: self.include_lines.clone(),
            exclude_lines: self.exclude_lines.clone(),
            max_bytes_per_s: self.max_bytes_per_s,
            ignore_older_ms: self.ignore_older_ms,
        }
    }
}

/// True when `path` is a glob pattern rather than one file.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Parses and checks the value of `key`: the file entries only (see [`parse_value`]).
pub fn parse_entries(
    key: &str,
    revision: i64,
    value: &[u8],
    limits: &EntryLimits,
) -> Result<Vec<CollectEntry>, CollectError> {
    parse_value(key, revision, value, limits).map(|v| v.files)
}

/// Every entry of a value, by type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entries {
    /// `"type"` absent or `"file"`.
    pub files: Vec<CollectEntry>,
    /// `"type": "host_metrics"`.
    pub host_metrics: Vec<crate::config::host_metrics::HostMetricsEntry>,
}

/// Parses and checks the value of `key`. Entries are numbered from 1 in problem messages.
pub fn parse_value(
    key: &str,
    revision: i64,
    value: &[u8],
    limits: &EntryLimits,
) -> Result<Entries, CollectError> {
    let fail = |problems: Vec<String>| CollectError {
        key: key.to_owned(),
        revision,
        problems,
    };
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|err| fail(vec![format!("not JSON: {err}")]))?;
    let serde_json::Value::Array(items) = json else {
        return Err(fail(vec![format!(
            "not a JSON list of entries (found {})",
            json_kind(&json)
        )]));
    };

    let mut problems = Vec::new();
    let mut entries = Vec::with_capacity(items.len());
    let mut first_by_path: HashMap<String, (usize, String)> = HashMap::new();
    let mut host_metrics = Vec::new();
    let mut first_by_output: HashMap<String, usize> = HashMap::new();
    for (index, mut item) in items.into_iter().enumerate() {
        let number = index + 1;
        match item.get("type").map(|t| t.as_str()) {
            None => {}
            Some(Some("file")) => {
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("type");
                }
            }
            Some(Some("host_metrics")) => {
                let label = format!("entry {number} (host_metrics)");
                match crate::config::host_metrics::parse(item, topic_problem, limits.influxdb) {
                    Ok(e) => match first_by_output.insert(e.output.id(), number) {
                        Some(first) => problems.push(format!(
                            "{label}: entry {first} already sends host metrics there"
                        )),
                        None => host_metrics.push(e),
                    },
                    Err(found) => problems.extend(found.iter().map(|p| format!("{label}: {p}"))),
                }
                continue;
            }
            Some(other) => {
                problems.push(format!(
                    "entry {number}: type {} is not \"file\" or \"host_metrics\"",
                    other.map_or_else(|| "(not a string)".to_owned(), |t| format!("{t:?}"))
                ));
                continue;
            }
        }
        let label = match item.get("path").and_then(serde_json::Value::as_str) {
            Some(path) => format!("entry {number} ({path})"),
            None => format!("entry {number}"),
        };
        let raw = match RawEntry::deserialize(item) {
            Ok(raw) => raw,
            Err(err) => {
                problems.push(format!("{label}: {err}"));
                continue;
            }
        };
        let entry_problems = check(&raw, limits);
        problems.extend(
            entry_problems
                .iter()
                .map(|problem| format!("{label}: {problem}")),
        );
        match first_by_path.get(&raw.path) {
            Some((first, topic)) if *topic == raw.topic => {
                problems.push(format!("{label}: duplicate entry (same as entry {first})"));
            }
            Some((first, topic)) => problems.push(format!(
                "{label}: entry {first} already sends this path to topic {topic:?}; a path goes to one topic"
            )),
            None => {
                first_by_path.insert(raw.path.clone(), (number, raw.topic.clone()));
            }
        }
        if entry_problems.is_empty() {
            let records = raw.records();
            entries.push(CollectEntry {
                path: raw.path,
                topic: raw.topic,
                exclude: raw.exclude,
                key: raw.key,
                from: raw.from,
                max_line_bytes: raw.max_line_bytes.map(|bytes| bytes as usize),
                multiline: raw.multiline,
                fields: raw.fields,
                skip_empty_lines: raw.skip_empty_lines,
                records,
            });
        }
    }
    if problems.is_empty() {
        Ok(Entries {
            files: entries,
            host_metrics,
        })
    } else {
        Err(fail(problems))
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check(raw: &RawEntry, limits: &EntryLimits) -> Vec<String> {
    let mut problems = Vec::new();
    if raw.path.is_empty() {
        problems.push("path is empty".to_owned());
    } else if !raw.path.starts_with('/') {
        problems.push(format!("path {:?} is not absolute", raw.path));
    } else if let Err(err) = glob::Pattern::new(&raw.path) {
        problems.push(format!("path {:?} is not a valid glob: {err}", raw.path));
    }
    for pattern in &raw.exclude {
        if pattern.is_empty() {
            problems.push("an exclude pattern is empty".to_owned());
        } else if let Err(err) = glob::Pattern::new(pattern) {
            problems.push(format!("exclude {pattern:?} is not a valid glob: {err}"));
        }
    }
    if let Some(problem) = topic_problem(&raw.topic) {
        problems.push(format!("topic {:?} {problem}", raw.topic));
    }
    if let KeyMode::Fixed(text) = &raw.key {
        if text.is_empty() {
            problems.push("key {\"fixed\": \"\"} is empty; use \"none\" for no key".to_owned());
        }
    }
    if let Some(bytes) = raw.max_line_bytes {
        let limit = limits.max_line_bytes;
        if bytes == 0 || bytes > limit as u64 {
            problems.push(format!(
                "max_line_bytes {bytes} is outside 1..={limit} (this host's tail.max_line_bytes_limit)"
            ));
        }
    }
    if let Some(pattern) = &raw.multiline {
        if pattern.is_empty() {
            problems.push("multiline is empty; leave it out to send each line alone".to_owned());
        } else if let Err(err) = regex::Regex::new(pattern) {
            problems.push(format!(
                "multiline {pattern:?} is not a valid regex: {}",
                crate::config::records::regex_reason(&err)
            ));
        }
    }
    if raw.fields.keys().any(String::is_empty) {
        problems.push("fields has an empty name".to_owned());
    }
    let fields_bytes: usize = raw.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
    if fields_bytes > MAX_FIELDS_BYTES {
        problems.push(format!(
            "fields hold {fields_bytes} bytes, more than {MAX_FIELDS_BYTES} (they ride on every record)"
        ));
    }
    problems.extend(raw.records().check());
    problems
}

/// Why Kafka would refuse `topic` as a topic name, if it would.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        Some("is empty".to_owned())
    } else if topic.len() > MAX_TOPIC_LEN {
        Some(format!("is longer than {MAX_TOPIC_LEN} characters"))
    } else if topic == "." || topic == ".." {
        Some("is not a valid topic name".to_owned())
    } else if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY: &str = "collect_log_conf/10.0.0.5";

    fn parse(value: &str) -> Result<Vec<CollectEntry>, CollectError> {
        parse_entries(KEY, 42, value.as_bytes(), &EntryLimits::default())
    }

    fn problems(value: &str) -> Vec<String> {
        parse(value).expect_err("should be rejected").problems
    }

    fn assert_problem(value: &str, needle: &str) {
        let found = problems(value);
        assert!(
            found.iter().any(|problem| problem.contains(needle)),
            "no {needle:?} in {found:#?}"
        );
    }

    #[test]
    fn seed_format_parses_with_defaults() {
        let entries = parse(r#"[{"path":"/var/log/nginx/access.log","topic":"web_log"}]"#).unwrap();
        assert_eq!(
            entries,
            vec![CollectEntry {
                path: "/var/log/nginx/access.log".into(),
                topic: "web_log".into(),
                exclude: vec![],
                key: KeyMode::None,
                from: StartFrom::Beginning,
                max_line_bytes: None,
                multiline: None,
                fields: BTreeMap::new(),
                skip_empty_lines: None,
                records: RecordOptions::default(),
            }]
        );
    }

    #[test]
    fn empty_list_is_valid() {
        assert_eq!(parse("[]").unwrap(), vec![]);
        assert_eq!(parse(" [ ] \n").unwrap(), vec![]);
    }

    #[test]
    fn full_entry_round_trips() {
        let entry = CollectEntry {
            path: "/var/log/app/*.log".into(),
            topic: "app.logs-v2".into(),
            exclude: vec!["*.gz".into(), "/var/log/app/debug-*.log".into()],
            key: KeyMode::Fixed("app-1".into()),
            from: StartFrom::End,
            max_line_bytes: Some(65_536),
            multiline: Some(r"^\d{4}-\d{2}-\d{2} ".into()),
            fields: [("env".to_owned(), "prod".to_owned())].into(),
            skip_empty_lines: Some(true),
            records: RecordOptions {
                encoding: Some("gbk".into()),
                format: Format::Json,
                headers: vec![MetaHeader::Id, MetaHeader::Host, MetaHeader::Offset],
                include_lines: vec!["ERROR".into()],
                exclude_lines: vec!["^DEBUG".into()],
                max_bytes_per_s: Some(1 << 20),
                ignore_older_ms: Some(86_400_000),
            },
        };
        let others = [KeyMode::None, KeyMode::Path, KeyMode::Host].map(|key| CollectEntry {
            path: format!("/var/log/{key:?}.log"),
            key,
            ..entry.clone()
        });
        let mut all = vec![entry];
        all.extend(others);
        let json = serde_json::to_vec(&all).unwrap();
        assert_eq!(
            parse_entries(KEY, 1, &json, &EntryLimits::default()).unwrap(),
            all
        );
    }

    #[test]
    fn json_spellings_of_key_and_from() {
        let entries = parse(
            r#"[
                {"path":"/a.log","topic":"t","key":"path","from":"end"},
                {"path":"/b.log","topic":"t","key":"host","from":"beginning"},
                {"path":"/c.log","topic":"t","key":{"fixed":"k"}},
                {"path":"/d.log","topic":"t","key":"none"}
            ]"#,
        )
        .unwrap();
        let keys: Vec<KeyMode> = entries.iter().map(|entry| entry.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                KeyMode::Path,
                KeyMode::Host,
                KeyMode::Fixed("k".into()),
                KeyMode::None
            ]
        );
        assert_eq!(entries[0].from, StartFrom::End);
        assert_eq!(entries[1].from, StartFrom::Beginning);
        assert_problem(
            r#"[{"path":"/a","topic":"t","key":"random"}]"#,
            "entry 1 (/a)",
        );
        assert_problem(r#"[{"path":"/a","topic":"t","from":"middle"}]"#, "middle");
    }

    #[test]
    fn shape_problems() {
        assert_problem("", "not JSON");
        assert_problem("[{", "not JSON");
        let not_utf8 = parse_entries(KEY, 1, b"[\"\xff\"]", &EntryLimits::default()).unwrap_err();
        assert_eq!(not_utf8.problems.len(), 1);
        assert!(not_utf8.problems[0].starts_with("not JSON"));
        assert_problem(
            r#"{"path":"/a","topic":"t"}"#,
            "not a JSON list of entries (found an object)",
        );
        assert_problem("null", "found null");
        assert_problem(r#"["/var/log/a.log"]"#, "entry 1: invalid type");
        assert_problem(r#"[{"topic":"t"}]"#, "entry 1: missing field `path`");
        assert_problem(r#"[{"path":"/a"}]"#, "entry 1 (/a): missing field `topic`");
        assert_problem(
            r#"[{"path":"/a","topic":"t","tpoic":"u"}]"#,
            "unknown field `tpoic`",
        );
        assert_problem(r#"[{"path":"/a","topic":5}]"#, "invalid type: integer `5`");
        assert_problem(
            r#"[{"path":"/a","topic":"t","fields":{"a":1}}]"#,
            "invalid type",
        );
        assert_problem(r#"[{"path":"/a","topic":"t","max_line_bytes":-1}]"#, "-1");
        assert_problem(
            r#"[{"path":"/a","topic":"t","skip_empty_lines":"yes"}]"#,
            "invalid type",
        );
    }

    #[test]
    fn path_problems() {
        assert_problem(r#"[{"path":"","topic":"t"}]"#, "entry 1 (): path is empty");
        assert_problem(
            r#"[{"path":"var/log/a.log","topic":"t"}]"#,
            "is not absolute",
        );
        assert_problem(
            r#"[{"path":"/var/log/[a.log","topic":"t"}]"#,
            "not a valid glob",
        );
        assert_problem(
            r#"[{"path":"/var/log/*.log","topic":"t","exclude":["/var/log/[x"]}]"#,
            "exclude \"/var/log/[x\" is not a valid glob",
        );
        assert_problem(
            r#"[{"path":"/var/log/*.log","topic":"t","exclude":[""]}]"#,
            "exclude pattern is empty",
        );
    }

    #[test]
    fn topic_problems() {
        for (topic, needle) in [
            ("", "is empty"),
            (".", "not a valid topic name"),
            ("..", "not a valid topic name"),
            ("web log", "may only contain"),
            ("web/log", "may only contain"),
            ("jüdisch", "may only contain"),
        ] {
            let value = serde_json::json!([{"path": "/a.log", "topic": topic}]).to_string();
            assert_problem(&value, needle);
        }
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        assert_problem(
            &format!(r#"[{{"path":"/a","topic":"{long}"}}]"#),
            "longer than 249",
        );
        let longest = "t".repeat(MAX_TOPIC_LEN);
        assert!(parse(&format!(r#"[{{"path":"/a","topic":"{longest}"}}]"#)).is_ok());
        assert!(parse(r#"[{"path":"/a","topic":"A-z_0.9"}]"#).is_ok());
    }

    /// The local limit caps what etcd may ask for (an etcd writer asking for 1 GiB lines would make
    /// every tailer able to hold 1 GiB, and the producer refuse the records).
    #[test]
    fn the_local_limit_caps_max_line_bytes_and_fields_are_bounded() {
        let limits = EntryLimits {
            max_line_bytes: 4096,
            ..EntryLimits::default()
        };
        let err = parse_entries(
            KEY,
            1,
            br#"[{"path":"/a","topic":"t","max_line_bytes":4097}]"#,
            &limits,
        )
        .unwrap_err();
        assert!(
            err.problems[0].contains("outside 1..=4096 (this host's tail.max_line_bytes_limit)"),
            "{err:?}"
        );
        assert!(parse_entries(
            KEY,
            1,
            br#"[{"path":"/a","topic":"t","max_line_bytes":4096}]"#,
            &limits
        )
        .is_ok());
        let big = "v".repeat(MAX_FIELDS_BYTES);
        assert_problem(
            &format!(r#"[{{"path":"/a","topic":"t","fields":{{"k":"{big}"}}}}]"#),
            "more than 16384",
        );
    }

    /// Discovery walks directories, so `/logs/*.log` never opens `/logs/sub/a.log`: the matcher that
    /// status, the restart drain and excludes use must say the same (it let `*` match `/`).
    #[test]
    fn a_star_never_spans_directories_as_in_discovery() {
        let mut e = CollectEntry::new("/logs/*.log", "t");
        e.exclude = vec!["/logs/*.old.log".into()];
        let m = PathMatcher::new(&e);
        assert!(m.owns(Path::new("/logs/a.log")));
        assert!(!m.owns(Path::new("/logs/sub/a.log")));
        assert!(!m.owns(Path::new("/logs/a.old.log")));
        assert!(!m.is_excluded(Path::new("/logs/sub/a.old.log")));
        let deep = PathMatcher::new(&CollectEntry::new("/logs/**/*.log", "t"));
        assert!(deep.owns(Path::new("/logs/sub/deeper/a.log")));
    }

    #[test]
    fn option_problems() {
        assert_problem(
            r#"[{"path":"/a","topic":"t","max_line_bytes":0}]"#,
            "max_line_bytes 0 is outside",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","max_line_bytes":16777217}]"#,
            "is outside 1..=16777216 (this host's tail.max_line_bytes_limit)",
        );
        assert!(parse(r#"[{"path":"/a","topic":"t","max_line_bytes":16777216}]"#).is_ok());
        assert!(parse(r#"[{"path":"/a","topic":"t","max_line_bytes":1}]"#).is_ok());
        assert_problem(
            r#"[{"path":"/a","topic":"t","multiline":"(abc"}]"#,
            "not a valid regex: unclosed group",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","multiline":""}]"#,
            "multiline is empty",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","key":{"fixed":""}}]"#,
            "is empty; use \"none\"",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","fields":{"":"x"}}]"#,
            "fields has an empty name",
        );
        // The record options are checked with the rest, under the entry's label.
        assert_problem(
            r#"[{"path":"/a","topic":"t","include_lines":["(x"],"encoding":"nope"}]"#,
            "entry 1 (/a): include_lines \"(x\" is not a valid regex: unclosed group",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","encoding":"nope"}]"#,
            "entry 1 (/a): encoding \"nope\" is not a WHATWG encoding label",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t","headers":["id","colour"]}]"#,
            "unknown variant `colour`",
        );
        assert_problem(r#"[{"path":"/a","topic":"t","format":"xml"}]"#, "xml");
        for problem in problems(r#"[{"path":"/a","topic":"t","multiline":"(abc"}]"#) {
            assert!(!problem.contains('\n'), "{problem:?}");
        }
    }

    #[test]
    fn duplicate_paths() {
        assert_problem(
            r#"[{"path":"/a","topic":"t"},{"path":"/b","topic":"t"},{"path":"/a","topic":"t"}]"#,
            "entry 3 (/a): duplicate entry (same as entry 1)",
        );
        assert_problem(
            r#"[{"path":"/a","topic":"t"},{"path":"/a","topic":"u"}]"#,
            "entry 2 (/a): entry 1 already sends this path to topic \"t\"",
        );
        assert!(parse(r#"[{"path":"/a","topic":"t"},{"path":"/b","topic":"t"}]"#).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let value = r#"[
            {"path":"/ok.log","topic":"fine"},
            {"path":"relative.log","topic":"bad topic","multiline":"("},
            {"path":"/x.log","topic":"t","colour":"red"},
            {"path":"/ok.log","topic":"other"}
        ]"#;
        let err = parse(value).unwrap_err();
        assert_eq!(err.key, KEY);
        assert_eq!(err.revision, 42);
        assert_eq!(err.problems.len(), 5, "{:#?}", err.problems);
        let message = err.to_string();
        assert!(message.starts_with("etcd key collect_log_conf/10.0.0.5 at revision 42 rejected:"));
        for needle in [
            "entry 2 (relative.log): path \"relative.log\" is not absolute",
            "entry 2 (relative.log): topic \"bad topic\" may only contain",
            "entry 2 (relative.log): multiline \"(\" is not a valid regex",
            "entry 3 (/x.log): unknown field `colour`",
            "entry 4 (/ok.log): entry 1 already sends this path",
        ] {
            assert!(message.contains(needle), "no {needle:?} in {message}");
        }
        assert_eq!(
            message.lines().count(),
            1,
            "one log line, problems joined by \"; \""
        );
    }

    #[test]
    fn host_metrics_entries_beside_file_entries() {
        let v = parse_value(
            KEY,
            1,
            br#"[{"path":"/a.log","topic":"t","type":"file"},
                {"type":"host_metrics","topic":"host_metrics","interval_ms":10000},
                {"path":"/b.log","topic":"t"}]"#,
            &EntryLimits::default(),
        )
        .unwrap();
        assert_eq!(v.files.len(), 2);
        assert_eq!(v.files[0], CollectEntry::new("/a.log", "t"));
        assert_eq!(v.host_metrics.len(), 1);
        assert_eq!(v.host_metrics[0].interval_ms, 10_000);
        // The file-only view is unchanged by them.
        assert_eq!(
            parse(r#"[{"type":"host_metrics","topic":"m"},{"path":"/a","topic":"t"}]"#).unwrap(),
            vec![CollectEntry::new("/a", "t")]
        );
    }

    #[test]
    fn a_bad_host_metrics_entry_rejects_the_whole_value() {
        let found = problems(
            r#"[{"path":"/a","topic":"t"},
                {"type":"host_metrics","output":"influxdb","interval_ms":5},
                {"type":"host_metrics","topic":"m"},{"type":"host_metrics","topic":"m"},
                {"type":"syslog"}]"#,
        );
        for needle in [
            "entry 2 (host_metrics): output \"influxdb\" needs an [influxdb] section",
            "entry 2 (host_metrics): interval_ms 5 is outside",
            "entry 4 (host_metrics): entry 3 already sends host metrics there",
            "entry 5: type \"syslog\" is not \"file\" or \"host_metrics\"",
        ] {
            assert!(
                found.iter().any(|p| p.contains(needle)),
                "no {needle:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 4, "{found:#?}");
        let with_influx = EntryLimits {
            influxdb: true,
            ..EntryLimits::default()
        };
        let v = parse_value(
            KEY,
            1,
            br#"[{"type":"host_metrics","output":"influxdb"}]"#,
            &with_influx,
        )
        .unwrap();
        assert_eq!(
            v.host_metrics[0].output,
            crate::config::host_metrics::Output::InfluxDb
        );
    }

    #[test]
    fn glob_detection() {
        assert!(is_glob("/var/log/*.log"));
        assert!(is_glob("/var/log/app-?.log"));
        assert!(is_glob("/var/log/app-[0-9].log"));
        assert!(!is_glob("/var/log/nginx/access.log"));
    }

    #[test]
    fn path_matcher_covers_the_path_or_glob_minus_excludes() {
        let mut e = CollectEntry::new("/var/log/app/*.log", "t");
        e.exclude = vec!["/var/log/app/debug*.log".into()];
        let m = PathMatcher::new(&e);
        assert!(m.owns(Path::new("/var/log/app/a.log")));
        assert!(!m.owns(Path::new("/var/log/app/debug1.log")), "excluded");
        assert!(!m.owns(Path::new("/var/log/app/a.log.1")), "not matched");
        let plain = PathMatcher::new(&CollectEntry::new("/var/log/x.log", "t"));
        assert!(plain.owns(Path::new("/var/log/x.log")));
        assert!(!plain.owns(Path::new("/var/log/x.log.1")));
        // A name with glob characters: the pattern's class and the literal file both belong.
        let brackets = PathMatcher::new(&CollectEntry::new("/var/log/a[1].log", "t"));
        assert!(brackets.owns(Path::new("/var/log/a1.log")));
        assert!(brackets.owns(Path::new("/var/log/a[1].log")));
        assert!(
            brackets.owns(Path::new("/var/log//a[1].log")),
            "as `Path` compares"
        );
        assert!(!brackets.owns(Path::new("/var/log/a2.log")));
    }
}
