//! What is measured: the agent's CPU time, peak memory and bytes read (from /proc), and the records
//! that reached the topic (an rdkafka consumer reading every partition from the beginning).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// CPU seconds (user + system, all threads) of a live process.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')').context("malformed /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// A `kB` field of /proc/PID/status, in MiB (VmHWM is the peak resident set).
pub fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} missing from /proc/{pid}/status"))?;
    let kb: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Bytes the process passed through read-like calls (`rchar` of /proc/PID/io): files and sockets.
pub fn read_chars(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let line = io
        .lines()
        .find(|l| l.starts_with("rchar:"))
        .context("rchar missing")?;
    Ok(line["rchar:".len()..].trim().parse()?)
}

/// Counts the records of a topic from the beginning of every partition, on its own thread.
/// The mock cluster keeps only the last 100,000 records (or 5 MB) of a partition, so against it a
/// consumer that falls behind loses records: it is used with tansu only.
pub struct Counter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Counter {
    pub fn start(bootstrap: &str, topic: &str, partitions: &[i32]) -> anyhow::Result<Counter> {
        // Explicit assignment: the group id is required by librdkafka, but no group is joined and
        // nothing is committed.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "logagent-bench")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut errors = 0;
            while !s.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(_)) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    // Transient (leader not known yet): librdkafka retries on its own.
                    Some(Err(e)) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("  consumer: {e}");
                        }
                    }
                    None => {}
                }
            }
        });
        Ok(Counter {
            count,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Records the broker has appended to the topic: the sum of the partitions' high watermarks. The
/// topic starts empty, so this counts every acknowledged record, duplicates included.
pub struct Appended {
    client: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl Appended {
    pub fn new(bootstrap: &str, topic: &str, partitions: &[i32]) -> anyhow::Result<Appended> {
        Ok(Appended {
            client: ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()?,
            topic: topic.to_string(),
            partitions: partitions.to_vec(),
        })
    }

    pub fn count(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for &p in &self.partitions {
            let (_, high) = self
                .client
                .fetch_watermarks(&self.topic, p, Duration::from_secs(5))?;
            total += high.max(0) as u64;
        }
        Ok(total)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
