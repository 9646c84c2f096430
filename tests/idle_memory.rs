//! Memory after a backlog: 400 files × 600 KB are shipped with the default read buffer (256 KiB) and
//! line limit (1 MiB); once every tailer is caught up and idle, the process's RSS must fall back under
//! 32 MiB. The test runs `tail::memory`'s trimmer as the agent does: whether glibc hands freed buffers
//! back by itself depends on where they sit in its arenas (without the trimmer the same run measured
//! 11 MiB most times, but 105 MiB once in CI and 115 MiB once here). With the trimmer: 11–12 MiB;
//! with the trimmer but tailers that keep their last read buffer: 51–63 MiB.
//!
//! Its own test binary, so the RSS measured is this scenario's alone.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logagent::config::collect::CollectEntry;
use logagent::sink::Batch;
use logagent::state::registry::Registry;
use logagent::tail::discover::{run_entry, Shared};
use logagent::tail::TailOptions;
use logagent::telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const FILES: usize = 400;
const FILE_BYTES: usize = 600 * 1024;
const LINE: &[u8] = &[b'x'; 149];

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb / 1024.0
}

fn write_files(dir: &Path) -> u64 {
    let mut content = Vec::with_capacity(FILE_BYTES + 200);
    while content.len() < FILE_BYTES {
        content.extend_from_slice(LINE);
        content.push(b'\n');
    }
    for i in 0..FILES {
        std::fs::write(dir.join(format!("f{i:03}.log")), &content).unwrap();
    }
    (content.len() / (LINE.len() + 1) * FILES) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_falls_back_after_a_backlog_across_many_files() {
    let dir = tempfile::tempdir().unwrap();
    let lines = write_files(dir.path());
    let before = rss_mib();
    let metrics = Metrics::new(false);
    let (tx, mut rx) = mpsc::channel::<Batch>(8);
    let shared = Arc::new(Shared::standalone(
        Registry::new(Vec::new(), metrics.clone()),
        metrics,
        tx,
        TailOptions {
            poll_interval: Duration::from_millis(250),
            read_buffer_bytes: 262_144,
            max_line_bytes: 1_048_576,
            partial_line_timeout: Duration::from_secs(5),
            rotated_idle_timeout: Duration::from_secs(300),
            close_inactive: None,
            batch_max_lines: 4_096,
            skip_empty_lines: false,
        },
    ));
    let received = Arc::new(AtomicU64::new(0));
    let sink = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(batch) = rx.recv().await {
                received.fetch_add(batch.lines.len() as u64, Ordering::Relaxed);
                for _ in 0..batch.lines.len() {
                    batch.ticket.record_settled();
                }
            }
        }
    });
    let cancel = CancellationToken::new();
    tokio::spawn(logagent::tail::memory::run_trimmer(
        Duration::from_millis(500),
        cancel.clone(),
    ));
    let entry = Arc::new(CollectEntry::new(
        format!("{}/*.log", dir.path().display()),
        "t",
    ));
    let task = tokio::spawn(run_entry(entry, shared, cancel.clone()));
    tokio::time::timeout(Duration::from_secs(300), async {
        while received.load(Ordering::Relaxed) < lines {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the backlog was not shipped within 300 s");
    // Caught up: every tailer reaches its end and idles.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_mib();
    println!(
        "RSS: {before:.1} MiB before, {idle:.1} MiB idle after shipping {FILES} files x {} KB",
        FILE_BYTES / 1024
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("entry did not stop")
        .unwrap();
    sink.abort();
    assert!(
        idle <= 32.0,
        "RSS {idle:.1} MiB while idle after the backlog (limit 32 MiB)"
    );
}
