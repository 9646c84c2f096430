//! Real services for integration tests: etcd, the tansu Kafka broker, InfluxDB 1.x, a Kafka consumer
//! and the agent binary, each on free loopback ports with its own temp dir, killed on drop; [`World`]
//! puts them together the way most tests start.
//!
//! Included by every integration test with `mod support;`. Each test binary uses a different
//! subset of these helpers, so unused-item lints would fire in every one of them.
#![allow(dead_code, unused_imports)]

mod agent;
mod checkpoint;
mod consume;
mod etcd;
pub mod events;
mod influx;
mod metrics;
mod process;
mod tansu;
mod world;

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use agent::{agent_config, Agent};
pub use checkpoint::{checkpoint_entries, checkpoint_records, checkpointed, CheckpointRecord};
pub use consume::{assigned_consumer, consume, consume_for, topic_partitions, Consumed};
pub use etcd::Etcd;
pub use influx::Influx;
pub use metrics::{http_get, lines_read_and_acked, samples, scrape, with_http_listener};
pub use process::strip_ansi;
pub use tansu::{Storage, Tansu};
pub use world::{bin, lines, seed_value, World};

/// A loopback port that was free a moment ago. Ports already handed out by this process are
/// skipped: tests of one binary run in parallel, and the kernel may hand a just-released port to
/// the next `bind(0)`.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Polls `f` every 50 ms until it returns true; fails after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, timeout, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `f` every 50 ms until it returns `Some`; fails after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Appends `lines` to `path` (created if missing), each followed by `\n`, in one write so a
/// tailer never sees half of the batch.
pub fn append_lines<S: AsRef<str>>(path: &Path, lines: &[S]) -> anyhow::Result<()> {
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l.as_ref());
        buf.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("open {} for append: {e}", path.display()))?;
    f.write_all(buf.as_bytes())?;
    Ok(())
}
