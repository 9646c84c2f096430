//! Applying a changed configuration to running tailers, against a real etcd and tansu: a changed
//! topic and a path removed then re-added lose and duplicate nothing.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::bin;
use support::events::*;
use support::{
    append_lines, lines, lines_read_and_acked, scrape, wait_until, with_http_listener, Agent, World,
};

const IP: &str = "10.44.0.7";
const KEY: &str = "collect_log_conf/10.44.0.7";
/// Upper bound for an event the agent must log or a record that must arrive: generous, as none of
/// these waits is a speed assertion (delays are printed instead; a 2-core machine under load is slow).
const EVENT: Duration = Duration::from_secs(30);
const START: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_change_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let w = World::start(IP, &["tc_a", "tc_b"], 1).await?;
    let f = w.log("live.log");
    append_lines(&f, &lines("live", 0..1))?;
    let r1 = w.put(&[(&f, "tc_a")]).await?;
    let mut agent = w.json_agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;

    // About 1200 lines over ~2.5 s, one write each; the topic changes in the middle.
    const N: usize = 1200;
    let path = f.clone();
    let writer = std::thread::spawn(move || -> anyhow::Result<()> {
        for i in 1..N {
            append_lines(&path, &lines("live", i..i + 1))?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mark = events(&agent).len();
    let r2 = w.put(&[(&f, "tc_b")]).await?;
    wait_applied(&mut agent, r2, EVENT).await?;
    wait_event(&mut agent, mark, "the restart of the entry", EVENT, |e| {
        message(e).starts_with("restarting entry")
    })
    .await?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;

    let want = lines("live", 0..N);
    let got = w
        .settle(&["tc_a", "tc_b"], Duration::from_secs(30), |got| {
            got[0].len() + got[1].len() >= N
        })
        .await?;
    let (a, b) = (&got[0], &got[1]);
    eprintln!(
        "topic change: {} lines on tc_a, then {} on tc_b",
        a.len(),
        b.len()
    );
    let agent_events = || -> String {
        events(&agent)
            .iter()
            .filter(|e| level(e) != "INFO" || !message(e).contains("status"))
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        !a.is_empty() && !b.is_empty(),
        "the change did not fall while lines were written; agent log:\n{}",
        agent_events()
    );
    let joined: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    if joined != want {
        let mut sorted = joined.clone();
        sorted.sort();
        let dups = sorted.windows(2).filter(|p| p[0] == p[1]).count();
        sorted.dedup();
        let lost = want
            .iter()
            .filter(|l| sorted.binary_search(l).is_err())
            .count();
        panic!(
            "tc_a followed by tc_b is not the file: {} records, {lost} lost, {dups} twice; \
             tc_a ends {:?}, tc_b starts {:?}; agent log:\n{}",
            joined.len(),
            a.last(),
            b.first(),
            agent_events()
        );
    }
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_removed_and_re_added_resumes_without_duplicates() -> anyhow::Result<()> {
    let w = World::start(IP, &["readd"], 1).await?;
    let f = w.log("r.log");
    append_lines(&f, &lines("r", 0..10))?;
    let r1 = w.put(&[(&f, "readd")]).await?;
    // A long linger keeps every batch in flight for a while: long enough to remove the path and
    // add it back while its last lines are still unacknowledged. The test sees that they are on
    // /metrics before it removes the path, and in the offset the release logs after.
    let port = support::free_port();
    let config = with_http_listener(&w.json_config(&w.etcd.endpoint()), port);
    let mut agent =
        Agent::start_with_env(&bin(), &config, &[("LOGAGENT_KAFKA__LINGER_MS", "3000")])?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("readd", 10).await?, lines("r", 0..10));

    append_lines(&f, &lines("r", 10..20))?;
    let appended = Instant::now();
    wait_until(
        "lines 10..20 read and handed to the producer, none acknowledged (lines read 20, acked 10)",
        EVENT,
        || async {
            let in_flight = scrape(port)
                .await
                .and_then(|m| m.get("logagent_records_in_flight").copied());
            lines_read_and_acked(port, "readd").await == Some((20, 10))
                && in_flight.is_some_and(|n| n >= 10.0)
        },
    )
    .await?;
    eprintln!(
        "lines 10..20 read and in flight {:?} after the append",
        appended.elapsed()
    );
    let mark = events(&agent).len();
    w.etcd.put(KEY, "[]").await?;
    let released = wait_event(&mut agent, mark, "the path stopping", EVENT, |e| {
        message(e).starts_with("released file")
    })
    .await?;
    eprintln!(
        "released {:?} after the append: {released}",
        appended.elapsed()
    );
    // The acknowledged offset the record keeps: below the file's end, or nothing was in flight and
    // the re-add below would prove nothing.
    let size = std::fs::metadata(&f)?.len();
    let offset = released["offset"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no offset in {released}"))?;
    assert!(
        offset < size,
        "the file was released at offset {offset} of {size}: every line was already \
         acknowledged, so nothing was in flight"
    );
    let r3 = w.put(&[(&f, "readd")]).await?;
    wait_applied(&mut agent, r3, EVENT).await?;
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("r", 20..30))?;
    assert_eq!(
        w.texts("readd", 30).await?,
        lines("r", 0..30),
        "re-added path lost or re-sent lines"
    );
    agent.stop_cleanly(START).await?;
    Ok(())
}
