//! Host metrics end to end: the agent binary with `"type": "host_metrics"` entries, against a real
//! etcd, tansu and InfluxDB 1.x (Debian's `influxd`), all started by the test support. Points that
//! went through Kafka are written to InfluxDB by the test and queried back with InfluxQL (proving
//! the line protocol valid); the direct output is queried the same way, through an InfluxDB outage.

mod support;

use std::time::{Duration, Instant};

use support::{append_lines, bin, consume_for, scrape, wait_until, Agent, Influx, Storage, World};

const IP: &str = "10.20.30.41";
const HOST: &str = "hm-test-host";
const EVENT: Duration = Duration::from_secs(60);
const MEASUREMENTS: [&str; 7] = ["cpu", "mem", "swap", "disk", "diskio", "net", "system"];

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Cores in /proc/stat: the agent emits one `cpu` point per core plus `cpu-total`.
fn cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count()
}

/// Measurement, tags and timestamp of one line of line protocol (no escaped spaces expected in
/// these tags except for paths, which the tests do not split on).
fn head_and_time(line: &str) -> (String, Vec<(String, String)>, i64) {
    let (head, _) = line
        .split_once(' ')
        .expect("a space after measurement and tags");
    let ts = line
        .rsplit_once(' ')
        .unwrap()
        .1
        .parse()
        .expect("ns timestamp");
    let mut parts = head.split(',');
    let m = parts.next().unwrap().to_owned();
    let tags = parts
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (m, tags, ts)
}

fn start_agent(config: &str) -> anyhow::Result<Agent> {
    Agent::start_with_env(&bin(), config, &[("LOGAGENT_AGENT__HOSTNAME", HOST)])
}

/// Within `EVENT`, the rows of `q` once `done` says they are enough.
async fn rows_until(
    influx: &Influx,
    db: &str,
    q: &str,
    what: &str,
    done: impl Fn(&[serde_json::Map<String, serde_json::Value>]) -> bool,
) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let start = Instant::now();
    loop {
        let rows = influx.rows(db, q).await?;
        if done(&rows) {
            return Ok(rows);
        }
        anyhow::ensure!(
            start.elapsed() < EVENT,
            "timed out after {EVENT:?} waiting for {what}; last rows of {q:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn f64_of(row: &serde_json::Map<String, serde_json::Value>, col: &str) -> f64 {
    row.get(col)
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no number {col} in {row:?}"))
}

/// (a) A topic entry: points are Kafka records with Telegraf's names and our tags, InfluxDB
/// accepts them as they are, and InfluxQL reads back CPU usage and memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_produced_to_kafka_are_valid_line_protocol_for_influxdb() -> anyhow::Result<()> {
    let (w, influx) = tokio::try_join!(World::start(IP, &["host_metrics"], 3), Influx::start())?;
    let started_ns = now_ns();
    let mut agent = start_agent(&w.config())?;
    w.put_value(
        r#"[{"type":"host_metrics","topic":"host_metrics","interval_ms":2000,"mountpoints":["/"]}]"#,
    )
    .await?;
    agent
        .wait_for_log("starting host metrics entry", EVENT)
        .await?;
    // Two samples at least: the second carries the CPU usage rates.
    let start = Instant::now();
    let records = loop {
        let texts = w.read_all("host_metrics").await?;
        if texts
            .iter()
            .any(|t| t.starts_with("cpu,cpu=cpu-total,") && t.contains("usage_idle="))
        {
            break texts;
        }
        anyhow::ensure!(
            start.elapsed() < EVENT,
            "no cpu-total usage point in host_metrics within {EVENT:?}; {} records: {texts:#?}\nagent log:\n{}",
            texts.len(),
            agent.log_contents()
        );
    };
    let ended_ns = now_ns();
    let mut seen = std::collections::BTreeSet::new();
    for r in &records {
        assert!(!r.contains('\n'), "one point per record: {r:?}");
        let (m, tags, ts) = head_and_time(r);
        assert!(MEASUREMENTS.contains(&m.as_str()), "measurement {m} in {r}");
        assert!(
            tags.contains(&("host".into(), HOST.into())),
            "host tag in {r}"
        );
        assert!(tags.contains(&("ip".into(), IP.into())), "ip tag in {r}");
        assert!(
            (started_ns..=ended_ns).contains(&ts),
            "timestamp {ts} is the sample time, within the test: {r}"
        );
        seen.insert(m);
    }
    for m in ["cpu", "mem", "swap", "disk", "system"] {
        assert!(seen.contains(m), "no {m} point among {records:#?}");
    }
    // Every core and the total, per sample.
    let cpu_tags: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r.starts_with("cpu,"))
        .map(|r| head_and_time(r).1[0].1.clone())
        .collect();
    assert_eq!(cpu_tags.len(), cores() + 1, "{cpu_tags:?}");

    // InfluxDB takes the records unchanged (it answers 400 to a line it cannot parse).
    influx.create_database("from_kafka").await?;
    influx.write("from_kafka", &records.join("\n")).await?;
    let cpu = influx
        .rows(
            "from_kafka",
            "SELECT usage_idle, usage_user, usage_system FROM cpu WHERE cpu = 'cpu-total' AND usage_idle >= 0 GROUP BY host, ip",
        )
        .await?;
    assert!(!cpu.is_empty(), "no cpu-total usage rows");
    for row in &cpu {
        assert_eq!(row["host"], HOST);
        assert_eq!(row["ip"], IP);
        let total =
            f64_of(row, "usage_idle") + f64_of(row, "usage_user") + f64_of(row, "usage_system");
        assert!((0.0..=100.0 + 1e-6).contains(&total), "{row:?}");
    }
    let mem = influx
        .rows(
            "from_kafka",
            "SELECT total, used, available, used_percent FROM mem",
        )
        .await?;
    assert!(!mem.is_empty());
    for row in &mem {
        assert!(f64_of(row, "total") > f64_of(row, "used"), "{row:?}");
        assert!(f64_of(row, "available") > 0.0, "{row:?}");
        assert!(
            (0.0..=100.0).contains(&f64_of(row, "used_percent")),
            "{row:?}"
        );
    }
    let disk = influx
        .rows(
            "from_kafka",
            "SELECT total, used, free, used_percent FROM disk GROUP BY path",
        )
        .await?;
    assert!(disk.iter().all(|r| r["path"] == "/"), "{disk:?}");
    assert!(
        !disk.is_empty() && f64_of(&disk[0], "total") > 0.0,
        "{disk:?}"
    );
    let system = influx
        .rows(
            "from_kafka",
            "SELECT load1, load5, load15, uptime, n_cpus FROM system",
        )
        .await?;
    assert!(!system.is_empty());
    assert_eq!(f64_of(&system[0], "n_cpus") as usize, cores());
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

/// The direct-output test's buffer, in samples.
const BUFFERED_SAMPLES: usize = 5;

fn influx_config(base: &str, influx: &Influx, buffer_max_points: usize) -> String {
    format!(
        "{base}\n[influxdb]\nurl = \"{}\"\ndatabase = \"telegraf\"\nflush_interval_ms = 200\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\nrequest_timeout_ms = 2000\nbuffer_max_points = {buffer_max_points}\n",
        influx.url()
    )
}

/// (b) + (c) `"output": "influxdb"`: points arrive and are queried back; InfluxDB is killed, the
/// agent keeps sampling and retrying with a buffer of five samples; restarted on the same port
/// and data, the newest outage points arrive, the oldest were dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_output_writes_points_and_rides_out_an_outage() -> anyhow::Result<()> {
    let (w, mut influx) = tokio::try_join!(World::start(IP, &[], 1), Influx::start())?;
    influx.create_database("telegraf").await?;
    let http = w.http_port;
    // cpu (cores + total), mem, system: points per sample.
    let per_sample = cores() + 3;
    let mut agent = start_agent(&influx_config(
        &w.http_config(),
        &influx,
        BUFFERED_SAMPLES * per_sample,
    ))?;
    w.put_value(
        r#"[{"type":"host_metrics","output":"influxdb","interval_ms":1000,"collectors":["cpu","mem","system"]}]"#,
    )
    .await?;
    agent
        .wait_for_log("starting host metrics entry", EVENT)
        .await?;
    let cpu = rows_until(
        &influx,
        "telegraf",
        "SELECT usage_user, usage_idle FROM cpu WHERE cpu = 'cpu-total' AND usage_idle >= 0 GROUP BY host, ip",
        "cpu-total usage written by the agent",
        |r| !r.is_empty(),
    )
    .await?;
    assert_eq!(cpu[0]["host"], HOST);
    assert_eq!(cpu[0]["ip"], IP);
    let mem = influx
        .rows("telegraf", "SELECT used_percent FROM mem")
        .await?;
    assert!(!mem.is_empty(), "mem points next to cpu");

    // The outage: only this influxd is killed, by PID.
    let killed_ns = now_ns();
    influx.kill();
    let failures = |m: &std::collections::HashMap<String, f64>| {
        m.get("logagent_influxdb_write_failures_total")
            .copied()
            .unwrap_or(0.0)
    };
    wait_until("the agent to fail writing and retry", EVENT, || async {
        scrape(http).await.is_some_and(|m| failures(&m) >= 2.0)
    })
    .await?;
    // Seven samples while InfluxDB is away: more than the buffer holds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        agent.is_running(),
        "the agent keeps running through the outage"
    );
    let m = scrape(http).await.expect("metrics during the outage");
    let dropped = m
        .get("logagent_host_metrics_points_dropped_total{reason=\"influxdb_buffer_full\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(
        dropped >= per_sample as f64,
        "oldest points dropped and counted: {dropped}"
    );
    assert!(
        m["logagent_influxdb_buffered_points"] <= (BUFFERED_SAMPLES * per_sample) as f64,
        "buffer bounded: {m:?}"
    );
    influx.restart().await?;
    // InfluxDB answers again: every point sampled before this moment was sampled during the outage.
    let ready_ns = now_ns();

    let q = format!("SELECT load1 FROM system WHERE time > {killed_ns} AND time < {ready_ns}");
    let outage = rows_until(
        &influx,
        "telegraf",
        &q,
        "the buffered outage samples",
        |r| r.len() >= 3,
    )
    .await?;
    // The writer's first success after the restart (at most backoff_max_ms = 1 s after it) sends
    // the buffer's five newest samples, at most two of them sampled after `ready_ns`: so three or
    // more of the window. At most: the buffer (five, and a sixth partly dropped whose `system`
    // point, the last of a sample, survived) plus, when that first POST is slow (a fresh shard on a
    // loaded machine) and succeeds, the five that gathered meanwhile. A writer that lost failed
    // batches would hold only what arrived since its last failed attempt (1 s: two samples at most).
    let times: Vec<i64> = outage.iter().map(|r| r["time"].as_i64().unwrap()).collect();
    assert!(
        (3..=2 * BUFFERED_SAMPLES + 1).contains(&times.len()),
        "the buffer's newest samples: {times:?}"
    );
    assert!(
        times.iter().all(|&t| t > killed_ns + 2_000_000_000),
        "no sample of the outage's first 2 s survived (they were the oldest): {times:?}, killed at {killed_ns}"
    );
    // And sampling goes on after the outage.
    rows_until(
        &influx,
        "telegraf",
        &format!("SELECT load1 FROM system WHERE time > {ready_ns}"),
        "points sampled after the restart",
        |r| !r.is_empty(),
    )
    .await?;
    let m = scrape(http).await.expect("metrics after the outage");
    assert!(m["logagent_influxdb_points_written_total"] > 0.0);
    assert!(
        agent
            .log_contents()
            .contains("InfluxDB accepts points again"),
        "the recovery is logged"
    );
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

/// (d) Added, changed and removed live through etcd, next to a file entry that keeps shipping; a
/// bad host_metrics entry rejects the whole value and the last good configuration keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_entries_follow_etcd_live() -> anyhow::Result<()> {
    let w = World::start(IP, &["hm_live", "hm_logs"], 1).await?;
    let log = w.log("app.log");
    append_lines(&log, &["first line"])?;
    let mut agent = start_agent(&w.config())?;
    let file = serde_json::json!({"path": log, "topic": "hm_logs"});
    let value = |hm: Option<serde_json::Value>| {
        serde_json::to_string(
            &[Some(file.clone()), hm]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let measurements = || async {
        let r = consume_for(w.bootstrap(), "hm_live", Duration::from_millis(500)).await?;
        anyhow::Ok(
            r.iter()
                .map(|c| head_and_time(&c.text()).0)
                .collect::<Vec<String>>(),
        )
    };

    // Added: only `system` points.
    w.put_value(
        &value(Some(serde_json::json!({"type":"host_metrics","topic":"hm_live","interval_ms":1000,"collectors":["system"]}))),
    )
    .await?;
    let start = Instant::now();
    while !measurements().await?.iter().any(|m| m == "system") {
        anyhow::ensure!(
            start.elapsed() < EVENT,
            "no system point after adding the entry"
        );
    }
    assert!(measurements().await?.iter().all(|m| m == "system"));

    // An invalid value is rejected whole; the running entry keeps sampling.
    let mark = agent.log_len();
    w.put_value(&value(Some(
        serde_json::json!({"type":"host_metrics","topic":"hm_live","interval_ms":5}),
    )))
    .await?;
    agent
        .wait_for_log_after(mark, "interval_ms 5 is outside", EVENT)
        .await?;
    let before = measurements().await?.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        measurements().await?.len() > before,
        "the last good entry keeps sampling"
    );

    // Changed: restarted with `mem` instead.
    let mark = agent.log_len();
    w.put_value(
        &value(Some(serde_json::json!({"type":"host_metrics","topic":"hm_live","interval_ms":1000,"collectors":["mem"]}))),
    )
    .await?;
    agent
        .wait_for_log_after(mark, "restarting host metrics entry", EVENT)
        .await?;
    let start = Instant::now();
    while !measurements().await?.iter().any(|m| m == "mem") {
        anyhow::ensure!(
            start.elapsed() < EVENT,
            "no mem point after changing the entry"
        );
    }

    // Removed: no more points; the file entry is untouched and still ships.
    let mark = agent.log_len();
    w.put_value(&value(None)).await?;
    agent
        .wait_for_log_after(mark, "stopping host metrics entry", EVENT)
        .await?;
    // What was handed over before the stop may still land: let it, then count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_stop = measurements().await?.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        measurements().await?.len(),
        after_stop,
        "points after the entry was removed"
    );
    append_lines(&log, &["second line"])?;
    let start = Instant::now();
    loop {
        let r = consume_for(w.bootstrap(), "hm_logs", Duration::from_millis(500)).await?;
        let texts: Vec<String> = r.iter().map(|c| c.text()).collect();
        if texts == ["first line", "second line"] {
            break;
        }
        anyhow::ensure!(start.elapsed() < EVENT, "file entry lines: {texts:?}");
    }
    assert!(
        !agent.log_contents().contains("restarting entry"),
        "the file entry was never restarted by host-metrics changes"
    );
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

/// The Kafka path is the lines' at-least-once path: samples taken while the broker is down wait in
/// the producer (sent again on failure) and arrive once it is back; none of them is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_taken_while_kafka_is_down_arrive_when_it_returns() -> anyhow::Result<()> {
    let mut w = World::start_with_storage(IP, Storage::Sqlite, &["hm_outage"], 1).await?;
    let mut agent = start_agent(&w.config())?;
    w.put_value(
        r#"[{"type":"host_metrics","topic":"hm_outage","interval_ms":1000,"collectors":["system"]}]"#,
    )
    .await?;
    agent
        .wait_for_log("starting host metrics entry", EVENT)
        .await?;
    // Distinct sample times in the topic (at least once: a point may arrive twice).
    // The broker restarts on the same port: its address outlives the borrow.
    let bootstrap = w.bootstrap().to_owned();
    let sample_times = || async {
        let r = consume_for(&bootstrap, "hm_outage", Duration::from_millis(500)).await?;
        anyhow::Ok(
            r.iter()
                .map(|c| head_and_time(&c.text()).2)
                .collect::<std::collections::BTreeSet<i64>>(),
        )
    };
    let start = Instant::now();
    while sample_times().await?.len() < 2 {
        anyhow::ensure!(start.elapsed() < EVENT, "no points before the outage");
    }

    let kafka = w
        .kafka
        .as_mut()
        .expect("World::start_with_storage started tansu");
    let down_ns = now_ns();
    kafka.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let up_ns = now_ns();
    kafka.restart().await?;

    let start = Instant::now();
    let during = loop {
        let during: Vec<i64> = sample_times()
            .await?
            .into_iter()
            .filter(|t| (down_ns..up_ns).contains(t))
            .collect();
        // One sample a second for 4 s: 4 (3 if a tick fell right at an edge).
        if during.len() >= 3 {
            break during;
        }
        anyhow::ensure!(
            start.elapsed() < EVENT,
            "samples of the outage in the topic: {during:?}; agent log tail:\n{}",
            agent.log_contents()
        );
    };
    assert!(during.len() <= 5, "one sample a second: {during:?}");
    assert!(agent.is_running());
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}
