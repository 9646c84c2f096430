//! Operating the agent: `/metrics` agrees with what was written and acknowledged, lag drains to 0,
//! `/readyz` follows the broker, and the status key in etcd lives exactly as long as the agent.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use support::{
    agent_config, append_lines, bin, consume, free_port, lines, scrape, wait_for, wait_until,
    Agent, Etcd, Storage, Tansu, World,
};

const TOPIC: &str = "obs_log";
const WAIT: Duration = Duration::from_secs(60);

/// The harness config with the HTTP endpoint on `port`.
fn config_with_http(
    state: &std::path::Path,
    etcd: &str,
    kafka: &str,
    ip: &str,
    port: u16,
) -> String {
    let base = agent_config(state, etcd, kafka, ip);
    assert!(
        base.contains("listen = \"\""),
        "harness config changed: {base}"
    );
    base.replace("listen = \"\"", &format!("listen = \"127.0.0.1:{port}\""))
}

/// `GET path` from the agent's endpoint; `None` while it does not answer (within 5 s).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    support::http_get(port, path, Duration::from_secs(5)).await
}

fn sample(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(-1.0)
}

/// Waits until the metric `key` reads `want`, saying what it read last.
async fn wait_metric(port: u16, key: &str, want: f64, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Some(m) = scrape(port).await {
            let v = m.get(key).copied();
            if v == Some(want) {
                return Ok(());
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("metric {key} did not reach {want} within {timeout:?} (last: {last:?})")
}

async fn wait_ready(port: u16, want: u16, timeout: Duration) -> anyhow::Result<String> {
    wait_for(
        &format!("/readyz to answer {want}"),
        timeout,
        || async move {
            get(port, "/readyz")
                .await
                .and_then(|(code, body)| (code == want).then_some(body))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_lines_acked_lag_drains_and_readiness_follows_the_broker(
) -> anyhow::Result<()> {
    const IP: &str = "10.20.30.51";
    let (etcd, mut kafka) = tokio::try_join!(Etcd::start(), Tansu::start(Storage::Sqlite))?;
    kafka.create_topic(TOPIC, 2).await?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("app.log");
    let first = lines("first", 0..300);
    append_lines(&log, &first)?;
    let port = free_port();
    let config = config_with_http(
        &dir.path().join("state"),
        &etcd.endpoint(),
        &kafka.bootstrap(),
        IP,
        port,
    );
    let _agent = Agent::start(&bin(), &config)?;
    wait_until("/healthz to answer 200", WAIT, || async {
        get(port, "/healthz")
            .await
            .is_some_and(|(c, b)| c == 200 && b.contains("\"ok\""))
    })
    .await?;

    let value = serde_json::json!([{"path": log, "topic": TOPIC}]).to_string();
    let revision = etcd.put(&format!("collect_log_conf/{IP}"), &value).await?;
    wait_ready(port, 200, WAIT).await?;

    let topic = format!("{{topic=\"{TOPIC}\"}}");
    let lag = format!("logagent_file_lag_bytes{{path=\"{}\"}}", log.display());
    let bytes = |ls: &[String]| ls.iter().map(|l| l.len() as f64).sum::<f64>();
    wait_metric(
        port,
        &format!("logagent_lines_acked_total{topic}"),
        300.0,
        WAIT,
    )
    .await?;
    wait_metric(port, &lag, 0.0, WAIT).await?;
    let m = scrape(port).await.expect("metrics answer");
    assert_eq!(
        sample(&m, &format!("logagent_lines_read_total{topic}")),
        300.0
    );
    assert_eq!(
        sample(&m, &format!("logagent_bytes_read_total{topic}")),
        bytes(&first)
    );
    assert_eq!(
        sample(&m, &format!("logagent_bytes_acked_total{topic}")),
        bytes(&first)
    );
    assert_eq!(sample(&m, "logagent_records_in_flight"), 0.0);
    assert_eq!(sample(&m, "logagent_files_open"), 1.0);
    assert_eq!(sample(&m, "logagent_config_revision"), revision as f64);
    assert_eq!(sample(&m, "logagent_kafka_reachable"), 1.0);

    // Broker gone: not ready (saying why), and what is written now is read but not acknowledged.
    kafka.stop().await;
    let body = wait_ready(port, 503, WAIT).await?;
    let why: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(why["failing"][0]["check"], "kafka", "{body}");
    let second = lines("second", 0..200);
    append_lines(&log, &second)?;
    let unacked: f64 = second.iter().map(|l| l.len() as f64 + 1.0).sum();
    wait_metric(
        port,
        &format!("logagent_lines_read_total{topic}"),
        500.0,
        WAIT,
    )
    .await?;
    wait_metric(port, &lag, unacked, WAIT).await?;
    let m = scrape(port).await.expect("metrics answer");
    assert_eq!(
        sample(&m, &format!("logagent_lines_acked_total{topic}")),
        300.0
    );
    assert_eq!(sample(&m, "logagent_kafka_reachable"), 0.0);

    // Broker back: ready again without any new traffic needed, the backlog drains, lag returns to 0.
    kafka.restart().await?;
    wait_ready(port, 200, WAIT).await?;
    wait_metric(
        port,
        &format!("logagent_lines_acked_total{topic}"),
        500.0,
        WAIT,
    )
    .await?;
    wait_metric(port, &lag, 0.0, WAIT).await?;
    let m = scrape(port).await.expect("metrics answer");
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        sample(&m, &format!("logagent_bytes_acked_total{topic}")),
        bytes(&all)
    );
    let got: BTreeSet<String> = consume(&kafka.bootstrap(), TOPIC, all.len(), WAIT)
        .await?
        .iter()
        .map(|c| c.text())
        .collect();
    assert_eq!(
        got,
        all.iter().cloned().collect::<BTreeSet<_>>(),
        "every line reached Kafka"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_every_failing_check_while_healthz_stays_ok() -> anyhow::Result<()> {
    // Nothing listens on either port: no configuration can be applied and no broker answers.
    let dir = tempfile::tempdir()?;
    let (etcd_port, kafka_port, port) = (free_port(), free_port(), free_port());
    let config = config_with_http(
        &dir.path().join("state"),
        &format!("127.0.0.1:{etcd_port}"),
        &format!("127.0.0.1:{kafka_port}"),
        "10.20.30.52",
        port,
    );
    let _agent = Agent::start(&bin(), &config)?;
    let body = wait_for(
        "/readyz to name both the config and the kafka check",
        WAIT,
        || async move {
            let (code, body) = get(port, "/readyz").await?;
            (code == 503 && body.contains("\"kafka\"") && body.contains("\"config\""))
                .then_some(body)
        },
    )
    .await?;
    assert!(body.contains("etcd is unreachable"), "{body}");
    assert_eq!(get(port, "/healthz").await.map(|(c, _)| c), Some(200));
    let (code, page) = get(port, "/metrics").await.expect("metrics answer");
    assert_eq!(code, 200);
    assert!(
        page.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {page}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_key_lives_with_the_agent_and_vanishes_after_the_lease_ttl() -> anyhow::Result<()> {
    const IP: &str = "10.20.30.53";
    let status_key = format!("logagent/status/{IP}");
    let mut w = World::start(IP, &[TOPIC], 1).await?;
    let log = w.log("app.log");
    append_lines(&log, &lines("s", 0..50))?;
    let revision = w.put(&[(&log, TOPIC)]).await?;
    let config = w.config();
    let etcd = &mut w.etcd;
    let env = [
        ("LOGAGENT_ETCD__STATUS_INTERVAL_MS", "500"),
        ("LOGAGENT_ETCD__STATUS_LEASE_TTL_MS", "2000"),
    ];
    let mut agent = Agent::start_with_env(&bin(), &config, &env)?;

    // The status reaches the caught-up state: the configured revision, one file, nothing behind.
    let status = wait_for("the status key to show the file caught up", WAIT, || {
        let (etcd, key) = (&etcd, &status_key);
        async move {
            let v: serde_json::Value = serde_json::from_str(&etcd.get(key).await.ok()??).ok()?;
            (v["entries"][0]["files_matched"] == 1
                && v["entries"][0]["bytes_behind"] == 0
                && v["applied_revision"] == revision)
                .then_some(v)
        }
    })
    .await?;
    assert_eq!(status["ip"], IP);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config_key"], format!("collect_log_conf/{IP}"));
    assert_eq!(status["entries"][0]["topic"], TOPIC);
    assert!(
        status["started_unix_ms"].as_u64().is_some_and(|t| t > 0),
        "{status}"
    );

    // `logagent status` shows it as a table row.
    let out = tokio::process::Command::new(bin())
        .args(["status", "--config"])
        .arg(agent.config_path())
        .output()
        .await?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "logagent status failed: {}{table}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.contains(IP))
        .unwrap_or_else(|| panic!("no row for {IP}:\n{table}"));
    assert!(
        row.contains(&revision.to_string()) && row.contains(env!("CARGO_PKG_VERSION")),
        "{table}"
    );
    let missing = tokio::process::Command::new(bin())
        .args(["status", "--host", "10.9.9.9", "--config"])
        .arg(agent.config_path())
        .output()
        .await?;
    assert_eq!(
        missing.status.code(),
        Some(1),
        "an unknown host is an error"
    );

    // An etcd outage breaks the keep-alive stream; afterwards the agent grants a new lease and keeps
    // it alive: the key outlives twice the TTL after etcd is back, which the old lease alone would not.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.restart().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = etcd.get(&status_key).await?;
    assert!(
        again.is_some(),
        "status key gone after the etcd outage; agent log:\n{}",
        agent.log_contents()
    );
    let log = agent.log_contents();
    assert_eq!(
        log.matches("cannot publish host status").count(),
        1,
        "logged once per outage:\n{log}"
    );

    // SIGKILL: nothing revokes the lease, so the key outlives the process until the TTL runs out.
    agent.sigkill();
    let killed = Instant::now();
    assert!(
        etcd.get(&status_key).await?.is_some(),
        "the key went before its lease expired"
    );
    wait_until(
        "the status key to vanish after the lease TTL",
        Duration::from_secs(15),
        || async { matches!(etcd.get(&status_key).await, Ok(None)) },
    )
    .await?;
    let gone_after = killed.elapsed();
    eprintln!("status key vanished {gone_after:?} after SIGKILL");
    assert!(
        gone_after >= Duration::from_millis(1000),
        "vanished after {gone_after:?}: before the lease could expire"
    );

    // A clean stop revokes the lease: the key goes at once.
    agent.restart()?;
    wait_until("the status key to be back after restart", WAIT, || async {
        matches!(etcd.get(&status_key).await, Ok(Some(_)))
    })
    .await?;
    agent.sigterm()?;
    let status = agent.wait_exit(WAIT).await?;
    assert!(status.success(), "clean exit: {status}");
    assert_eq!(
        etcd.get(&status_key).await?,
        None,
        "the lease was revoked at shutdown"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_new_configuration_at_once_not_at_the_next_interval() -> anyhow::Result<()> {
    const IP: &str = "10.20.30.54";
    let status_key = format!("logagent/status/{IP}");
    let w = World::start(IP, &[TOPIC], 1).await?;
    let log = w.log("app.log");
    append_lines(&log, &lines("s", 0..5))?;
    let r1 = w.put(&[(&log, TOPIC)]).await?;
    let (etcd, config) = (&w.etcd, w.config());
    // A status interval far longer than the test: only a rewrite on the change can pass it.
    let env = [
        ("LOGAGENT_ETCD__STATUS_INTERVAL_MS", "600000"),
        ("LOGAGENT_ETCD__STATUS_LEASE_TTL_MS", "1200000"),
    ];
    let _agent = Agent::start_with_env(&bin(), &config, &env)?;
    let revision_shown = |want: i64| {
        let (etcd, key) = (&etcd, &status_key);
        move || async move {
            let v: serde_json::Value = serde_json::from_str(&etcd.get(key).await.ok()??).ok()?;
            (v["applied_revision"] == want).then_some(())
        }
    };
    wait_for(
        "the status to show the first revision",
        Duration::from_secs(15),
        revision_shown(r1),
    )
    .await?;

    let second =
        serde_json::json!([{"path": log, "topic": TOPIC, "fields": {"v": "2"}}]).to_string();
    let r2 = etcd.put(&w.key(), &second).await?;
    // At most one write per second: the new value may wait up to a second behind the last write.
    wait_for(
        "the status to show the new revision within seconds (interval is 10 min)",
        Duration::from_secs(10),
        revision_shown(r2),
    )
    .await?;
    Ok(())
}
