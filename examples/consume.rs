//! Prints the records of a topic, one value per line, from the beginning of every partition.
//!
//! `cargo run --example consume -- --brokers 127.0.0.1:9092 --topic web_log [--follow] [--count N]`
//!
//! Without `--follow` it stops at the end of every partition; `--count N` stops after N records,
//! waiting for them if they have not arrived yet. It assigns partitions itself (no consumer
//! group), so it never commits offsets and can be run any number of times.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(about = "Print a Kafka topic's record values, one per line")]
struct Args {
    /// Bootstrap brokers, comma-separated host:port
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to read
    #[arg(long)]
    topic: String,
    /// Keep waiting for new records after the end of every partition
    #[arg(long)]
    follow: bool,
    /// Stop after this many records, waiting for them if needed
    #[arg(long)]
    count: Option<usize>,
    /// Give up (exit 1) if not done after this many seconds
    #[arg(long)]
    timeout_secs: Option<u64>,
    /// Prefix each line with partition and offset
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consume: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let deadline = args
        .timeout_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        // librdkafka refuses `assign` without a group id; this one never joins or commits.
        .set(
            "group.id",
            format!("logagent-consume-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|e| format!("creating the consumer: {e}"))?;

    let wait = args.follow || args.count.is_some();
    let partitions = partitions(&consumer, &args.topic, wait, deadline)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&args.topic, *p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;

    let stop_at_end = !args.follow && args.count.is_none();
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        if stop_at_end && at_end.len() == partitions.len() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!(
                "timed out after {} s with {printed} records",
                args.timeout_secs.unwrap_or_default()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                let mut out = stdout.lock();
                let written = if args.verbose {
                    writeln!(out, "[p{} o{}] {value}", m.partition(), m.offset())
                } else {
                    writeln!(out, "{value}")
                };
                // A closed pipe (`| head`) means the reader has what it wanted.
                if written.and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
                printed += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("consume: {e} (retrying)"),
        }
    }
}

/// The topic's partitions; with `wait`, waits for the topic to exist (tansu does not auto-create
/// topics, so a reader may start before whoever creates it).
fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    wait: bool,
    deadline: Option<Instant>,
) -> Result<Vec<i32>, String> {
    let mut reported = false;
    loop {
        let problem = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return Ok(t.partitions().iter().map(|p| p.id()).collect());
                }
                Some(t) => format!("topic {topic}: {:?}", t.error()),
                None => format!("topic {topic} not in metadata"),
            },
            Err(e) => format!("metadata: {e}"),
        };
        if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(problem);
        }
        if !reported {
            eprintln!("consume: waiting for {problem}");
            reported = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
