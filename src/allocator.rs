//! The agent's allocator: jemalloc (see Cargo.toml for why), and giving its freed memory back.
//!
//! A line's buffers are allocated on the tailers' thread and freed on the sink's or the delivery
//! thread; glibc served that pattern through its arenas' slow paths. librdkafka's own allocations
//! stay with glibc's malloc.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Returns every arena's unused dirty pages to the system now, instead of after jemalloc's decay
/// (10 s, and only as the allocator is used again): an agent that just shipped a backlog across
/// hundreds of files idles at its working set, not at its peak.
pub fn purge() {
    // `MALLCTL_ARENAS_ALL` (4096) names every arena.
    let name = c"arena.4096.purge";
    // SAFETY: a "void" mallctl: no old or new value, so every pointer is null and the length 0.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(
            errno = rc,
            "jemalloc purge failed; its decay returns the memory later"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
    }

    /// Memory freed by the agent stays resident until jemalloc decays it, which it does only while
    /// it is used: the purge hands it back at once (what an agent idling after a backlog needs).
    #[test]
    fn a_purge_returns_freed_memory_at_once() {
        const MIB: usize = 1 << 20;
        // Read-buffer sized blocks, as tailers drop them after a backlog, touched so they are resident.
        let blocks: Vec<Vec<u8>> = (0..512).map(|_| vec![1u8; MIB / 4]).collect();
        let held = rss_bytes();
        drop(blocks);
        let freed = rss_bytes();
        purge();
        let purged = rss_bytes();
        assert!(
            freed.saturating_sub(purged) >= 64 * MIB as u64,
            "RSS with 128 MiB held {} MiB, after freeing {} MiB, after the purge {} MiB",
            held >> 20,
            freed >> 20,
            purged >> 20
        );
    }
}
