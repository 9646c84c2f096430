//! The agent's JSON log as events: a test started with [`World::json_agent`] reads an event's
//! fields (`revision`, `key`, `path`) instead of guessing at a text layout.
//!
//! [`World::json_agent`]: super::World::json_agent

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Agent;

/// The agent's log events so far, in order. A line still being written does not parse yet and is
/// left out, so `events(..).len()` is a valid "from here on" mark.
pub fn events(agent: &Agent) -> Vec<Value> {
    agent
        .log_contents()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

pub fn message(ev: &Value) -> &str {
    ev["message"].as_str().unwrap_or("")
}

pub fn level(ev: &Value) -> &str {
    ev["level"].as_str().unwrap_or("")
}

pub fn applied(ev: &Value, revision: i64) -> bool {
    message(ev) == "collect configuration applied" && ev["revision"].as_i64() == Some(revision)
}

pub fn log_tail(agent: &Agent, n: usize) -> String {
    let log = agent.log_contents();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Waits for the first event after the first `after` events that satisfies `pred`.
pub async fn wait_event(
    agent: &mut Agent,
    after: usize,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        if let Some(ev) = events(agent).into_iter().skip(after).find(&pred) {
            eprintln!("waited {:?} for {what}", start.elapsed());
            return Ok(ev);
        }
        if !agent.is_running() {
            if let Some(ev) = events(agent).into_iter().skip(after).find(&pred) {
                return Ok(ev);
            }
            anyhow::bail!(
                "agent exited before logging {what}; log tail:\n{}",
                log_tail(agent, 40)
            );
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "agent did not log {what} within {timeout:?}; log tail:\n{}",
                log_tail(agent, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_applied(
    agent: &mut Agent,
    revision: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let what = format!("\"collect configuration applied\" for revision {revision}");
    wait_event(agent, 0, &what, timeout, |e| applied(e, revision)).await?;
    Ok(())
}

/// Waits until a tailer opened `path` after event `after`: "applied" is logged when the value is
/// accepted, and the reconciler puts it into effect a moment later.
pub async fn wait_tailing(
    agent: &mut Agent,
    after: usize,
    path: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let p = path.display().to_string();
    let what = format!("a tailer opening {p}");
    wait_event(agent, after, &what, timeout, |e| {
        message(e).starts_with("tailing file") && e["path"] == p.as_str()
    })
    .await?;
    Ok(())
}

pub fn is_reconcile_event(ev: &Value) -> bool {
    let m = message(ev);
    [
        "applying collect configuration",
        "starting entry",
        "stopping entry",
        "restarting entry",
        "collect configuration is empty",
    ]
    .iter()
    .any(|p| m.starts_with(p))
}

/// Waits until the reconciler has logged nothing for `quiet`.
pub async fn wait_reconciler_quiet(
    agent: &mut Agent,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut count = usize::MAX;
    let mut since = Instant::now();
    loop {
        let now = events(agent)
            .iter()
            .filter(|e| is_reconcile_event(e))
            .count();
        if now != count {
            count = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "reconciler still busy after {timeout:?}; log tail:\n{}",
                log_tail(agent, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
