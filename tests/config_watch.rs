//! The collect key's watch (get → watch from rev+1 → on loss get again), against a real etcd and
//! tansu: changes applied live, a put made while the watch is down, compaction, a burst of puts.
//! Where the agent must be cut off from etcd at a precise moment, it talks to etcd through
//! [`Proxy`], a TCP relay the test controls.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::{json, Value};

use support::assigned_consumer;
use support::events::*;
use support::{append_lines, lines, seed_value, World};

const IP: &str = "10.44.0.7";
const KEY: &str = "collect_log_conf/10.44.0.7";
/// Upper bound for an event the agent must log or a record that must arrive: generous, as none of
/// these waits is a speed assertion (delays are printed instead; a 2-core machine under load is slow).
const EVENT: Duration = Duration::from_secs(30);
const START: Duration = Duration::from_secs(20);

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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
    let w = World::start(IP, &["lat_a", "lat_b", "lat_c"], 1).await?;
    let (one, two) = (w.log("one.log"), w.log("two.log"));
    append_lines(&one, &lines("one", 0..5))?;
    let r1 = w.put(&[(&one, "lat_a")]).await?;
    let mut agent = w.json_agent(&w.etcd.endpoint(), &[])?;
    wait_applied(&mut agent, r1, START).await?;
    assert_eq!(w.texts("lat_a", 5).await?, lines("one", 0..5));

    // From the put's commit (its reply) to the agent's log line; etcd's own commit time is printed
    // apart, as the agent has no say in it.
    let mut client = w.etcd.client().await?;
    let (mut commit, mut took) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let topic = ["lat_b", "lat_a"][i % 2];
        let t0 = Instant::now();
        let resp = client.put(KEY, seed_value(&[(&one, topic)]), None).await?;
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
    let consumer = assigned_consumer(w.bootstrap(), "lat_c", START).await?;
    let t0 = Instant::now();
    w.put(&[(&one, "lat_a"), (&two, "lat_c")]).await?;
    let first = tokio::time::timeout(EVENT, consumer.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no record on lat_c within {EVENT:?} of the put"))??;
    let record_latency = t0.elapsed();
    eprintln!("put → first record of the added file in Kafka: {record_latency:?}");
    assert_eq!(
        String::from_utf8_lossy(first.payload().unwrap_or_default()),
        lines("two", 0..1)[0]
    );
    assert_eq!(w.texts("lat_c", 3).await?, lines("two", 0..3));
    agent.stop_cleanly(START).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_made_while_the_watch_is_down_is_applied_after_reconnect() -> anyhow::Result<()> {
    let mut w = World::start(IP, &["down_a", "down_b"], 1).await?;
    let proxy = Proxy::start(w.etcd.endpoint()).await?;
    let f = w.log("app.log");
    append_lines(&f, &lines("app", 0..10))?;
    let r1 = w.put(&[(&f, "down_a")]).await?;
    let mut agent = w.json_agent(
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
    let w = World::start(IP, &["cmp_a", "cmp_b", "cmp_c"], 1).await?;
    let proxy = Proxy::start(w.etcd.endpoint()).await?;
    let f = w.log("c.log");
    append_lines(&f, &lines("c", 0..10))?;
    // A field makes the value recognisable in etcd's answer to the agent's Get: the proxy then holds
    // the agent's Watch request, so the test can compact past the revision it will ask for.
    let marker = "hold-the-watch-after-this-get";
    let first = json!([{"path": f, "topic": "cmp_a", "fields": {"m": marker}}]);
    let r1 = w.etcd.put(KEY, &first.to_string()).await?;
    proxy.hold_after(marker);
    let mut agent = w.json_agent(&proxy.endpoint(), &[])?;
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
async fn a_burst_of_50_puts_converges_to_the_last() -> anyhow::Result<()> {
    let w = World::start(IP, &["burst_a", "burst_b"], 1).await?;
    let (fa, fb) = (w.log("a.log"), w.log("b.log"));
    append_lines(&fa, &lines("a pre", 0..200))?;
    append_lines(&fb, &lines("b pre", 0..200))?;
    let r0 = w.put(&[(&fa, "burst_a")]).await?;
    let mut agent = w.json_agent(&w.etcd.endpoint(), &[])?;
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
                let resp = client.put(KEY, seed_value(&refs), None).await?;
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
