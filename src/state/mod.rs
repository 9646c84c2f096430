//! What the agent knows about each file and keeps across restarts: its identity, its acknowledged
//! prefix, the registry of claimed files and the checkpoint written from it.
//!
//! This is the lowest floor: tailing and the sink write into it, nothing here imports them.

pub mod checkpoint;
pub mod identity;
pub mod progress;
pub mod registry;
