//! The bound on rotated files held open: a renamed file is kept for a long idle timeout (applications
//! keep writing into it until they reopen), so a burst of rotations could pin many handles. Past
//! `max_rotated_files`, the fully acknowledged ones that idled longest are let go first; a file with
//! unacknowledged bytes or a held partial line is never cut short.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::state::identity::FileKey;

struct Held {
    idle_since: Instant,
    /// Every byte read is acknowledged and nothing is buffered: releasing it now loses nothing yet read.
    settled: bool,
    evict: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

pub struct RotatedFiles {
    max: usize,
    held: Mutex<HashMap<FileKey, Held>>,
}

impl RotatedFiles {
    pub fn new(max: usize) -> Arc<RotatedFiles> {
        Arc::new(RotatedFiles {
            max: max.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A tailer's file was rotated away. The returned flag is raised when the file should be let go
    /// (its tailer is woken through `wake`).
    pub fn hold(&self, key: FileKey, wake: Arc<Notify>) -> Arc<AtomicBool> {
        let evict = Arc::new(AtomicBool::new(false));
        let mut held = self.lock();
        held.insert(
            key,
            Held {
                idle_since: Instant::now(),
                settled: false,
                evict: evict.clone(),
                wake,
            },
        );
        self.enforce(&mut held);
        evict
    }

    /// The tailer's view at the end of the data: idle since `idle_since`, and whether it is settled.
    pub fn update(&self, key: FileKey, idle_since: Instant, settled: bool) {
        let mut held = self.lock();
        if let Some(h) = held.get_mut(&key) {
            h.idle_since = idle_since;
            h.settled = settled;
        }
        self.enforce(&mut held);
    }

    pub fn let_go(&self, key: FileKey) {
        self.lock().remove(&key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn enforce(&self, held: &mut HashMap<FileKey, Held>) {
        let mut kept = held
            .values()
            .filter(|h| !h.evict.load(Ordering::Relaxed))
            .count();
        while kept > self.max {
            let victim = held
                .values()
                .filter(|h| h.settled && !h.evict.load(Ordering::Relaxed))
                .min_by_key(|h| h.idle_since);
            let Some(v) = victim else { break };
            v.evict.store(true, Ordering::Relaxed);
            v.wake.notify_waiters();
            kept -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(ino: u64) -> FileKey {
        FileKey { dev: 1, ino }
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_settled_file_idle_longest_goes_first() {
        let r = RotatedFiles::new(2);
        let t0 = Instant::now();
        let a = r.hold(key(1), Arc::new(Notify::new()));
        let b = r.hold(key(2), Arc::new(Notify::new()));
        r.update(key(1), t0 + Duration::from_secs(5), true);
        r.update(key(2), t0, true);
        let c = r.hold(key(3), Arc::new(Notify::new()));
        assert!(
            b.load(Ordering::Relaxed),
            "the longest idle settled file stays"
        );
        assert!(!a.load(Ordering::Relaxed) && !c.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn unsettled_files_are_never_released_by_the_bound() {
        let r = RotatedFiles::new(1);
        let a = r.hold(key(1), Arc::new(Notify::new()));
        let b = r.hold(key(2), Arc::new(Notify::new()));
        assert!(!a.load(Ordering::Relaxed) && !b.load(Ordering::Relaxed));
        r.update(key(2), Instant::now(), true);
        assert!(b.load(Ordering::Relaxed), "released once settled");
        r.let_go(key(2));
        assert_eq!(r.len(), 1);
    }
}
