//! Live configuration from etcd (issue 4), against a real etcd and a real Kafka-protocol broker
//! (tansu), both started here; the agent binary runs as a separate process.
//!
//! The agent logs JSON here, so a test can read an event's `revision` and `key` as fields instead of
//! guessing at a text layout. Where the agent must be cut off from etcd at a precise moment, it talks
//! to etcd through [`Proxy`], a TCP relay the test controls.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use support::{
    agent_config, append_lines, lines_read_and_acked, scrape, wait_until, with_http_listener,
    Agent, Etcd, Storage, Tansu,
};

const IP: &str = "10.44.0.7";
const KEY: &str = "collect_log_conf/10.44.0.7";
/// The seed fleets' key layout, for the same IP.
const SEED_KEY: &str = "collect_log_10.44.0.7_conf";
const START: Duration = Duration::from_secs(20);
/// Upper bound for an event the agent must log or a record that must arrive: generous, as none of
/// these waits is a speed assertion (delays are printed instead; a 2-core machine under load is slow).
const EVENT: Duration = Duration::from_secs(30);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logagent"))
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i:05}")).collect()
}

/// The seed's value format: a JSON list of `{"path", "topic"}`.
fn value(entries: &[(&Path, &str)]) -> String {
    let list: Vec<Value> = entries
        .iter()
        .map(|(p, t)| json!({"path": p, "topic": t}))
        .collect();
    Value::Array(list).to_string()
}

struct World {
    etcd: Etcd,
    kafka: Tansu,
    dir: tempfile::TempDir,
}

impl World {
    /// etcd, tansu and the given topics, each with one partition so a topic's order is the file's.
    async fn start(topics: &[&str]) -> anyhow::Result<World> {
        let (etcd, kafka) = tokio::try_join!(Etcd::start(), Tansu::start(Storage::Memory))?;
        for t in topics {
            kafka.create_topic(t, 1).await?;
        }
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        Ok(World { etcd, kafka, dir })
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self, etcd_endpoint: &str) -> String {
        let mut c = agent_config(
            &self.state_dir(),
            etcd_endpoint,
            &self.kafka.bootstrap(),
            IP,
        );
        c.push_str("\n[log]\nformat = \"json\"\n");
        c
    }

    fn agent(&self, etcd_endpoint: &str, env: &[(&str, &str)]) -> anyhow::Result<Agent> {
        Agent::start_with_env(&bin(), &self.config(etcd_endpoint), env)
    }

    /// Puts `entries` under the default key and returns the revision of the write.
    async fn put(&self, entries: &[(&Path, &str)]) -> anyhow::Result<i64> {
        self.etcd.put(KEY, &value(entries)).await
    }

    /// Every record of `topic` once at least `n` arrived and then none for a second.
    async fn texts(&self, topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
        consume(&self.kafka.bootstrap(), topic, n, Duration::from_secs(30)).await
    }

    /// Reads `topics` again and again until `done` holds for what they contain (or `timeout`),
    /// then once more after a pause so late extras (duplicates, stray lines) are seen too.
    async fn settle(
        &self,
        topics: &[&str],
        timeout: Duration,
        done: impl Fn(&[Vec<String>]) -> bool,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let start = Instant::now();
        loop {
            let got = self.read_all(topics).await?;
            if done(&got) {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return self.read_all(topics).await;
            }
            if start.elapsed() >= timeout {
                let counts: Vec<usize> = got.iter().map(Vec::len).collect();
                anyhow::bail!(
                    "topics {topics:?} not complete within {timeout:?} (records per topic: {counts:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn read_all(&self, topics: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
        let mut out = Vec::new();
        for t in topics {
            out.push(read_all_of(&self.kafka.bootstrap(), t).await?);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's JSON log.

/// The agent's log events so far, in order. A line still being written does not parse yet and is
/// left out, so `events(..).len()` is a valid "from here on" mark.
fn events(agent: &Agent) -> Vec<Value> {
    agent
        .log_contents()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

fn message(ev: &Value) -> &str {
    ev["message"].as_str().unwrap_or("")
}

fn level(ev: &Value) -> &str {
    ev["level"].as_str().unwrap_or("")
}

fn applied(ev: &Value, revision: i64) -> bool {
    message(ev) == "collect configuration applied" && ev["revision"].as_i64() == Some(revision)
}

fn log_tail(agent: &Agent, n: usize) -> String {
    let log = agent.log_contents();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Waits for the first event after the first `after` events that satisfies `pred`.
async fn wait_event(
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

async fn wait_applied(agent: &mut Agent, revision: i64, timeout: Duration) -> anyhow::Result<()> {
    let what = format!("\"collect configuration applied\" for revision {revision}");
    wait_event(agent, 0, &what, timeout, |e| applied(e, revision)).await?;
    Ok(())
}

/// Waits until a tailer opened `path` after event `after`: "applied" is logged when the value is
/// accepted, and the reconciler puts it into effect a moment later.
async fn wait_tailing(
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

fn is_reconcile_event(ev: &Value) -> bool {
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
async fn wait_reconciler_quiet(
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

// ---------------------------------------------------------------------------------------------
// Reading topics back. Every topic here has one partition, so arrival order is the topic's order.

fn assigned_consumer(bootstrap: &str, topic: &str) -> anyhow::Result<StreamConsumer> {
    // librdkafka refuses `assign` without a group id ("Local: Unknown group"), though nothing is
    // ever committed for it.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "etcd-config-tests")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads `topic` from the beginning until `enough` holds for the count read and then nothing more
/// arrives for a second; fails at `timeout`. (The broker's end offset cannot stand in for "all of
/// it": tansu reports one offset per produced batch there.)
async fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    enough: impl Fn(usize) -> bool,
) -> anyhow::Result<Vec<String>> {
    const QUIET: Duration = Duration::from_secs(1);
    let consumer = assigned_consumer(bootstrap, topic)?;
    let end = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!(
                "read only {} records of {topic} within {timeout:?}",
                out.len()
            );
        }
        let wait = if enough(out.len()) {
            QUIET.min(left)
        } else {
            left.min(Duration::from_millis(250))
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            // Transient (broker busy, metadata not there yet): librdkafka retries on its own.
            Ok(Err(_)) => {}
            Err(_) if enough(out.len()) => return Ok(out),
            Err(_) => {}
        }
    }
}

/// Every record `topic` holds once at least `n` arrived and then none for a second, so extra
/// records (duplicates) are seen too.
async fn consume(
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    read_topic(bootstrap, topic, timeout, |len| len >= n).await
}

/// What `topic` holds now, which may be nothing: reads until a second without records, after
/// giving the consumer `START` to fetch its first one.
async fn read_all_of(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<String>> {
    const START: Duration = Duration::from_secs(4);
    let began = Instant::now();
    read_topic(bootstrap, topic, Duration::from_secs(30), |len| {
        len > 0 || began.elapsed() >= START
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// A TCP relay between the agent and etcd.

/// Lets a test take etcd away from the agent (and only from the agent) at an exact moment, and
/// hold the agent's requests right after etcd answered with a given text.
struct Proxy {
    port: u16,
    ctl: Arc<ProxyCtl>,
    accept: tokio::task::JoinHandle<()>,
}

struct ProxyCtl {
    upstream: String,
    /// New connections are closed at once, as if nothing listened.
    refuse: AtomicBool,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    /// When etcd's answer contains this, client → etcd traffic is held from then on.
    hold_after: Mutex<Option<Vec<u8>>>,
    held: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let ctl = Arc::new(ProxyCtl {
            upstream,
            refuse: AtomicBool::new(false),
            cut: watch::channel(0).0,
            hold_after: Mutex::new(None),
            held: watch::channel(false).0,
        });
        let c = ctl.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if c.refuse.load(Ordering::SeqCst) {
                    continue;
                }
                tokio::spawn(relay(client, c.clone()));
            }
        });
        Ok(Proxy { port, ctl, accept })
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// etcd becomes unreachable for the agent: open connections are cut, new ones refused.
    fn go_down(&self) {
        self.ctl.refuse.store(true, Ordering::SeqCst);
        self.ctl.cut.send_modify(|g| *g += 1);
    }

    fn come_up(&self) {
        self.ctl.refuse.store(false, Ordering::SeqCst);
    }

    fn hold_after(&self, marker: &str) {
        *self.ctl.hold_after.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    fn is_holding(&self) -> bool {
        *self.ctl.held.borrow()
    }

    fn release(&self) {
        self.ctl.held.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.go_down();
    }
}

impl ProxyCtl {
    fn watch_for_marker(&self, window: &mut Vec<u8>, chunk: &[u8]) {
        let mut marker = self.hold_after.lock().unwrap();
        let Some(m) = marker.as_ref() else { return };
        window.extend_from_slice(chunk);
        if window.windows(m.len()).any(|w| w == m.as_slice()) {
            self.held.send_replace(true);
            *marker = None;
        } else {
            let keep = window.len().saturating_sub(m.len());
            window.drain(..keep);
        }
    }
}

async fn relay(client: TcpStream, ctl: Arc<ProxyCtl>) {
    let mut cut = ctl.cut.subscribe();
    let Ok(server) = TcpStream::connect(&ctl.upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut held = ctl.held.subscribe();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            held.wait_for(|h| !*h).await?;
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut window: Vec<u8> = Vec::new();
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            // Decided before the bytes are passed on, so the agent's next request is already held.
            ctl.watch_for_marker(&mut window, &buf[..n]);
            cw.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// How quickly changes take effect is measured and printed, not asserted: on a busy 2-core machine
/// any bound tight enough to mean something flakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_applied_and_their_latency_printed() -> anyhow::Result<()> {
    let w = World::start(&["lat_a", "lat_b", "lat_c"]).await?;
    let (one, two) = (w.log("one.log"), w.log("two.log"));
    append_lines(&one, &lines("one", 0..5))?;
    let r1 = w.put(&[(&one, "lat_a")]).await?;
    let mut agent = w.agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("lat_a", 5).await?, lines("one", 0..5));

    // From the put's commit (its reply) to the agent's log line; etcd's own commit time is printed
    // apart, as the agent has no say in it.
    let mut client = w.etcd.client().await?;
    let (mut commit, mut took) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let topic = ["lat_b", "lat_a"][i % 2];
        let t0 = Instant::now();
        let resp = client.put(KEY, value(&[(&one, topic)]), None).await?;
        let committed = Instant::now();
        let r = resp.header().map_or(0, |h| h.revision());
        wait_applied(&mut agent, r, EVENT).await?;
        commit.push(committed - t0);
        took.push(committed.elapsed());
    }
    eprintln!("etcd put (commit) took: {commit:?}");
    eprintln!("commit → \"collect configuration applied\": {took:?}");
    let worst = took.iter().max().copied().unwrap_or_default();
    eprintln!("slowest change applied {worst:?} after its commit");

    // From just before the put to the first record of a newly added file arriving in Kafka.
    append_lines(&two, &lines("two", 0..3))?;
    let consumer = assigned_consumer(&w.kafka.bootstrap(), "lat_c")?;
    let t0 = Instant::now();
    w.put(&[(&one, "lat_a"), (&two, "lat_c")]).await?;
    let first = tokio::time::timeout(EVENT, consumer.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no record on lat_c within {EVENT:?} of the put"))??;
    let record_latency = t0.elapsed();
    eprintln!("put → first record of the added file in Kafka: {record_latency:?}");
    assert_eq!(
        String::from_utf8_lossy(first.payload().unwrap_or_default()),
        "two line 00000"
    );
    assert_eq!(w.texts("lat_c", 3).await?, lines("two", 0..3));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_made_while_the_watch_is_down_is_applied_after_reconnect() -> anyhow::Result<()> {
    let mut w = World::start(&["down_a", "down_b"]).await?;
    let proxy = Proxy::start(w.etcd.endpoint()).await?;
    let f = w.log("app.log");
    append_lines(&f, &lines("app", 0..10))?;
    let r1 = w.put(&[(&f, "down_a")]).await?;
    let mut agent = w.agent(
        &proxy.endpoint(),
        &[("LOGAGENT_ETCD__BACKOFF_MAX_MS", "2000")],
    )?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("down_a", 10).await?, lines("app", 0..10));

    // etcd dies; the agent must notice, and cannot get back until the proxy lets it.
    let mark = events(&agent).len();
    proxy.go_down();
    w.etcd.kill();
    wait_event(
        &mut agent,
        mark,
        "that it lost the etcd watch",
        EVENT,
        |e| level(e) == "WARN" && message(e).contains("etcd watch lost"),
    )
    .await?;
    w.etcd.restart().await?;
    let r2 = w.put(&[(&f, "down_b")]).await?;
    // While cut off, the agent keeps shipping on its last configuration.
    append_lines(&f, &lines("app", 10..20))?;
    assert_eq!(w.texts("down_a", 20).await?, lines("app", 0..20));
    assert!(
        !events(&agent).iter().any(|e| applied(e, r2)),
        "the agent applied revision {r2} while it could not reach etcd"
    );

    let mark = events(&agent).len();
    let t0 = Instant::now();
    proxy.come_up();
    wait_applied(&mut agent, r2, EVENT).await?;
    eprintln!(
        "etcd reachable again → put made while down applied: {:?}",
        t0.elapsed()
    );
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("app", 20..30))?;
    assert_eq!(w.texts("down_b", 10).await?, lines("app", 20..30));
    assert_eq!(
        w.texts("down_a", 20).await?,
        lines("app", 0..20),
        "old topic got more"
    );
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_past_the_watch_revision_is_recovered() -> anyhow::Result<()> {
    let w = World::start(&["cmp_a", "cmp_b", "cmp_c"]).await?;
    let proxy = Proxy::start(w.etcd.endpoint()).await?;
    let f = w.log("c.log");
    append_lines(&f, &lines("c", 0..10))?;
    // A field makes the value recognisable in etcd's answer to the agent's Get: the proxy then holds
    // the agent's Watch request, so the test can compact past the revision it will ask for.
    let marker = "hold-the-watch-after-this-get";
    let first = json!([{"path": f, "topic": "cmp_a", "fields": {"m": marker}}]);
    let r1 = w.etcd.put(KEY, &first.to_string()).await?;
    proxy.hold_after(marker);
    let mut agent = w.agent(&proxy.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;
    wait_tailing(&mut agent, 0, &f, START).await?;
    assert!(
        proxy.is_holding(),
        "the proxy never saw the marked value go to the agent"
    );
    let mark = events(&agent).len();
    let r2 = w.put(&[(&f, "cmp_c")]).await?;
    let r3 = w.put(&[(&f, "cmp_b")]).await?;
    let compacted = w.etcd.compact_to_latest().await?;
    assert!(
        compacted > r1 + 1,
        "compaction to {compacted} does not pass the watch start {}",
        r1 + 1
    );
    proxy.release();

    wait_event(
        &mut agent,
        mark,
        "that its watch revision was compacted",
        EVENT,
        |e| level(e) == "WARN" && message(e).contains("compacted"),
    )
    .await?;
    wait_applied(&mut agent, r3, EVENT).await?;
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    assert!(
        !events(&agent).iter().any(|e| applied(e, r2)),
        "revision {r2} was compacted away and replaced; it must not be applied"
    );
    append_lines(&f, &lines("c", 10..20))?;
    assert_eq!(w.texts("cmp_b", 10).await?, lines("c", 10..20));
    assert_eq!(w.texts("cmp_a", 10).await?, lines("c", 0..10));

    // A compaction under a live watch does not disturb it.
    let mark = events(&agent).len();
    w.etcd.compact_to_latest().await?;
    let t0 = Instant::now();
    let r4 = w.put(&[(&f, "cmp_c")]).await?;
    wait_applied(&mut agent, r4, EVENT).await?;
    eprintln!("put after a compaction applied in {:?}", t0.elapsed());
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    let lost: Vec<String> = events(&agent)
        .iter()
        .skip(mark)
        .filter(|e| message(e).contains("etcd watch lost"))
        .map(|e| message(e).to_owned())
        .collect();
    assert!(lost.is_empty(), "live watch restarted: {lost:?}");
    append_lines(&f, &lines("c", 20..30))?;
    assert_eq!(w.texts("cmp_c", 10).await?, lines("c", 20..30));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_rejected_and_the_last_good_config_keeps_shipping() -> anyhow::Result<()> {
    let w = World::start(&["good_log"]).await?;
    let f = w.log("good.log");
    append_lines(&f, &lines("good", 0..10))?;
    let r1 = w.put(&[(&f, "good_log")]).await?;
    let mut agent = w.agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("good_log", 10).await?, lines("good", 0..10));

    let fp = f.display().to_string();
    let bad: Vec<(String, Vec<String>)> = vec![
        ("[{\"path\": oops".into(), vec!["not JSON".into()]),
        (
            json!([{"path": f, "topic": "good_log", "colour": "red"}]).to_string(),
            vec![format!("entry 1 ({fp}): unknown field `colour`")],
        ),
        (
            json!([{"path": f, "topic": "bad topic!"}]).to_string(),
            vec![format!(
                "entry 1 ({fp}): topic \"bad topic!\" may only contain"
            )],
        ),
        (
            json!([{"path": f, "topic": 7}]).to_string(),
            vec![format!("entry 1 ({fp}): invalid type")],
        ),
        // Several problems: each is named.
        (
            json!([
                {"path": "relative.log", "topic": "good_log"},
                {"path": f, "topic": "good_log"},
                {"path": f, "topic": "other_log"},
            ])
            .to_string(),
            vec![
                "entry 1 (relative.log): path \"relative.log\" is not absolute".into(),
                format!("entry 3 ({fp}): entry 2 already sends this path to topic \"good_log\""),
            ],
        ),
    ];
    for (value, problems) in &bad {
        let mark = events(&agent).len();
        let rev = w.etcd.put(KEY, value).await?;
        let needle = format!("etcd key {KEY} at revision {rev} rejected");
        let ev = wait_event(
            &mut agent,
            mark,
            &format!("the rejection of revision {rev}"),
            EVENT,
            |e| message(e).contains(&needle),
        )
        .await?;
        assert_eq!(level(&ev), "ERROR", "rejection logged as {ev}");
        for p in problems {
            assert!(
                message(&ev).contains(p.as_str()),
                "rejection of {value} does not say {p:?}:\n{}",
                message(&ev)
            );
        }
        assert!(
            !events(&agent).iter().any(|e| applied(e, rev)),
            "bad revision {rev} was applied"
        );
    }
    eprintln!(
        "example rejection:\n{}",
        events(&agent)
            .iter()
            .rev()
            .find(|e| level(e) == "ERROR")
            .map(message)
            .unwrap_or_default()
    );

    // The last good configuration keeps shipping, and is still the one saved for a restart.
    append_lines(&f, &lines("good", 10..20))?;
    assert_eq!(w.texts("good_log", 20).await?, lines("good", 0..20));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("last_config.json"))?)?;
    assert_eq!(
        saved["revision"].as_i64(),
        Some(r1),
        "saved config is not the last good one: {saved}"
    );

    // Not wedged: the next good value is applied.
    let g = w.log("next.log");
    append_lines(&g, &lines("next", 0..5))?;
    let r2 = w.put(&[(&f, "good_log"), (&g, "good_log")]).await?;
    wait_applied(&mut agent, r2, EVENT).await?;
    let got = w.texts("good_log", 25).await?;
    assert_eq!(got.len(), 25, "expected 20 + 5 records: {got:?}");
    agent.stop_cleanly(START).await?;

    // Started while etcd holds a bad value: the last good configuration is the saved one.
    let bad_rev = w.etcd.put(KEY, "{\"path\": broken").await?;
    append_lines(&f, &lines("good", 20..30))?;
    let mark = events(&agent).len();
    agent.restart()?;
    let needle = format!("etcd key {KEY} at revision {bad_rev} rejected");
    wait_event(
        &mut agent,
        mark,
        &format!("the rejection of revision {bad_rev}"),
        START,
        |e| message(e).contains(&needle),
    )
    .await?;
    let ev = wait_event(
        &mut agent,
        mark,
        "that it runs from the saved configuration",
        EVENT,
        |e| message(e).contains("running from the saved configuration"),
    )
    .await?;
    assert_eq!(ev["revision"].as_i64(), Some(r2), "{ev}");
    let got = w.texts("good_log", 35).await?;
    assert_eq!(got.len(), 35, "expected 25 + 10 records: {got:?}");
    assert_eq!(got[25..], lines("good", 20..30));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_with_etcd_down_it_runs_from_the_saved_config() -> anyhow::Result<()> {
    let mut w = World::start(&["saved_a", "saved_b"]).await?;
    let f = w.log("s.log");
    append_lines(&f, &lines("s", 0..10))?;
    let r1 = w.put(&[(&f, "saved_a")]).await?;
    let mut agent = w.agent(
        &w.etcd.endpoint(),
        &[("LOGAGENT_ETCD__BACKOFF_MAX_MS", "1000")],
    )?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("saved_a", 10).await?, lines("s", 0..10));
    agent.stop_cleanly(START).await?;
    let saved: Value =
        serde_json::from_slice(&std::fs::read(w.state_dir().join("last_config.json"))?)?;
    assert_eq!(saved["key"], KEY, "saved config: {saved}");
    assert_eq!(
        saved["revision"].as_i64(),
        Some(r1),
        "saved config: {saved}"
    );

    w.etcd.kill();
    append_lines(&f, &lines("s", 10..20))?;
    let mark = events(&agent).len();
    let t0 = Instant::now();
    agent.restart()?;
    let ev = wait_event(
        &mut agent,
        mark,
        "that it runs from the saved configuration",
        START,
        |e| message(e).contains("running from the saved configuration"),
    )
    .await?;
    eprintln!(
        "started with etcd down → running from saved config after {:?}",
        t0.elapsed()
    );
    assert_eq!(level(&ev), "WARN", "{ev}");
    assert_eq!(ev["revision"].as_i64(), Some(r1), "{ev}");
    // Resumed from the checkpoint: the lines written while stopped, and nothing twice.
    assert_eq!(w.texts("saved_a", 20).await?, lines("s", 0..20));

    // etcd back: the live configuration takes over.
    let mark = events(&agent).len();
    w.etcd.restart().await?;
    let r2 = w.put(&[(&f, "saved_b")]).await?;
    let t0 = Instant::now();
    wait_applied(&mut agent, r2, EVENT).await?;
    eprintln!("etcd back → live config applied after {:?}", t0.elapsed());
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("s", 20..30))?;
    assert_eq!(w.texts("saved_b", 10).await?, lines("s", 20..30));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_puts_converges_to_the_last() -> anyhow::Result<()> {
    let w = World::start(&["burst_a", "burst_b"]).await?;
    let (fa, fb) = (w.log("a.log"), w.log("b.log"));
    append_lines(&fa, &lines("a pre", 0..200))?;
    append_lines(&fb, &lines("b pre", 0..200))?;
    let r0 = w.put(&[(&fa, "burst_a")]).await?;
    let mut agent = w.agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r0, START).await?;
    assert_eq!(w.texts("burst_a", 200).await?, lines("a pre", 0..200));

    // Paths and topics alternate; every third put carries both files, so entries start, stop and
    // restart all through the burst. The puts go out together (etcd commits them in a few fsyncs);
    // the one etcd ordered last is the state to end in.
    let files = [fa.clone(), fb.clone()];
    let topics = ["burst_a", "burst_b"];
    let client = w.etcd.client().await?;
    let t0 = Instant::now();
    let puts: Vec<_> = (0..50)
        .map(|i| {
            let mut entries = vec![(files[i % 2].clone(), topics[(i / 3) % 2])];
            if i % 3 == 0 {
                entries.push((files[(i + 1) % 2].clone(), topics[(i / 3 + 1) % 2]));
            }
            let mut client = client.clone();
            tokio::spawn(async move {
                let refs: Vec<(&Path, &str)> =
                    entries.iter().map(|(p, t)| (p.as_path(), *t)).collect();
                let resp = client.put(KEY, value(&refs), None).await?;
                anyhow::Ok((resp.header().map_or(0, |h| h.revision()), entries))
            })
        })
        .collect();
    let mut done = Vec::new();
    for p in puts {
        done.push(p.await??);
    }
    let burst = t0.elapsed();
    let (last_rev, last_entries) = done
        .into_iter()
        .max_by_key(|(rev, _)| *rev)
        .expect("50 puts");
    eprintln!("50 puts in {burst:?}; last: revision {last_rev} {last_entries:?}");
    wait_applied(&mut agent, last_rev, EVENT).await?;
    wait_reconciler_quiet(&mut agent, Duration::from_secs(1), EVENT).await?;
    eprintln!("converged {:?} after the burst began", t0.elapsed());
    // The copy kept for a start with etcd down is the last value too.
    let saved_path = w.state_dir().join("last_config.json");
    let saved_rev = || -> Option<i64> {
        let saved: Value = serde_json::from_slice(&std::fs::read(&saved_path).ok()?).ok()?;
        saved["revision"].as_i64()
    };
    let converged = Instant::now();
    while saved_rev() != Some(last_rev) {
        assert!(
            converged.elapsed() < EVENT,
            "last_config.json holds revision {:?}, not {last_rev}, {EVENT:?} after the agent \
             converged",
            saved_rev()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "last_config.json holds the last revision {:?} after convergence",
        converged.elapsed()
    );

    // Only the last state collects: lines appended now go where it says, and nowhere else.
    let post = [lines("a post", 0..20), lines("b post", 0..20)];
    append_lines(&fa, &post[0])?;
    append_lines(&fb, &post[1])?;
    let topic_of = |f: &PathBuf| {
        last_entries
            .iter()
            .find(|(p, _)| p == f)
            .map(|(_, t)| topics.iter().position(|x| x == t).expect("a test topic"))
    };
    let got = w
        .settle(&topics, Duration::from_secs(30), |got| {
            files.iter().zip(&post).all(|(f, want)| match topic_of(f) {
                Some(t) => want.iter().all(|l| got[t].contains(l)),
                None => true,
            })
        })
        .await?;
    let only = |v: &Vec<String>, p: &str| -> Vec<String> {
        v.iter().filter(|l| l.starts_with(p)).cloned().collect()
    };
    for ((f, want), prefix) in files.iter().zip(&post).zip(["a post", "b post"]) {
        for (t, topic) in topics.iter().enumerate() {
            let expected = if topic_of(f) == Some(t) {
                want.clone()
            } else {
                Vec::new()
            };
            assert_eq!(
                only(&got[t], prefix),
                expected,
                "{} after the burst, in {topic} (last state: {last_entries:?})",
                f.display()
            );
        }
    }
    // Through all the starts, stops and restarts, no earlier line went out twice; and all of a
    // file's lines went out if it was shipped before the burst (a.log) or is collected in the end.
    for (f, prefix) in files.iter().zip(["a pre", "b pre"]) {
        let mut all: Vec<String> = only(&got[0], prefix);
        all.extend(only(&got[1], prefix));
        all.sort();
        let dups = all.windows(2).filter(|p| p[0] == p[1]).count();
        all.dedup();
        let mut want = lines(prefix, 0..200);
        want.sort();
        if *f == fa || topic_of(f).is_some() {
            assert_eq!(all, want, "{prefix}: lines lost");
        }
        assert_eq!(dups, 0, "{prefix}: {dups} lines sent twice");
    }
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_change_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let w = World::start(&["tc_a", "tc_b"]).await?;
    let f = w.log("live.log");
    append_lines(&f, &lines("live", 0..1))?;
    let r1 = w.put(&[(&f, "tc_a")]).await?;
    let mut agent = w.agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;

    // About 1200 lines over ~2.5 s, one write each; the topic changes in the middle.
    const N: usize = 1200;
    let path = f.clone();
    let writer = std::thread::spawn(move || -> anyhow::Result<()> {
        for i in 1..N {
            append_lines(&path, &[format!("live line {i:05}")])?;
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
async fn auth_enabled_etcd_works() -> anyhow::Result<()> {
    const USER: &str = "logagent";
    const PASSWORD: &str = "Sw0rdf1sh-for-etcd";
    let mut w = World::start(&["auth_a", "auth_b"]).await?;
    w.etcd.enable_auth(USER, PASSWORD).await?;
    let f = w.log("auth.log");
    append_lines(&f, &lines("auth", 0..10))?;
    let r1 = w.put(&[(&f, "auth_a")]).await?;

    let with_credentials = |config: String, password: &str| {
        config.replacen(
            "[etcd]\n",
            &format!("[etcd]\nusername = \"{USER}\"\npassword = \"{password}\"\n"),
            1,
        )
    };
    let config = with_credentials(w.config(&w.etcd.endpoint()), PASSWORD);
    assert!(config.contains("username = "), "{config}");
    let mut agent = Agent::start(&bin(), &config)?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("auth_a", 10).await?, lines("auth", 0..10));
    // The watch works under auth too.
    let mark = events(&agent).len();
    let r2 = w.put(&[(&f, "auth_b")]).await?;
    wait_applied(&mut agent, r2, EVENT).await?;
    wait_tailing(&mut agent, mark, &f, EVENT).await?;
    append_lines(&f, &lines("auth", 10..20))?;
    assert_eq!(w.texts("auth_b", 10).await?, lines("auth", 10..20));

    // A wrong password is a clear error, and the agent keeps running without a configuration.
    let other_state = w.dir.path().join("state-wrong-password");
    let mut wrong_config = agent_config(&other_state, &w.etcd.endpoint(), &w.kafka.bootstrap(), IP);
    wrong_config.push_str("\n[log]\nformat = \"json\"\n");
    let mut wrong = Agent::start(&bin(), &with_credentials(wrong_config, "not-the-password"))?;
    let ev = wait_event(&mut wrong, 0, "an authentication error", START, |e| {
        message(e).starts_with("cannot read the collect configuration")
            && message(e).contains("authentication failed")
    })
    .await?;
    eprintln!("wrong password: {}", message(&ev));
    assert!(
        wrong.is_running(),
        "a wrong etcd password stopped the agent"
    );
    assert!(
        !events(&wrong)
            .iter()
            .any(|e| message(e) == "collect configuration applied"),
        "applied a configuration without valid credentials"
    );
    for a in [&agent, &wrong] {
        assert!(
            !a.log_contents().contains(PASSWORD),
            "the etcd password is in the log"
        );
    }
    wrong.stop_cleanly(START).await?;
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_key_template_several_endpoints_and_delete_or_empty_list_stop_collection(
) -> anyhow::Result<()> {
    let w = World::start(&["tpl_a"]).await?;
    let f = w.log("t.log");
    append_lines(&f, &lines("t", 0..10))?;
    let r1 = w.etcd.put(SEED_KEY, &value(&[(&f, "tpl_a")])).await?;
    // The seed fleets' layout, by configuration alone (here the environment override); and several
    // endpoints, the first of which has nothing listening.
    let endpoints = format!("127.0.0.1:{},{}", support::free_port(), w.etcd.endpoint());
    let mut agent = w.agent(
        &w.etcd.endpoint(),
        &[
            ("LOGAGENT_ETCD__KEY_TEMPLATE", "collect_log_{ip}_conf"),
            ("LOGAGENT_ETCD__ENDPOINTS", &endpoints),
        ],
    )?;
    let ev = wait_event(&mut agent, 0, "applying the seed-layout key", START, |e| {
        applied(e, r1)
    })
    .await?;
    assert_eq!(ev["key"], SEED_KEY, "{ev}");
    let dead = endpoints.split(',').next().unwrap_or_default();
    assert!(
        events(&agent).iter().any(|e| {
            message(e) == "reading collect configuration from etcd"
                && e["endpoints"].as_str().is_some_and(|l| l.contains(dead))
        }),
        "the agent does not list {dead} among its endpoints"
    );
    let lost: Vec<String> = events(&agent)
        .iter()
        .filter(|e| message(e).contains("etcd watch lost"))
        .map(|e| message(e).to_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "with a live endpoint the watch was lost: {lost:#?}"
    );
    assert_eq!(w.texts("tpl_a", 10).await?, lines("t", 0..10));

    // DELETE: everything stops, at warn.
    let mark = events(&agent).len();
    assert_eq!(w.etcd.delete(SEED_KEY).await?, 1);
    let ev = wait_event(&mut agent, mark, "the deleted key", EVENT, |e| {
        message(e).contains("deleted")
    })
    .await?;
    assert_eq!(level(&ev), "WARN", "{ev}");
    assert_eq!(ev["key"], SEED_KEY, "{ev}");
    let ev = wait_event(&mut agent, mark, "that all collection stops", EVENT, |e| {
        message(e).contains("stopping all collection")
    })
    .await?;
    assert_eq!(level(&ev), "WARN", "{ev}");
    wait_event(&mut agent, mark, "the entry stopping", EVENT, |e| {
        message(e).starts_with("stopping entry")
    })
    .await?;
    wait_reconciler_quiet(&mut agent, Duration::from_millis(300), EVENT).await?;
    append_lines(&f, &lines("t", 10..20))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shipped = read_all_of(&w.kafka.bootstrap(), "tpl_a").await?;
    assert_eq!(shipped.len(), 10, "lines shipped after the key was deleted");

    // Re-added: resumes from the stored offset, nothing read twice.
    let r3 = w.etcd.put(SEED_KEY, &value(&[(&f, "tpl_a")])).await?;
    wait_applied(&mut agent, r3, EVENT).await?;
    assert_eq!(w.texts("tpl_a", 20).await?, lines("t", 0..20));

    // An empty list is the same as a DELETE.
    let mark = events(&agent).len();
    let r4 = w.etcd.put(SEED_KEY, "[]").await?;
    let ev = wait_event(&mut agent, mark, "the empty list", EVENT, |e| {
        message(e).contains("empty list")
    })
    .await?;
    assert_eq!(
        (level(&ev), ev["revision"].as_i64()),
        ("WARN", Some(r4)),
        "{ev}"
    );
    wait_event(&mut agent, mark, "that all collection stops", EVENT, |e| {
        message(e).contains("stopping all collection")
    })
    .await?;
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_removed_and_re_added_resumes_without_duplicates() -> anyhow::Result<()> {
    let w = World::start(&["readd"]).await?;
    let f = w.log("r.log");
    append_lines(&f, &lines("r", 0..10))?;
    let r1 = w.put(&[(&f, "readd")]).await?;
    // A long linger keeps every batch in flight for a while: long enough to remove the path and
    // add it back while its last lines are still unacknowledged. The test sees that they are on
    // /metrics before it removes the path, and in the offset the release logs after.
    let port = support::free_port();
    let config = with_http_listener(&w.config(&w.etcd.endpoint()), port);
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
