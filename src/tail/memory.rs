//! Giving freed read buffers back to the system.
//!
//! Tailers drop their read buffers when caught up, but allocators keep freed memory: the buffers
//! (256 KiB to ~1.25 MiB) are freed by whichever thread drops the last line of a batch, and jemalloc
//! returns dirty pages only as it decays them while it is used (glibc, which librdkafka allocates
//! with, keeps grown heaps until trimmed from their top). After a backlog across thousands of files
//! the agent would stay at its peak RSS while idle. A purge of every jemalloc arena and
//! `malloc_trim(0)` return the free pages; both walk arenas under their locks, so they run at most
//! every few seconds and only after buffers were released — never per read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Read buffers released since the last trim.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// A tailer let go of a read buffer.
pub fn released() {
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// How often released memory is handed back at most.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Trims the allocator's free memory every `interval` in which read buffers were released.
pub async fn run_trimmer(interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if RELEASED.swap(0, Ordering::Relaxed) > 0 {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Returns free heap memory to the system: the agent's (jemalloc) and librdkafka's (glibc).
pub fn trim() {
    crate::allocator::purge();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
