//! The agent's `/metrics` page, for tests that must see a condition inside the agent (lines read,
//! acknowledged, in flight) before acting on it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `config_toml` (from `agent_config`) with the HTTP endpoint on `127.0.0.1:port`.
pub fn with_http_listener(config_toml: &str, port: u16) -> String {
    assert!(
        config_toml.contains("listen = \"\""),
        "harness config changed: {config_toml}"
    );
    config_toml.replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""))
}

/// `GET path` over plain HTTP/1.1 from the agent's endpoint: (status code, body); `None` when it
/// does not answer within `timeout`.
pub async fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    };
    tokio::time::timeout(timeout, io).await.ok().flatten()
}

/// Samples of an OpenMetrics text page, keyed by `name{labels}` as printed.
pub fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The samples of the agent's `/metrics`; `None` while the endpoint does not answer (within 5 s)
/// or answers with an error.
pub async fn scrape(port: u16) -> Option<HashMap<String, f64>> {
    match http_get(port, "/metrics", Duration::from_secs(5)).await {
        Some((200, body)) => Some(samples(&body)),
        _ => None,
    }
}

/// Lines read and lines acknowledged by Kafka for `topic`, as the agent counts them (since it
/// started); `None` while the endpoint does not answer or the topic has no counters yet.
pub async fn lines_read_and_acked(port: u16, topic: &str) -> Option<(u64, u64)> {
    let m = scrape(port).await?;
    let label = format!("{{topic=\"{topic}\"}}");
    let read = *m.get(&format!("logagent_lines_read_total{label}"))?;
    let acked = *m.get(&format!("logagent_lines_acked_total{label}"))?;
    Some((read as u64, acked as u64))
}
