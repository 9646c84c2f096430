//! End to end against a real etcd and a real Kafka-protocol broker (tansu), both started here:
//! the agent binary runs as a separate process, exactly as under systemd.

mod support;

use std::time::{Duration, Instant};

use support::{agent_config, append_lines, bin, consume, consume_for, lines, Agent, Etcd, World};

const IP: &str = "10.20.30.40";
const KEY: &str = "collect_log_conf/10.20.30.40";
/// Upper bound for an event the agent must log or a record that must arrive: generous, as none of
/// these waits is a speed assertion (delays are printed instead; a 2-core machine under load is slow).
const EVENT: Duration = Duration::from_secs(30);

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_reach_their_topics_in_order_with_the_seed_format() -> anyhow::Result<()> {
    let w = World::start(IP, &["web_log", "app_log"], 3).await?;
    let (a, b) = (w.log("access.log"), w.log("app.log"));
    append_lines(&a, &lines("a", 0..500))?;
    append_lines(&b, &lines("b", 0..300))?;
    // Exactly the seed fleet's value: a JSON list of {"path","topic"} and nothing else.
    let seed = format!(
        r#"[{{"path":"{}","topic":"web_log"}},{{"path":"{}","topic":"app_log"}}]"#,
        a.display(),
        b.display()
    );
    w.etcd.put(KEY, &seed).await?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    append_lines(&a, &lines("a", 500..1000))?;

    let got_a = consume(w.bootstrap(), "web_log", 1000, Duration::from_secs(60)).await?;
    let got_b = w.texts("app_log", 300).await?;
    // One file, one partition: the file's order is the partition's order.
    assert!(
        got_a.iter().all(|c| c.partition == got_a[0].partition),
        "one file spread over partitions"
    );
    assert_eq!(
        got_a.iter().map(|c| c.text()).collect::<Vec<_>>(),
        lines("a", 0..1000)
    );
    assert_eq!(got_b, lines("b", 0..300));
    assert!(
        agent.log_contents().contains(KEY),
        "agent should log the key it uses"
    );
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_add_and_remove_paths_live() -> anyhow::Result<()> {
    let w = World::start(IP, &["t1", "t2"], 3).await?;
    let (one, two) = (w.log("one.log"), w.log("two.log"));
    append_lines(&one, &lines("one", 0..10))?;
    append_lines(&two, &lines("two", 0..10))?;
    w.put(&[(&one, "t1")]).await?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    assert_eq!(w.texts("t1", 10).await?, lines("one", 0..10));

    // Adding a path: shipping starts (how soon is printed, not asserted).
    let put_at = Instant::now();
    w.put(&[(&one, "t1"), (&two, "t2")]).await?;
    let got = consume(w.bootstrap(), "t2", 10, EVENT).await?;
    let first_arrival = put_at.elapsed().saturating_sub(Duration::from_secs(1)); // consume waits 1 s of quiet
    eprintln!("added path shipped within {first_arrival:?} of the put");
    assert_eq!(
        got.iter().map(|c| c.text()).collect::<Vec<_>>(),
        lines("two", 0..10)
    );

    // Removing a path: it stops; the kept path keeps shipping without a gap or a re-read.
    w.put(&[(&one, "t1")]).await?;
    agent.wait_for_log("stopping entry", EVENT).await?;
    append_lines(&two, &lines("two", 10..20))?;
    append_lines(&one, &lines("one", 10..20))?;
    assert_eq!(
        w.texts("t1", 20).await?,
        lines("one", 0..20),
        "kept entry re-read or lost lines"
    );
    let t2 = consume_for(w.bootstrap(), "t2", Duration::from_secs(2)).await?;
    assert_eq!(t2.len(), 10, "a removed path was still shipped");
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_loss_or_duplicates() -> anyhow::Result<()> {
    let w = World::start(IP, &["r"], 3).await?;
    let f = w.log("r.log");
    append_lines(&f, &lines("r", 0..2000))?;
    w.put(&[(&f, "r")]).await?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    assert_eq!(w.texts("r", 2000).await?.len(), 2000);
    agent.stop_cleanly(Duration::from_secs(20)).await?;

    // Written while the agent is down, plus a partial line that is completed after the restart.
    append_lines(&f, &lines("r", 2000..3000))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| std::io::Write::write_all(&mut h, b"r half"))?;
    // The partial line is held until its newline comes, not shipped after a timeout meanwhile.
    let mut agent = Agent::start_with_env(
        &bin(),
        &w.config(),
        &[("LOGAGENT_TAIL__PARTIAL_LINE_TIMEOUT_MS", "600000")],
    )?;
    // Complete the line only once the agent holds its first half: every whole line before it
    // acknowledged and checkpointed.
    let whole = lines("r", 0..3000)
        .iter()
        .map(|l| l.len() as u64 + 1)
        .sum::<u64>();
    let state = w.dir.path().join("state");
    let restarted = Instant::now();
    support::wait_until(
        &format!("the checkpoint of {} at offset {whole}", f.display()),
        EVENT,
        || {
            let at = support::checkpoint_records(&state)
                .ok()
                .and_then(|files| Some(files.first()?.offset));
            async move { at == Some(whole) }
        },
    )
    .await?;
    eprintln!(
        "lines written while down checkpointed {:?} after the restart",
        restarted.elapsed()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| std::io::Write::write_all(&mut h, b" and the rest\n"))?;
    let mut want = lines("r", 0..3000);
    want.push("r half and the rest".into());
    let got = w.texts("r", 3001).await?;
    assert_eq!(
        got.len(),
        3001,
        "lost or duplicated lines across the restart"
    );
    assert_eq!(sorted(got), sorted(want));
    agent.stop_cleanly(Duration::from_secs(20)).await?;
    Ok(())
}

/// With Kafka gone, the first SIGTERM waits for deliveries (up to the grace period); a second one
/// exits at once, and the checkpoint still holds only acknowledged offsets (here: none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_with_offsets_safe() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("never.log");
    append_lines(&f, &lines("n", 0..100))?;
    let dead_broker = format!("127.0.0.1:{}", support::free_port());
    let state = dir.path().join("state");
    let config = agent_config(&state, &etcd.endpoint(), &dead_broker, IP);
    // Keyed, so records go straight into librdkafka's queue (no partition lookup) and stay in flight.
    etcd.put(
        KEY,
        &serde_json::json!([{"path": f, "topic": "t", "key": "path"}]).to_string(),
    )
    .await?;
    let http = format!("127.0.0.1:{}", support::free_port());
    let mut agent = Agent::start_with_env(
        &bin(),
        &config,
        &[
            ("LOGAGENT_SHUTDOWN__GRACE_MS", "60000"),
            ("LOGAGENT_HTTP__LISTEN", &http),
        ],
    )?;
    support::wait_until("records in flight in the producer", EVENT, || {
        let http = http.clone();
        async move { in_flight(&http).unwrap_or(0) > 0 }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log_contents()))?;
    agent.sigterm()?;
    agent.wait_for_log("shutting down", EVENT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent.is_running(),
        "the first SIGTERM should wait for deliveries (grace 60 s):\n{}",
        agent.log_contents()
    );
    let second = Instant::now();
    agent.sigterm()?;
    // Well inside the 60 s grace the first SIGTERM would wait: an exit by then did not wait for it.
    let status = agent.wait_exit(EVENT).await?;
    eprintln!(
        "exited {:?} after the second SIGTERM with {status}",
        second.elapsed()
    );
    assert!(
        !status.success(),
        "an immediate exit is not a clean one: {status}"
    );
    // Whatever the checkpoint holds, it never claims a line Kafka did not acknowledge.
    for file in support::checkpoint_entries(&state)? {
        assert_eq!(
            file["offset"], 0,
            "offset advanced without any acknowledgement: {file}"
        );
    }
    Ok(())
}

/// `logagent_records_in_flight` scraped from the agent's /metrics.
fn in_flight(addr: &str) -> Option<i64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    c.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with("logagent_records_in_flight "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
