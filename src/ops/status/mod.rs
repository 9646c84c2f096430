//! This host's status, published to etcd under a lease the agent keeps alive: when the agent dies the
//! lease expires and the key vanishes, so `etcdctl get --prefix logagent/status/` is a live fleet view.
//!
//! ```text
//!   Connect ─▶ Grant lease ─▶ Put ─▶ every ttl/3: keep alive; every status_interval: put if changed
//!      ▲                                  │ error, lease lost, no keep-alive answer within the TTL
//!      └────────────── Backoff ◀──────────┘
//! ```
//! It runs on its own task and never holds anything the shipping path waits on; at a clean stop it
//! revokes the lease so the key goes at once.

//!
//! - [`schema`]: the value under the status key, shared with `logagent status`.
//! - [`build`]: that value from the agent's current state (pure).
//! - [`publish`]: the lease, the keep-alive and the writes.

pub mod build;
pub mod publish;
pub mod schema;

pub use build::{build, Identity, OpenFile, MAX_FILES_PER_ENTRY};
pub use publish::Publisher;
pub use schema::{EntryStatus, FileStatus, HostStatus};
