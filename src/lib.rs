//! logagent: tails the log files that etcd assigns to this host and produces every line to Kafka,
//! at least once, with offsets that only move when Kafka has acknowledged.
//!
//! The folders follow a line from the etcd value to the checkpoint:
//!
//! ```text
//! config::source ──Desired──▶ reconcile ──start/stop/restart──▶ tail::discover (per entry)
//!   (etcd get+watch)                                                  │ spawns
//!                                                                     ▼
//!                       tail::Tailer (per file) ─[record stage]─Batch──▶ bounded channel ──▶ sink
//!                                                                                             │ acks
//!   state::checkpoint ◀── state::registry (checkpointer) ◀── state::progress (acked prefix) ◀──┘
//! ```
//!
//! - [`config`]: the local TOML ([`config::settings`]), the etcd value ([`config::collect`]),
//!   get → watch → get again ([`config::source`]), this host's IP ([`config::host`]), what may be
//!   read whatever etcd says ([`config::read_policy`]), SIGHUP ([`config::reload`]).
//! - [`reconcile`]: pure `diff(desired, running)` and the supervisor that applies it.
//! - [`tail`]: discoverers (globs, rotation across restarts) and tailers (read, split, multiline,
//!   rotate, truncate), on their own runtime.
//! - [`record`]: the record stage of entries that set `encoding`, `format`, `headers` or line
//!   filters (decode → multiline → filter → envelope and metadata headers, with record ids); raw
//!   entries skip it. Its fields are [`config::records`].
//! - [`sink`]: batches → records on one rdkafka producer; delivery reports complete batch tickets;
//!   `sink::classify` says what an error means, `sink::health` whether Kafka answers.
//! - [`state`]: file identity, the acknowledged prefix per file, the registry of claims and the
//!   versioned checkpoint: a snapshot written atomically plus an append-only journal of the changes
//!   since, compacted into a new snapshot when it grows or most files changed
//!   ([`state::checkpoint`]: its document, its journal, the store). The lowest floor: it imports none of the above.
//! - [`ops`]: what operators see: `/metrics` `/healthz` `/readyz` ([`ops::http`]), status in etcd
//!   ([`ops::status`]), `logagent status` ([`ops::fleet`]), `logagent preview` ([`ops::preview`]).
//! - Ground floor, used by all: [`telemetry`] (metric names, one function per observable event),
//!   [`backoff`] (every retry schedule), [`atomic_file`], [`clock`], [`allocator`] (jemalloc, and
//!   giving freed memory back).
//! - [`host_metrics`]: `"type": "host_metrics"` entries: /proc samples as InfluxDB line protocol,
//!   to a topic through the same sink, or to InfluxDB ([`host_metrics::influx`]).
//! - [`app`]: wiring and the ordered shutdown: stop reading → flush deliveries → final checkpoint
//!   (a fatal producer error takes the same path and exits non-zero); [`handles`]: what reporters
//!   read.

pub mod allocator;
pub mod app;
pub mod atomic_file;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod handles;
pub mod host_metrics;
pub mod ops;
pub mod reconcile;
pub mod record;
pub mod sink;
pub mod state;
pub mod tail;
pub mod telemetry;
