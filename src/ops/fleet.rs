//! `logagent status`: the status every live agent publishes to etcd, as a table.

use std::net::IpAddr;

use comfy_table::Table;
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
    bytesize::ByteSize::b(n).display().iec().to_string()
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

/// How hosts are ordered: by IP address as a number (10.0.0.9 before 10.0.0.10), then by key;
/// unreadable values last.
fn host_order(row: &Row) -> (bool, Option<IpAddr>, &str) {
    let ip = row.status.as_ref().ok().and_then(|s| s.ip.parse().ok());
    (row.status.is_err(), ip, &row.key)
}

/// The table, one line per host, sorted by IP; `now_unix_ms` gives the AGE column (since agent start).
pub fn render_table(rows: &[Row], now_unix_ms: u64) -> String {
    const HEADER: [&str; 8] = [
        "HOST", "IP", "VERSION", "CONFIG", "FILES", "BEHIND", "KAFKA", "AGE",
    ];
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| host_order(a).cmp(&host_order(b)));
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(HEADER);
    for row in sorted {
        table.add_row(match &row.status {
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
    // Two spaces between columns, none before the first: easy to read and to cut with awk.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
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
    fn hosts_are_sorted_by_ip_as_a_number_not_as_text() {
        let rows: Vec<Row> = ["10.0.0.10", "10.0.0.9", "10.0.0.2", "9.1.1.1"]
            .iter()
            .map(|ip| Row {
                key: format!("logagent/status/{ip}"),
                status: Ok(host("h", ip)),
            })
            .collect();
        let table = render_table(&rows, 1_000);
        let ips: Vec<&str> = table
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(ips, ["9.1.1.1", "10.0.0.2", "10.0.0.9", "10.0.0.10"]);
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
