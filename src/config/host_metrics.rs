//! The `"type": "host_metrics"` collect entry: what to sample, how often, and where the points go.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Sampling more often than this would let an etcd writer turn the agent into a CPU hog.
pub const MIN_INTERVAL_MS: u64 = 1_000;
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;

/// Telegraf's input names; each is one measurement of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Collector {
    Cpu,
    Mem,
    Swap,
    Disk,
    Diskio,
    Net,
    System,
}

impl Collector {
    pub const ALL: [Collector; 7] = [
        Collector::Cpu,
        Collector::Mem,
        Collector::Swap,
        Collector::Disk,
        Collector::Diskio,
        Collector::Net,
        Collector::System,
    ];
}

/// Where an entry's points go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Output {
    /// One Kafka record per point, through the same producer as the lines.
    Topic(String),
    /// POSTed to the InfluxDB of the local `[influxdb]` section.
    InfluxDb,
}

impl Output {
    /// What identifies the entry across configurations: one host_metrics entry per destination.
    pub fn id(&self) -> String {
        match self {
            Output::Topic(t) => format!("host_metrics:topic:{t}"),
            Output::InfluxDb => "host_metrics:influxdb".to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct HostMetricsEntry {
    pub output: Output,
    pub interval_ms: u64,
    pub collectors: BTreeSet<Collector>,
    /// Include globs for `disk` mount points; empty: every real file system.
    pub mountpoints: Vec<String>,
    /// Include globs for `net` interfaces; empty: every interface but `lo`.
    pub interfaces: Vec<String>,
}

impl HostMetricsEntry {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn wants(&self, c: Collector) -> bool {
        self.collectors.contains(&c)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostMetrics {
    #[serde(rename = "type")]
    _type: String,
    topic: Option<String>,
    output: Option<String>,
    interval_ms: Option<u64>,
    collectors: Option<Vec<Collector>>,
    #[serde(default)]
    mountpoints: Vec<String>,
    #[serde(default)]
    interfaces: Vec<String>,
}

/// Parses one entry whose `type` is `host_metrics`; every problem is returned, one line each.
/// `topic_problem` is the file entries' topic check; `influxdb` says whether the local
/// configuration has an `[influxdb]` section.
pub fn parse(
    item: serde_json::Value,
    topic_problem: impl Fn(&str) -> Option<String>,
    influxdb: bool,
) -> Result<HostMetricsEntry, Vec<String>> {
    let raw = RawHostMetrics::deserialize(item).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let output = match (&raw.topic, raw.output.as_deref()) {
        (Some(topic), None) => {
            if let Some(p) = topic_problem(topic) {
                problems.push(format!("topic {topic:?} {p}"));
            }
            Some(Output::Topic(topic.clone()))
        }
        (None, Some("influxdb")) => {
            if !influxdb {
                problems.push(
                    "output \"influxdb\" needs an [influxdb] section (url) in this host's local configuration"
                        .to_owned(),
                );
            }
            Some(Output::InfluxDb)
        }
        (None, Some(other)) => {
            problems.push(format!(
                "output {other:?} is not \"influxdb\" (give a topic to send to Kafka)"
            ));
            None
        }
        (Some(_), Some(_)) => {
            problems.push("give either a topic or \"output\": \"influxdb\", not both".to_owned());
            None
        }
        (None, None) => {
            problems.push("needs a topic or \"output\": \"influxdb\"".to_owned());
            None
        }
    };
    let interval_ms = raw.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
        problems.push(format!(
            "interval_ms {interval_ms} is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}"
        ));
    }
    let collectors: BTreeSet<Collector> = match raw.collectors {
        None => Collector::ALL.into_iter().collect(),
        Some(list) if list.is_empty() => {
            problems
                .push("collectors is an empty list; leave it out to collect everything".to_owned());
            BTreeSet::new()
        }
        Some(list) => list.into_iter().collect(),
    };
    for (what, globs) in [
        ("mountpoints", &raw.mountpoints),
        ("interfaces", &raw.interfaces),
    ] {
        for g in globs {
            if g.is_empty() {
                problems.push(format!("a {what} pattern is empty"));
            } else if let Err(e) = glob::Pattern::new(g) {
                problems.push(format!("{what} {g:?} is not a valid glob: {e}"));
            }
        }
    }
    match output {
        Some(output) if problems.is_empty() => Ok(HostMetricsEntry {
            output,
            interval_ms,
            collectors,
            mountpoints: raw.mountpoints,
            interfaces: raw.interfaces,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: serde_json::Value) -> HostMetricsEntry {
        parse(v, |_| None, true).unwrap()
    }

    fn problems(v: serde_json::Value, influxdb: bool) -> Vec<String> {
        parse(
            v,
            |t| (t.contains(' ')).then(|| "may only contain ...".to_owned()),
            influxdb,
        )
        .unwrap_err()
    }

    #[test]
    fn defaults_collect_everything_every_10_s() {
        let e = ok(json!({"type": "host_metrics", "topic": "host_metrics"}));
        assert_eq!(e.output, Output::Topic("host_metrics".into()));
        assert_eq!(e.interval_ms, 10_000);
        assert_eq!(e.collectors.len(), 7);
        assert!(e.mountpoints.is_empty() && e.interfaces.is_empty());
    }

    #[test]
    fn every_field() {
        let e = ok(
            json!({"type": "host_metrics", "output": "influxdb", "interval_ms": 1000,
            "collectors": ["cpu", "net", "cpu"], "mountpoints": ["/", "/data*"], "interfaces": ["eth*"]}),
        );
        assert_eq!(e.output, Output::InfluxDb);
        assert_eq!(
            e.collectors.into_iter().collect::<Vec<_>>(),
            vec![Collector::Cpu, Collector::Net]
        );
        assert_eq!(e.mountpoints, vec!["/", "/data*"]);
        assert_eq!(e.output.id(), "host_metrics:influxdb");
    }

    #[test]
    fn every_problem_at_once() {
        let p = problems(
            json!({"type": "host_metrics", "topic": "bad topic", "interval_ms": 10,
                "collectors": [], "mountpoints": ["[x"], "interfaces": [""]}),
            true,
        );
        assert_eq!(p.len(), 5, "{p:#?}");
        for needle in [
            "topic \"bad topic\" may only contain",
            "interval_ms 10 is outside 1000..=3600000",
            "collectors is an empty list",
            "mountpoints \"[x\" is not a valid glob",
            "a interfaces pattern is empty",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle:?} in {p:#?}");
        }
    }

    #[test]
    fn output_problems() {
        let p = problems(json!({"type": "host_metrics", "output": "influxdb"}), false);
        assert!(p[0].contains("needs an [influxdb] section"), "{p:?}");
        let p = problems(
            json!({"type": "host_metrics", "output": "influxdb", "topic": "t"}),
            true,
        );
        assert!(p[0].contains("not both"), "{p:?}");
        let p = problems(json!({"type": "host_metrics"}), true);
        assert!(p[0].contains("needs a topic"), "{p:?}");
        let p = problems(json!({"type": "host_metrics", "output": "graphite"}), true);
        assert!(p[0].contains("\"graphite\" is not \"influxdb\""), "{p:?}");
    }

    #[test]
    fn unknown_fields_and_collectors_are_refused() {
        let p = problems(
            json!({"type": "host_metrics", "topic": "t", "path": "/var/log/x"}),
            true,
        );
        assert!(p[0].contains("unknown field `path`"), "{p:?}");
        let p = problems(
            json!({"type": "host_metrics", "topic": "t", "collectors": ["gpu"]}),
            true,
        );
        assert!(p[0].contains("unknown variant `gpu`"), "{p:?}");
    }
}
