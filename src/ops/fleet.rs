//! `logagent status`: the status every live agent publishes to etcd, as a table.

use std::fmt::Write;

use etcd_client::GetOptions;

use crate::config::etcd::{connect, EtcdError};
use crate::config::settings::EtcdSettings;
use crate::ops::status::HostStatus;

#[derive(thiserror::Error, Debug)]
pub enum FleetError {
    #[error("cannot read {prefix:?} from etcd {endpoints:?}: {source}")]
    Etcd {
        prefix: String,
        endpoints: Vec<String>,
        source: EtcdError,
    },
}

/// One status key: its value, or why it could not be read.
#[derive(Debug)]
pub struct Row {
    pub key: String,
    pub status: Result<HostStatus, String>,
}

/// The key prefix all hosts share: the template up to its first placeholder.
pub fn status_prefix(template: &str) -> &str {
    let cut = [template.find("{ip}"), template.find("{hostname}")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(template.len());
    &template[..cut]
}

/// Every host's status, or the hosts whose ip or hostname is `host`.
pub async fn fetch(settings: &EtcdSettings, host: Option<&str>) -> Result<Vec<Row>, FleetError> {
    let prefix = status_prefix(&settings.status_key_template).to_owned();
    let err = |source: EtcdError| FleetError::Etcd {
        prefix: prefix.clone(),
        endpoints: settings.endpoints.clone(),
        source,
    };
    let mut client = connect(settings).await.map_err(err)?;
    let resp = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| err(e.into()))?;
    let rows = resp
        .kvs()
        .iter()
        .map(|kv| Row {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            status: serde_json::from_slice::<HostStatus>(kv.value())
                .map_err(|e| format!("unreadable value: {e}")),
        })
        .filter(|r| match (host, &r.status) {
            (None, _) => true,
            (Some(h), Ok(s)) => s.ip == h || s.hostname == h,
            (Some(h), Err(_)) => r.key.ends_with(h),
        })
        .collect();
    Ok(rows)
}

/// "3d4h", "5h12m", "7m3s", "42s".
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// "12.3 MiB"-style sizes, so a backlog reads at a glance.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn config_cell(s: &HostStatus) -> String {
    let rev = match s.applied_revision {
        Some(r) if s.from_saved => format!("{r} (saved)"),
        Some(r) => r.to_string(),
        None => "none".into(),
    };
    match &s.config_error {
        // A multi-line rejection would break the table: its first line says enough.
        Some(e) => format!("{rev}; rejected: {}", e.lines().next().unwrap_or_default()),
        None => rev,
    }
}

/// The table, one line per host, sorted by key; `now_unix_ms` gives the AGE column (since agent start).
pub fn render_table(rows: &[Row], now_unix_ms: u64) -> String {
    const HEADER: [&str; 8] = [
        "HOST", "IP", "VERSION", "CONFIG", "FILES", "BEHIND", "KAFKA", "AGE",
    ];
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut cells: Vec<Vec<String>> = vec![HEADER.iter().map(|h| (*h).to_owned()).collect()];
    for row in sorted {
        cells.push(match &row.status {
            Ok(s) => vec![
                s.hostname.clone(),
                s.ip.clone(),
                s.version.clone(),
                config_cell(s),
                s.files().to_string(),
                human_bytes(s.bytes_behind()),
                if s.kafka_reachable { "ok" } else { "down" }.to_owned(),
                human_age(now_unix_ms.saturating_sub(s.started_unix_ms)),
            ],
            Err(e) => vec![row.key.clone(), String::new(), String::new(), e.clone()],
        });
    }
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::EntryStatus;

    fn host(name: &str, ip: &str) -> HostStatus {
        HostStatus {
            version: "0.1.0".into(),
            hostname: name.into(),
            ip: ip.into(),
            started_unix_ms: 1_000,
            applied_revision: Some(12),
            kafka_reachable: true,
            entries: vec![
                EntryStatus {
                    files_matched: 2,
                    bytes_behind: 1024,
                    ..EntryStatus::default()
                },
                EntryStatus {
                    files_matched: 1,
                    bytes_behind: 512,
                    ..EntryStatus::default()
                },
            ],
            ..HostStatus::default()
        }
    }

    #[test]
    fn prefix_is_the_template_before_its_first_placeholder() {
        assert_eq!(status_prefix("logagent/status/{ip}"), "logagent/status/");
        assert_eq!(status_prefix("s/{hostname}/{ip}"), "s/");
        assert_eq!(status_prefix("fixed"), "fixed");
    }

    #[test]
    fn ages_and_sizes_are_short() {
        assert_eq!(human_age(42_000), "42s");
        assert_eq!(human_age(7 * 60_000 + 3_000), "7m3s");
        assert_eq!(human_age(5 * 3_600_000 + 12 * 60_000), "5h12m");
        assert_eq!(human_age(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn table_has_one_aligned_line_per_host_sorted_by_key() {
        let mut rejected = host("db-1", "10.0.0.2");
        rejected.config_error =
            Some("etcd key k at revision 13 rejected:\nentry 0: topic is empty".into());
        rejected.kafka_reachable = false;
        let rows = vec![
            Row {
                key: "logagent/status/10.0.0.9".into(),
                status: Err("unreadable value: expected value".into()),
            },
            Row {
                key: "logagent/status/10.0.0.1".into(),
                status: Ok(host("web-1", "10.0.0.1")),
            },
            Row {
                key: "logagent/status/10.0.0.2".into(),
                status: Ok(rejected),
            },
        ];
        let table = render_table(&rows, 1_000 + 65_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let cols = |l: &str| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cols(lines[0]),
            ["HOST", "IP", "VERSION", "CONFIG", "FILES", "BEHIND", "KAFKA", "AGE"]
        );
        assert_eq!(
            cols(lines[1]),
            ["web-1", "10.0.0.1", "0.1.0", "12", "3", "1.5 KiB", "ok", "1m5s"]
        );
        assert_eq!(
            cols(lines[2]),
            [
                "db-1",
                "10.0.0.2",
                "0.1.0",
                "12; rejected: etcd key k at revision 13 rejected:",
                "3",
                "1.5 KiB",
                "down",
                "1m5s"
            ]
        );
        assert!(
            lines[3].starts_with("logagent/status/10.0.0.9")
                && lines[3].contains("unreadable value"),
            "{table}"
        );
        // Aligned: every column starts at the same offset on every host line.
        let ip_at = lines[0].find("IP").unwrap();
        assert_eq!(lines[1].find("10.0.0.1"), Some(ip_at));
        assert_eq!(lines[2].find("10.0.0.2"), Some(ip_at));
    }
}
