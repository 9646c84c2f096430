//! `logagent preview`: what an entry would ship, printed instead of produced.
//!
//! It runs the agent's own discoverers and tailers (and so the same splitter, decoding, multiline
//! grouping, filters and envelope) on an in-memory registry, and prints each batch where the sink
//! would produce it: the value, then its headers as `# key=value` lines. No Kafka, no checkpoint,
//! no state written; every file is read from its start. Without `follow` it stops once every file
//! it opened is read to its end and nothing came for a moment (or after `max_records`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Headers;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::collect::{CollectEntry, StartFrom};
use crate::config::read_policy::ReadPolicy;
use crate::sink::Batch;
use crate::state::registry::Registry;
use crate::tail::discover::{run_entry, Shared};
use crate::tail::TailOptions;
use crate::telemetry::Metrics;

/// How long nothing must arrive, with every open file read to its end, before the preview ends.
const QUIET: Duration = Duration::from_millis(500);

pub struct Preview {
    pub entries: Vec<CollectEntry>,
    pub hostname: String,
    pub ip: String,
    pub tail: TailOptions,
    pub policy: ReadPolicy,
    /// Stop after this many records.
    pub max_records: Option<usize>,
    /// Keep printing what is appended, until interrupted.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot write the preview: {0}")]
    Write(#[from] std::io::Error),
}

impl Preview {
    /// Prints the records to `out`; returns how many. A closed output (`| head`) ends it quietly.
    pub async fn run(
        self,
        out: &mut dyn Write,
        stop: CancellationToken,
    ) -> Result<usize, PreviewError> {
        let metrics = Metrics::new(false);
        let registry = Registry::new(Vec::new(), metrics.clone());
        let (tx, mut rx) = mpsc::channel(16);
        let mut tail = self.tail;
        if !self.follow {
            // A last line without its newline (or a held multiline group) is printed once input
            // ends, not after the agent's partial-line timeout.
            tail.partial_line_timeout = tail.partial_line_timeout.min(QUIET / 2);
        }
        let shared = Arc::new(Shared {
            hostname: self.hostname,
            ip: self.ip,
            policy: Arc::new(self.policy),
            ..Shared::standalone(registry.clone(), metrics, tx, tail)
        });
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for mut entry in self.entries {
            entry.from = StartFrom::Beginning;
            tasks.spawn(run_entry(Arc::new(entry), shared.clone(), cancel.clone()));
        }
        drop(shared);
        let mut printed = 0;
        let result = loop {
            if self.max_records.is_some_and(|max| printed >= max) {
                break Ok(printed);
            }
            let batch = tokio::select! {
                _ = stop.cancelled() => break Ok(printed),
                b = tokio::time::timeout(QUIET, rx.recv()) => b,
            };
            match batch {
                Ok(Some(batch)) => {
                    let left = self.max_records.map(|max| max - printed);
                    match print_batch(&batch, left, out) {
                        Ok(n) => printed += n,
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break Ok(printed),
                        Err(e) => break Err(e.into()),
                    }
                }
                Ok(None) => break Ok(printed),
                Err(_) if !self.follow && caught_up(&registry) => break Ok(printed),
                Err(_) => {}
            }
        };
        cancel.cancel();
        // Tailers blocked on a full channel let go once it is drained.
        while tokio::time::timeout(Duration::from_millis(10), tasks.join_next())
            .await
            .map_or(true, |r| r.is_some())
        {
            while rx.try_recv().is_ok() {}
        }
        result
    }
}

/// Every open file is read and "acknowledged" (printed) to its end.
fn caught_up(registry: &Registry) -> bool {
    registry.with_open_files(|open| open.iter().all(|f| f.lag == 0))
}

/// Prints up to `limit` records of `batch` and settles all of them, as delivery reports would.
fn print_batch(batch: &Batch, limit: Option<usize>, out: &mut dyn Write) -> std::io::Result<usize> {
    let n = limit.map_or(batch.lines.len(), |l| l.min(batch.lines.len()));
    for (i, value) in batch.lines.iter().take(n).enumerate() {
        out.write_all(value)?;
        out.write_all(b"\n")?;
        match batch.headers.get(i) {
            Some(h) => {
                for header in h.iter() {
                    write_header(out, header.key, header.value.unwrap_or_default())?;
                }
            }
            None => {
                for (k, v) in &batch.route.headers {
                    write_header(out, k, v.as_bytes())?;
                }
            }
        }
    }
    out.flush()?;
    for _ in 0..batch.lines.len() {
        batch.ticket.record_settled();
    }
    Ok(n)
}

fn write_header(out: &mut dyn Write, key: &str, value: &[u8]) -> std::io::Result<()> {
    writeln!(out, "# {key}={}", String::from_utf8_lossy(value))
}
