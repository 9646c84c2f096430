//! Kafka delivery under faults (issue 5, "Done when"), with the agent binary as a separate process:
//!
//! - a real broker (tansu, sqlite storage so that what it acknowledged survives) stopped for 30 s
//!   while 100k lines are written, then restarted: every line arrives, RSS stays under a bound;
//! - a broker that never comes back: the agent keeps running with flat RSS, its checkpoint never
//!   passes what was acknowledged, and SIGTERM exits within the shutdown deadline;
//! - a record a broker rejects as too large (librdkafka's mock cluster answering
//!   MSG_SIZE_TOO_LARGE) is reported (topic and file) and skipped, the rest flows; a line an entry
//!   allows is never refused by the producer itself;
//! - a fatal producer error stops the agent (non-zero) with the checkpoint at what was acknowledged;
//! - a clean stop under backpressure sends nothing twice; an unknown topic is waited for;
//! - transient broker errors and leader moves (mock cluster): every line arrives, once, in order.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::{
    append_lines, bin, checkpointed, consume, lines, wait_until, Agent, Storage, Tansu, World,
};

const IP: &str = "10.20.30.42";
const KEY: &str = "collect_log_conf/10.20.30.42";
const MIB: u64 = 1024 * 1024;
/// The RSS bound asserted during outages, for the memory settings below.
const RSS_BOUND: u64 = 64 * MIB;
/// Upper bound for waits on the agent; none of them is a speed assertion.
const WAIT: Duration = Duration::from_secs(60);

/// What bounds memory while Kafka is away (the README: "memory stays bounded by configuration"):
/// librdkafka's queue (8 MiB or 10k records) and 8 batches in the channel. Smaller than the defaults
/// so that the lines written during an outage (~50 MB) overflow every buffer many times: unbounded
/// buffering would show as RSS growing far past the bound, and the tailers must stop reading.
const MEMORY_ENV: [(&str, &str); 3] = [
    ("LOGAGENT_KAFKA__QUEUE_MAX_KBYTES", "8192"),
    ("LOGAGENT_KAFKA__QUEUE_MAX_MESSAGES", "10000"),
    ("LOGAGENT_TAIL__CHANNEL_CAPACITY", "8"),
];
/// Lines of the outage tests: 512 bytes with the newline, numbered.
const BIG: usize = 511;

fn line(tag: &str, seq: usize) -> String {
    format!("{tag} {seq:08} {:x<w$}", "", w = BIG - tag.len() - 10)
}

fn big_lines(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| line(tag, i)).collect()
}

/// Resident set size of a process, from /proc/<pid>/status.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Samples a process's RSS every 200 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Duration, u64)>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(bytes) = rss(pid) {
                    samples.push((start.elapsed(), bytes));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            samples
        });
        RssSampler { stop, task }
    }

    /// The samples, as (time since start, bytes).
    async fn finish(self) -> anyhow::Result<Vec<(Duration, u64)>> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await?;
        anyhow::ensure!(!samples.is_empty(), "no RSS sample (agent not running?)");
        Ok(samples)
    }
}

fn peak(samples: &[(Duration, u64)], from: Duration, to: Duration) -> u64 {
    samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(0)
}

/// The log file every test here writes.
const APP: &str = "app.log";

/// etcd and the broker at `bootstrap`, collecting `logs/app.log` into `topic`.
async fn one_file(bootstrap: String, topic: &str) -> anyhow::Result<World> {
    let w = World::with_broker(IP, bootstrap).await?;
    w.put(&[(&w.log(APP), topic)]).await?;
    Ok(w)
}

/// Every line of `want` arrived at least once; returns how many records were extra copies.
fn assert_all_arrived(got: &[String], want: &[String]) -> usize {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = want
        .iter()
        .filter(|w| !counts.contains_key(w.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} lines never arrived, e.g. {:?}",
        lost.len(),
        want.len(),
        lost.iter()
            .take(5)
            .map(|l| &l[..l.len().min(20)])
            .collect::<Vec<_>>()
    );
    got.len() - counts.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_30s_while_100k_lines_are_written_then_back() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut kafka = Tansu::start(Storage::Sqlite).await?;
    kafka.create_topic("outage", 3).await?;
    let w = one_file(kafka.bootstrap(), "outage").await?;
    let before = big_lines("pre", 0..2_000);
    append_lines(&w.log(APP), &before)?;
    let mut agent = Agent::start_with_env(&bin(), &w.config(), &MEMORY_ENV)?;
    w.texts_within("outage", before.len(), WAIT).await?;
    w.wait_all_acknowledged(&w.log(APP), WAIT).await?;

    let pid = agent.pid().context("agent pid")?;
    let sampler = RssSampler::start(pid);
    kafka.stop().await;
    let outage = Instant::now();
    // 100k lines of 512 bytes (~51 MB) in 100 writes spread over ~25 s of the 30 s outage.
    let during = big_lines("out", 0..100_000);
    for chunk in during.chunks(1_000) {
        append_lines(&w.log(APP), chunk)?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    assert!(agent.is_running(), "agent exited during the outage");
    let samples = sampler.finish().await?;
    kafka.restart().await?;
    eprintln!("broker back after {:?}", outage.elapsed());

    let want: Vec<String> = before.iter().chain(&during).cloned().collect();
    let got = w
        .texts_within("outage", want.len(), Duration::from_secs(180))
        .await?;
    let dups = assert_all_arrived(&got, &want);
    let top = peak(&samples, Duration::ZERO, Duration::MAX);
    eprintln!(
        "{} lines, {} records read ({dups} extra copies); peak RSS during the outage {:.1} MiB; {:?}",
        want.len(),
        got.len(),
        top as f64 / MIB as f64,
        started.elapsed()
    );
    assert!(
        top <= RSS_BOUND,
        "RSS reached {top} bytes during the outage (bound {RSS_BOUND})"
    );
    agent.stop_cleanly(WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_that_never_returns_keeps_memory_flat_and_offsets_put() -> anyhow::Result<()> {
    const GRACE: Duration = Duration::from_millis(2_000);
    let started = Instant::now();
    let mut kafka = Tansu::start(Storage::Memory).await?;
    kafka.create_topic("gone", 3).await?;
    let w = one_file(kafka.bootstrap(), "gone").await?;
    append_lines(&w.log(APP), &big_lines("pre", 0..2_000))?;
    let mut env = MEMORY_ENV.to_vec();
    env.push(("LOGAGENT_SHUTDOWN__GRACE_MS", "2000"));
    let mut agent = Agent::start_with_env(&bin(), &w.config(), &env)?;
    w.texts_within("gone", 2_000, WAIT).await?;
    let acked = w.wait_all_acknowledged(&w.log(APP), WAIT).await?;

    let pid = agent.pid().context("agent pid")?;
    kafka.kill();
    let sampler = RssSampler::start(pid);
    let mut offsets = Vec::new();
    // 100k lines of 512 bytes over ~16 s, while the checkpoint is watched.
    for chunk in big_lines("gone", 0..100_000).chunks(625) {
        append_lines(&w.log(APP), chunk)?;
        offsets.push(checkpointed(&w.state_dir(), &w.log(APP))?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.is_running(), "agent exited while the broker was gone");
    let samples = sampler.finish().await?;
    let passed: Vec<&Option<u64>> = offsets.iter().filter(|o| **o != Some(acked)).collect();
    assert!(
        passed.is_empty(),
        "checkpoint moved off the acknowledged offset {acked} while nothing could be acknowledged: {passed:?}"
    );
    // Buffers fill within the first seconds; after that, memory must not grow with the outage.
    let (early, late) = (
        peak(&samples, Duration::from_secs(4), Duration::from_secs(10)),
        peak(&samples, Duration::from_secs(10), Duration::MAX),
    );
    eprintln!(
        "RSS peak {:.1} MiB in 4-10 s, {:.1} MiB after 10 s of the outage",
        early as f64 / MIB as f64,
        late as f64 / MIB as f64
    );
    assert!(
        early.max(late) <= RSS_BOUND,
        "RSS over the bound {RSS_BOUND}: {early} / {late}"
    );
    assert!(
        late <= early + 6 * MIB,
        "RSS kept growing with the outage: {early} bytes in 4-10 s, {late} after 10 s"
    );

    sigterm_within(&mut agent, GRACE).await?;
    eprintln!("never-returning broker: {:?}", started.elapsed());
    assert!(
        agent
            .log_contents()
            .contains("not acknowledged by the deadline"),
        "the shutdown should report the records it gave up on"
    );
    assert_eq!(
        checkpointed(&w.state_dir(), &w.log(APP))?,
        Some(acked),
        "final checkpoint passed the acknowledged offset"
    );
    Ok(())
}

/// Seconds since midnight (UTC) at which the agent's last log line containing `needle` was written.
fn logged_at(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    // 2026-01-02T13:06:37.688609Z
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut hms = time.trim_end_matches('Z').split(':');
    let (h, m, s): (f64, f64, f64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn now_of_day() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) * 1e-9
}

/// SIGTERM, then checks the shutdown against `grace` from the agent's own log: reading stopped and
/// deliveries were flushed (or given up) within the grace period, and the process was gone within
/// a second of its last line. The final checkpoint write in between is not timed: it waits for
/// fsync, which on a busy disk takes what it takes.
async fn sigterm_within(agent: &mut Agent, grace: Duration) -> anyhow::Result<()> {
    agent.sigterm()?;
    let status = agent.wait_exit(WAIT).await?;
    let exited = now_of_day();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let log = agent.log_contents();
    let at = |needle: &str| {
        logged_at(&log, needle).with_context(|| format!("no {needle:?} in the agent log"))
    };
    let signal = at("signal received")?;
    let verdict = at("records not acknowledged by the deadline")
        .or_else(|_| at("all records handed to Kafka were acknowledged"))?;
    let bye = at("final checkpoint written; bye")?;
    let since = |from: f64, to: f64| Duration::from_secs_f64((to - from).rem_euclid(86_400.0));
    let (flushed, teardown) = (since(signal, verdict), since(bye, exited));
    eprintln!(
        "SIGTERM: flushed after {flushed:?} (grace {grace:?}), exited {teardown:?} after the \
         final checkpoint, {:?} in all",
        since(signal, exited)
    );
    assert!(
        flushed <= grace + Duration::from_millis(500),
        "stopping and flushing took {flushed:?} with shutdown.grace_ms = {}",
        grace.as_millis()
    );
    assert!(
        teardown <= Duration::from_secs(1),
        "the process lingered {teardown:?} after its final checkpoint"
    );
    // What was not delivered is summed up, not reported record by record (10k of them in the
    // outage test). librdkafka's own connection errors are not the agent's doing.
    let shutdown_log: Vec<&str> = log[log.rfind("signal received").unwrap_or(0)..]
        .lines()
        .filter(|l| !l.contains("librdkafka") && !l.contains("Kafka client error"))
        .collect();
    assert!(
        shutdown_log.len() <= 50,
        "{} log lines during shutdown, e.g. {:?}",
        shutdown_log.len(),
        &shutdown_log[..5]
    );
    Ok(())
}

/// The agent log line reporting a skipped record, which must name the topic and the file.
fn skip_report(agent: &Agent) -> Option<String> {
    agent
        .log_contents()
        .lines()
        .find(|l| l.contains("permanently rejected a record"))
        .map(str::to_owned)
}

/// An entry may ask for longer lines than the global `tail.max_line_bytes` (up to the local
/// `tail.max_line_bytes_limit`): the producer is sized for the limit, so such a line is produced
/// whole. (It used to be sized for the global value: the line was refused locally, "skipped", and
/// its offset saved — lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_an_entry_allows_is_produced_whole_never_skipped() -> anyhow::Result<()> {
    let kafka = Tansu::start(Storage::Memory).await?;
    kafka.create_topic("sized", 1).await?;
    let w = one_file(kafka.bootstrap(), "sized").await?;
    let value =
        serde_json::json!([{"path": w.log(APP), "topic": "sized", "max_line_bytes": 2_000_000}]);
    w.etcd.put(KEY, &value.to_string()).await?;
    let big = "x".repeat(1_500_000);
    let mut want: Vec<String> = lines("ok", 0..100);
    want.push(big);
    want.extend(lines("ok", 100..200));
    append_lines(&w.log(APP), &want)?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    let got = w.texts_within("sized", want.len(), WAIT).await?;
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "lines differ (lengths {:?})",
        got.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(
        skip_report(&agent).is_none(),
        "a record was skipped: {:?}",
        skip_report(&agent)
    );
    w.wait_all_acknowledged(&w.log(APP), WAIT).await?;
    agent.stop_cleanly(WAIT).await
}

/// A fatal error of the idempotent producer (here: the broker answers the head-of-line produce
/// request with OUT_OF_ORDER_SEQUENCE_NUMBER, which librdkafka cannot recover from) stops reading,
/// keeps the checkpoint at what Kafka acknowledged, and exits non-zero so systemd restarts the agent;
/// the restarted agent ships every line. Before, the records were "skipped" and their offsets saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_producer_error_keeps_the_checkpoint_and_exits_non_zero() -> anyhow::Result<()> {
    let mock = MockCluster::new(1)?;
    mock.create_topic("mock_fatal", 1, 1)?;
    let w = one_file(mock.bootstrap_servers(), "mock_fatal").await?;
    let want = lines("f", 0..600);
    append_lines(&w.log(APP), &want[..300])?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    w.texts_within("mock_fatal", 300, WAIT).await?;
    let acked = w.wait_all_acknowledged(&w.log(APP), WAIT).await?;

    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    append_lines(&w.log(APP), &want[300..])?;
    let status = agent.wait_exit(WAIT).await?;
    assert!(
        !status.success(),
        "the agent must exit non-zero after a fatal producer error: {status}"
    );
    let log = agent.log_contents();
    assert!(
        log.contains("fatal error"),
        "the fatal error is not reported; log tail:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    assert!(
        skip_report(&agent).is_none(),
        "records were skipped: {:?}",
        skip_report(&agent)
    );
    assert_eq!(
        checkpointed(&w.state_dir(), &w.log(APP))?,
        Some(acked),
        "the checkpoint moved past what Kafka acknowledged"
    );

    mock.clear_request_errors(RDKafkaApiKey::Produce);
    agent.restart()?;
    let got = w.texts_within("mock_fatal", want.len(), WAIT).await?;
    let dups = assert_all_arrived(&got, &want);
    eprintln!(
        "after the restart: {} records, {dups} extra copies",
        got.len()
    );
    w.wait_all_acknowledged(&w.log(APP), WAIT).await?;
    agent.stop_cleanly(WAIT).await
}

/// A clean stop while the producer queue is full (slow broker) cuts a batch short: part of it is
/// enqueued and delivered during the shutdown flush. Those records count in the final checkpoint,
/// so the restarted agent sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_under_backpressure_sends_nothing_twice() -> anyhow::Result<()> {
    let mock = MockCluster::new(1)?;
    mock.create_topic("mock_slow", 1, 1)?;
    // Every request takes 400 ms: the producer queue (2,000 records) stays full.
    mock.broker_round_trip_time(1, Duration::from_millis(400))?;
    let w = one_file(mock.bootstrap_servers(), "mock_slow").await?;
    let want = lines("bp", 0..150_000);
    append_lines(&w.log(APP), &want)?;
    let env = [
        ("LOGAGENT_KAFKA__QUEUE_MAX_MESSAGES", "2000"),
        ("LOGAGENT_KAFKA__BATCH_NUM_MESSAGES", "500"),
    ];
    let mut agent = Agent::start_with_env(&bin(), &w.config(), &env)?;
    // Stop only once records are flowing, so the stop lands with the queue full mid-batch.
    let state = w.state_dir();
    let log = w.log(APP);
    wait_until("the first acknowledged records", WAIT, || {
        let ok = checkpointed(&state, &log).is_ok_and(|o| o.is_some_and(|o| o > 0));
        async move { ok }
    })
    .await?;
    agent.stop_cleanly(WAIT).await?;
    let stopped_at = checkpointed(&state, &log)?.unwrap_or(0);
    let size = std::fs::metadata(w.log(APP))?.len();
    assert!(
        stopped_at < size,
        "the stop must land before every line was shipped ({stopped_at} of {size})"
    );
    mock.broker_round_trip_time(1, Duration::ZERO)?;
    agent.restart()?;
    let got = w.texts_within("mock_slow", want.len(), WAIT).await?;
    let dups = assert_all_arrived(&got, &want);
    if dups > 0 {
        let mut seen = std::collections::HashSet::new();
        let twice: Vec<&String> = got.iter().filter(|g| !seen.insert(g.as_str())).collect();
        eprintln!(
            "stopped at byte {stopped_at}; first and last lines sent twice: {:?} {:?}",
            twice.first(),
            twice.last()
        );
    }
    assert_eq!(dups, 0, "records sent twice after a clean stop");
    assert_eq!(got, want, "order of the file's lines");
    agent.stop_cleanly(WAIT).await
}

/// Lines for a topic Kafka does not know yet wait until it exists, then go to the file's one
/// partition in order (before, librdkafka's partitioner spread the first batches at random).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_for_an_unknown_topic_wait_and_keep_one_partition() -> anyhow::Result<()> {
    let kafka = Tansu::start(Storage::Memory).await?;
    let w = one_file(kafka.bootstrap(), "late").await?;
    let want = lines("late", 0..3000);
    append_lines(&w.log(APP), &want[..1500])?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    agent
        .wait_for_log("Kafka does not know this topic", WAIT)
        .await?;
    append_lines(&w.log(APP), &want[1500..])?;
    kafka.create_topic("late", 3).await?;
    let got = consume(&kafka.bootstrap(), "late", want.len(), WAIT).await?;
    let partitions: std::collections::BTreeSet<i32> = got.iter().map(|c| c.partition).collect();
    assert_eq!(
        partitions.len(),
        1,
        "one file's lines went to partitions {partitions:?}"
    );
    let texts: Vec<String> = got.iter().map(|c| c.text()).collect();
    assert_eq!(texts, want, "every line, once, in order");
    agent.stop_cleanly(WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_rejected_by_the_broker_as_too_large_is_reported_and_skipped() -> anyhow::Result<()>
{
    let mock = MockCluster::new(1)?;
    mock.create_topic("mock_sized", 1, 1)?;
    let w = one_file(mock.bootstrap_servers(), "mock_sized").await?;
    let want = lines("ok", 0..600);
    append_lines(&w.log(APP), &want[..300])?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    w.texts_within("mock_sized", 300, WAIT).await?;
    w.wait_all_acknowledged(&w.log(APP), WAIT).await?;

    // Nothing is in flight now, so the next produce request carries the one line written next,
    // and the broker answers it with MSG_SIZE_TOO_LARGE.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    append_lines(&w.log(APP), &["y".repeat(3_000)])?;
    agent
        .wait_for_log("permanently rejected a record", WAIT)
        .await?;
    append_lines(&w.log(APP), &want[300..])?;
    let got = w.texts_within("mock_sized", want.len(), WAIT).await?;
    assert_eq!(
        got, want,
        "the lines around the rejected one, once each, in order"
    );
    let report = skip_report(&agent).context("skip report")?;
    assert!(
        report.contains("mock_sized") && report.contains(&*w.log(APP).to_string_lossy()),
        "report should name the topic and the file: {report}"
    );
    // Skipped means done with: the offset moves past it, so a restart does not send it again.
    w.wait_all_acknowledged(&w.log(APP), WAIT).await?;
    agent.stop_cleanly(WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_broker_errors_and_leader_moves_lose_nothing() -> anyhow::Result<()> {
    const TOPIC: &str = "mock_flaky";
    let mock = MockCluster::new(3)?;
    mock.create_topic(TOPIC, 3, 1)?;
    let w = one_file(mock.bootstrap_servers(), TOPIC).await?;
    let want = lines("flaky", 0..40_000);
    append_lines(&w.log(APP), &want[..10_000])?;
    let mut agent = Agent::start(&bin(), &w.config())?;
    w.texts_within(TOPIC, 10_000, WAIT).await?;

    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    append_lines(&w.log(APP), &want[10_000..20_000])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in 0..3 {
        mock.partition_leader(TOPIC, p, Some(2))?;
    }
    append_lines(&w.log(APP), &want[20_000..30_000])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mock.broker_down(2)?;
    append_lines(&w.log(APP), &want[30_000..35_000])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.broker_up(2)?;
    append_lines(&w.log(APP), &want[35_000..])?;

    let got = w.texts_within(TOPIC, want.len(), WAIT).await?;
    let dups = assert_all_arrived(&got, &want);
    // The idempotent producer retries these without duplicates, and one file keeps one partition.
    assert_eq!(dups, 0, "records duplicated by retries");
    assert_eq!(got, want, "order of the file's lines");
    assert!(
        skip_report(&agent).is_none(),
        "a transient error made the agent skip a record: {:?}",
        skip_report(&agent)
    );
    agent.stop_cleanly(WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_an_unreachable_cluster_meets_the_deadline() -> anyhow::Result<()>
{
    const GRACE: Duration = Duration::from_millis(2_000);
    let mut kafka = Tansu::start(Storage::Memory).await?;
    kafka.create_topic("unseen", 1).await?;
    let w = one_file(kafka.bootstrap(), "unseen").await?;
    append_lines(&w.log(APP), &[] as &[&str])?;
    let mut agent = Agent::start_with_env(
        &bin(),
        &w.config(),
        &[("LOGAGENT_SHUTDOWN__GRACE_MS", "2000")],
    )?;
    agent.wait_for_log("tailing file", WAIT).await?;
    // The first record for a topic needs its metadata, which an unreachable cluster never gives.
    kafka.kill();
    append_lines(&w.log(APP), &lines("late", 0..100))?;
    agent
        .wait_for_log("cannot read Kafka metadata", WAIT)
        .await?;
    // Past the retry's short backoff: the signal lands while a metadata request is waiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sigterm_within(&mut agent, GRACE).await?;
    assert!(
        checkpointed(&w.state_dir(), &w.log(APP))?.unwrap_or(0) == 0,
        "offset moved while nothing could be acknowledged"
    );
    Ok(())
}
