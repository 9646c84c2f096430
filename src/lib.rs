//! logagent: tails the log files that etcd assigns to this host and produces every line to Kafka,
//! at least once, with offsets that only move when Kafka has acknowledged.
//!
//! ```text
//! etcd ──get+watch──▶ config_source ──Desired──▶ reconcile ──start/stop/restart──▶ tail::discover (per entry)
//!                                                                                       │ spawns
//!                                                                                       ▼
//!                                                      tail::Tailer (per file) ──Batch──▶ bounded channel
//!                                                                                       │
//!   checkpoint ◀── registry::run_checkpointer ◀── progress (acked prefix) ◀── sink (one rdkafka producer)
//! ```
//!
//! - [`settings`]: the local TOML file (+ `LOGAGENT_*` env), validated at once.
//! - [`collect`]: the etcd value, a JSON list of entries, validated as a whole.
//! - [`config_source`]: get → watch(rev+1) → on loss, get again; last good config saved in state_dir.
//! - [`reconcile`]: pure `diff(desired, running)` and the supervisor that applies it.
//! - [`tail`]: discoverers (globs, rotation across restarts), tailers (read, split, rotate, truncate),
//!   run on their own runtime; [`read_policy`]: what may be read, whatever etcd says.
//! - [`sink`]: batches → records; delivery reports complete batch tickets; `sink::classify` says what
//!   an error means for its record, `sink::health` whether Kafka answers and the producer is usable.
//! - [`progress`]: per-file contiguous acknowledged prefix; [`registry`]: identities, claims, snapshots.
//! - [`checkpoint`]: versioned JSON written atomically; [`telemetry`]: metrics and logged events.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`; [`kafka_probe`]: is a broker answering?
//! - [`status`]: this host's status in etcd under a lease; [`fleet`]: `logagent status`, all hosts.
//! - [`app`]: wiring and the ordered shutdown: stop reading → flush deliveries → final checkpoint
//!   (a fatal producer error takes the same path and exits non-zero); [`handles`]: what reporters
//!   read; [`clock`]: wall-clock milliseconds.

pub mod app;
pub mod atomic_file;
pub mod checkpoint;
pub mod clock;
pub mod collect;
pub mod config_source;
pub mod fleet;
pub mod handles;
pub mod host;
pub mod http;
pub mod kafka_probe;
pub mod progress;
pub mod read_policy;
pub mod reconcile;
pub mod registry;
pub mod settings;
pub mod sink;
pub mod status;
pub mod tail;
pub mod telemetry;
