//! Proves the test harness itself against the real services: if these fail, every other
//! integration test's failure is about the harness, not the agent.

mod support;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use support::{consume, consume_for, Etcd, Storage, Tansu};

const T: Duration = Duration::from_secs(20);

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer")
}

async fn produce(bootstrap: &str, topic: &str, values: &[String]) {
    let p = producer(bootstrap);
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(i.to_string().as_bytes()),
        });
        p.send(
            FutureRecord::to(topic)
                .key(&key)
                .payload(v)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("produce {v} to {topic}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_put_get_survives_kill_and_restart() {
    let t0 = Instant::now();
    let mut etcd = Etcd::start().await.unwrap();
    eprintln!("etcd ready in {:?}", t0.elapsed());

    assert_eq!(etcd.get("collect_log_conf/10.0.0.1").await.unwrap(), None);
    etcd.put(
        "collect_log_conf/10.0.0.1",
        r#"[{"path":"/a","topic":"t"}]"#,
    )
    .await
    .unwrap();
    assert_eq!(
        etcd.get("collect_log_conf/10.0.0.1")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"[{"path":"/a","topic":"t"}]"#)
    );

    etcd.kill();
    assert!(!etcd.is_running());
    assert!(
        etcd.get("collect_log_conf/10.0.0.1").await.is_err(),
        "a killed etcd must not answer"
    );

    let t1 = Instant::now();
    etcd.restart().await.unwrap();
    eprintln!("etcd restarted in {:?}", t1.elapsed());
    assert_eq!(
        etcd.get("collect_log_conf/10.0.0.1")
            .await
            .unwrap()
            .as_deref(),
        Some(r#"[{"path":"/a","topic":"t"}]"#)
    );

    assert_eq!(etcd.delete("collect_log_conf/10.0.0.1").await.unwrap(), 1);
    assert_eq!(etcd.get("collect_log_conf/10.0.0.1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_refuses_old_watch_revisions() {
    let etcd = Etcd::start().await.unwrap();
    let first = etcd.put("k", "1").await.unwrap();
    etcd.put("k", "2").await.unwrap();
    let compacted = etcd.compact_to_latest().await.unwrap();
    assert!(compacted > first);

    let mut client = etcd.client().await.unwrap();
    let mut stream = client
        .watch(
            "k",
            Some(etcd_client::WatchOptions::new().with_start_revision(first)),
        )
        .await
        .unwrap();
    // etcd 3.4 first confirms the watch, then cancels it naming the compaction revision.
    let compact_revision = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let resp = stream.message().await.unwrap().expect("a watch response");
            if resp.canceled() {
                return resp.compact_revision();
            }
        }
    })
    .await
    .expect("the watch was canceled within 5 s");
    assert_eq!(compact_revision, compacted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_auth_requires_and_accepts_credentials() {
    let mut etcd = Etcd::start().await.unwrap();
    etcd.put("collect_log_conf/10.0.0.2", "[]").await.unwrap();
    etcd.enable_auth("logagent", "s3cret").await.unwrap();

    assert_eq!(
        etcd.get("collect_log_conf/10.0.0.2")
            .await
            .unwrap()
            .as_deref(),
        Some("[]")
    );
    etcd.put("collect_log_conf/10.0.0.2", "[ ]").await.unwrap();

    let mut anonymous = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let err = anonymous
        .get("collect_log_conf/10.0.0.2", None)
        .await
        .expect_err("an anonymous get must be refused once auth is on");
    assert!(
        err.to_string().contains("user name is empty"),
        "unexpected error: {err}"
    );

    let wrong = etcd_client::Client::connect(
        [etcd.endpoint()],
        Some(etcd_client::ConnectOptions::new().with_user("logagent", "wrong")),
    )
    .await;
    assert!(wrong.is_err(), "a wrong password must be refused");

    // Credentials live in the data dir, so they survive a restart.
    etcd.restart().await.unwrap();
    assert_eq!(
        etcd.get("collect_log_conf/10.0.0.2")
            .await
            .unwrap()
            .as_deref(),
        Some("[ ]")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_memory_round_trips_idempotent_lz4_records() {
    let t0 = Instant::now();
    let tansu = Tansu::start(Storage::Memory).await.unwrap();
    eprintln!("tansu ready in {:?}", t0.elapsed());
    tansu.create_topic("selftest", 3).await.unwrap();
    eprintln!("topic created at {:?}", t0.elapsed());

    let values: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    produce(&tansu.bootstrap(), "selftest", &values).await;
    eprintln!("produced at {:?}", t0.elapsed());

    let got = consume(&tansu.bootstrap(), "selftest", 10, T)
        .await
        .unwrap();
    eprintln!("consumed at {:?}", t0.elapsed());
    assert_eq!(got.len(), 10, "exactly the produced records: {got:?}");
    let mut texts: Vec<String> = got.iter().map(|c| c.text()).collect();
    texts.sort();
    let mut want = values.clone();
    want.sort();
    assert_eq!(texts, want);
    for c in &got {
        let i: usize = c.text()["line ".len()..].parse().unwrap();
        assert_eq!(c.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(
            c.headers,
            vec![("seq".to_string(), i.to_string().into_bytes())]
        );
        assert!((0..3).contains(&c.partition));
    }
    // Per partition, offsets are dense from 0 and in order.
    for p in 0..3 {
        let offsets: Vec<i64> = got
            .iter()
            .filter(|c| c.partition == p)
            .map(|c| c.offset)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_fails_with_a_count_when_too_few_records_arrive() {
    let tansu = Tansu::start(Storage::Memory).await.unwrap();
    tansu.create_topic("short", 1).await.unwrap();
    produce(&tansu.bootstrap(), "short", &["only".to_string()]).await;

    let err = consume(&tansu.bootstrap(), "short", 2, Duration::from_secs(3))
        .await
        .expect_err("one record is not two");
    assert!(err.to_string().contains("read 1 of at least 2"), "{err}");

    // Whatever was there at the call is read even with no time to wait for more.
    let all = consume_for(&tansu.bootstrap(), "short", Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let t = Instant::now();
    let all = consume_for(&tansu.bootstrap(), "short", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert!(t.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_sqlite_keeps_records_across_restart() {
    let t0 = Instant::now();
    let mut tansu = Tansu::start(Storage::Sqlite).await.unwrap();
    tansu.create_topic("durable", 2).await.unwrap();
    let values: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
    produce(&tansu.bootstrap(), "durable", &values).await;

    let t1 = Instant::now();
    tansu.restart().await.unwrap();
    eprintln!("tansu sqlite restarted in {:?}", t1.elapsed());

    let got = consume(&tansu.bootstrap(), "durable", 5, T).await.unwrap();
    let mut texts: Vec<String> = got.iter().map(|c| c.text()).collect();
    texts.sort();
    assert_eq!(texts, values);

    // After a restart the broker still accepts writes, appended after the old ones.
    produce(&tansu.bootstrap(), "durable", &["after".to_string()]).await;
    let got = consume(&tansu.bootstrap(), "durable", 6, T).await.unwrap();
    assert_eq!(got.len(), 6);
    eprintln!("sqlite test took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_kill_stops_answering() {
    let mut tansu = Tansu::start(Storage::Memory).await.unwrap();
    let addr = tansu.bootstrap();
    tansu.kill();
    assert!(!tansu.is_running());
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[test]
fn free_ports_are_distinct() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| support::free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn agent_config_is_valid_toml_with_escaped_values() {
    let cfg = support::agent_config(
        std::path::Path::new("/tmp/a \"b\""),
        "127.0.0.1:1",
        "127.0.0.1:2",
        "10.9.8.7",
    );
    assert!(cfg.contains(r#"state_dir = "/tmp/a \"b\"""#), "{cfg}");
    assert!(
        cfg.contains(r#"key_template = "collect_log_conf/{ip}""#),
        "{cfg}"
    );
    assert!(cfg.contains(r#"brokers = ["127.0.0.1:2"]"#), "{cfg}");
}

#[test]
fn strips_color_codes() {
    assert_eq!(
        support::strip_ansi("\x1b[2m2024\x1b[0m \x1b[32m INFO\x1b[0m a=\x1b[3mb\x1b[0m"),
        "2024  INFO a=b"
    );
}

/// A stand-in for the agent binary: shows the harness passes `run --config FILE`, captures
/// output, delivers SIGTERM and restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_process_control_with_a_fake_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fake-agent");
    std::fs::write(
        &bin,
        "#!/bin/sh\n\
         echo \"argv: $*\"\n\
         echo \"config says: $(head -1 \"$3\")\" >&2\n\
         trap 'echo got TERM; exit 0' TERM\n\
         while :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let cfg = support::agent_config(dir.path(), "127.0.0.1:1", "127.0.0.1:2", "10.9.8.7");
    let mut agent = support::Agent::start(&bin, &cfg).unwrap();
    assert!(agent.pid().is_some());
    agent
        .wait_for_log("config says: [agent]", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(agent.log_contents().contains(&format!(
        "argv: run --config {}",
        agent.config_path().display()
    )));

    let err = agent
        .wait_for_log("never printed", Duration::from_millis(300))
        .await
        .expect_err("must time out");
    assert!(err.to_string().contains("never printed"), "{err}");

    agent.sigterm().unwrap();
    let status = agent.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(agent.log_contents().contains("got TERM"));

    // A restart appends to the same log; waits only see the new run.
    agent.restart().unwrap();
    agent
        .wait_for_log("argv: run", Duration::from_secs(5))
        .await
        .unwrap();
    let mark = agent.log_len();
    agent.sigkill();
    assert!(!agent.is_running());
    assert_eq!(agent.log_contents().matches("argv: run").count(), 2);
    let err = agent
        .wait_for_log_after(mark, "got TERM", Duration::from_secs(1))
        .await
        .expect_err("SIGKILL is not trapped");
    assert!(err.to_string().contains("exited"), "{err}");
}

/// The checkpoint as tests read it: the snapshot, then the journal's complete lines in order when
/// its header names the snapshot's bytes; a torn last line or another snapshot's journal is not
/// read. Written by hand, as the agent lays the files out.
#[test]
fn checkpoint_records_replay_the_journal_over_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |ino: u64, offset: u64| {
        format!(
            r#"{{"dev":1,"ino":{ino},"fingerprint":"","fingerprint_len":0,"path":"/l/{ino}.log","topic":"t","offset":{offset},"tail_hash":"0123456789abcdef","updated_ms":1}}"#
        )
    };
    let snapshot = format!(
        "{{\n  \"version\": 1,\n  \"files\": [\n{},\n{}\n  ]\n}}\n",
        entry(1, 10),
        entry(2, 20)
    );
    std::fs::write(dir.path().join("checkpoints.json"), &snapshot).unwrap();
    let header = |bytes: &[u8]| {
        format!(
            "{{\"journal\":1,\"snapshot_len\":{},\"snapshot_xxh3\":\"{:016x}\"}}\n",
            bytes.len(),
            xxhash_rust::xxh3::xxh3_64(bytes)
        )
    };
    let offsets = || -> Vec<(u64, u64)> {
        support::checkpoint_records(dir.path())
            .unwrap()
            .iter()
            .map(|r| (r.ino, r.offset))
            .collect()
    };
    let journal = dir.path().join("checkpoints.journal");
    let lines = format!(
        "{}{{\"set\":{}}}\n{{\"forget\":{{\"dev\":1,\"ino\":2}}}}\n{{\"set\":{}}}\n{{\"set\":{}}}\n{{\"set\":{{\"dev\":1,\"ino\":1,\"off",
        header(snapshot.as_bytes()),
        entry(1, 11),
        entry(3, 30),
        entry(2, 21),
    );
    std::fs::write(&journal, &lines).unwrap();
    assert_eq!(offsets(), [(1, 11), (2, 21), (3, 30)]);

    let stale = format!("{}{{\"set\":{}}}\n", header(b"other bytes"), entry(1, 99));
    std::fs::write(&journal, stale).unwrap();
    assert_eq!(offsets(), [(1, 10), (2, 20)], "another snapshot's journal");
}
