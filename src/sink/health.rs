//! What the agent knows of Kafka as a whole: is a broker answering, and is the producer still
//! usable. The sink owns these facts (its callbacks and the probe write them); `/readyz`, `/metrics`,
//! the status in etcd and the shutdown read them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct KafkaHealth {
    reachable: AtomicBool,
    /// Set once: the producer hit a fatal error and can no longer guarantee what it delivers.
    fatal: OnceLock<String>,
    /// Cancelled when `fatal` is set, so the agent stops reading and exits at once.
    fatal_signal: CancellationToken,
}

impl Default for KafkaHealth {
    fn default() -> Self {
        KafkaHealth {
            reachable: AtomicBool::new(true),
            fatal: OnceLock::new(),
            fatal_signal: CancellationToken::new(),
        }
    }
}

impl KafkaHealth {
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records reachability; returns the previous value.
    pub fn set_reachable(&self, up: bool) -> bool {
        // Read first: a store per delivered record would bounce the cache line between threads.
        let was = self.reachable.load(Ordering::Relaxed);
        if was != up {
            self.reachable.store(up, Ordering::Relaxed);
        }
        was
    }

    /// The fatal error's description, once the producer is unusable.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }

    /// Marks the producer unusable. Returns true the first time (the caller logs it then).
    pub fn set_fatal(&self, reason: String) -> bool {
        let first = self.fatal.set(reason).is_ok();
        self.fatal_signal.cancel();
        first
    }

    /// Cancelled when the producer hits a fatal error.
    pub fn fatal_signal(&self) -> CancellationToken {
        self.fatal_signal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_is_set_once_and_signals() {
        let h = KafkaHealth::default();
        let signal = h.fatal_signal();
        assert!(h.fatal().is_none() && !signal.is_cancelled());
        assert!(h.set_fatal("first".into()));
        assert!(!h.set_fatal("second".into()));
        assert_eq!(h.fatal(), Some("first"));
        assert!(signal.is_cancelled());
    }

    #[test]
    fn reachability_reports_the_previous_value() {
        let h = KafkaHealth::default();
        assert!(h.set_reachable(false));
        assert!(!h.is_reachable());
        assert!(!h.set_reachable(true));
        assert!(h.is_reachable());
    }
}
