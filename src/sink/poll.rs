//! The producer's event loop, owned here instead of rdkafka's `ThreadedProducer`.
//!
//! `ThreadedProducer`'s thread calls `BaseProducer::poll(100 ms)`, which loops until its deadline and
//! hands librdkafka the time left rounded *down* to whole milliseconds: once under 1 ms is left, every
//! call is a zero-timeout poll, so the thread spins for up to a millisecond at the end of every
//! 100 ms, ten times a second, whether or not anything happens (about 1 % of a core on an idle host).
//!
//! Here librdkafka signals the main queue's first event of a quiet period on an eventfd (its
//! `queue_io_event`): the thread sleeps in `poll(2)` on that descriptor with a real timeout, and when
//! woken serves events with zero-timeout polls until the queue is empty. One delivery event carries
//! the reports of a whole produce response, so a trickling host wakes this thread once per request,
//! and an idle one once per [`SAFETY_NET`].
//!
//! The thread lives as long as the producer: delivery reports must be served through the final flush
//! of the ordered shutdown, so it is stopped (and joined) only when [`KafkaProducer`] is dropped.

use std::io;
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer};

use super::SinkContext;

/// Longest sleep without a signal: only a lost wake-up would need it, so it may be long.
pub const SAFETY_NET: Duration = Duration::from_secs(1);

/// librdkafka's producer with this module's poll thread serving its events.
pub struct KafkaProducer {
    inner: Arc<BaseProducer<SinkContext>>,
    poller: Option<Poller>,
}

impl KafkaProducer {
    /// Starts serving `producer`'s events on a thread of its own.
    pub fn start(producer: BaseProducer<SinkContext>) -> io::Result<KafkaProducer> {
        let inner = Arc::new(producer);
        let poller = Poller::spawn(inner.clone())?;
        Ok(KafkaProducer {
            inner,
            poller: Some(poller),
        })
    }

    /// How many times the poll thread has woken up (a wake-up serves every queued event).
    pub fn wakeups(&self) -> u64 {
        self.poller
            .as_ref()
            .map_or(0, |p| p.shared.wakeups.load(Ordering::Relaxed))
    }
}

impl Deref for KafkaProducer {
    type Target = BaseProducer<SinkContext>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl Drop for KafkaProducer {
    fn drop(&mut self) {
        if let Some(p) = self.poller.take() {
            p.stop();
        }
    }
}

struct Shared {
    stop: AtomicBool,
    wakeups: std::sync::atomic::AtomicU64,
}

struct Poller {
    shared: Arc<Shared>,
    /// Written by librdkafka when the queue gets an event, and by [`Poller::stop`].
    signal: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// The value added to the eventfd by a wake-up (librdkafka writes these 8 bytes as they are).
const WAKE: u64 = 1;

impl Poller {
    fn spawn(producer: Arc<BaseProducer<SinkContext>>) -> io::Result<Poller> {
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let signal = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let queue = MainQueue::of(&producer);
        let payload = WAKE.to_ne_bytes();
        // SAFETY: the queue handle is valid; librdkafka copies the payload, and the descriptor outlives
        // the registration (the thread, which holds it, disables it before the fd is closed).
        unsafe {
            rd::rd_kafka_queue_io_event_enable(
                queue.0,
                signal.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
            )
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            wakeups: Default::default(),
        });
        let thread = {
            let (shared, signal) = (shared.clone(), signal.clone());
            std::thread::Builder::new()
                .name("kafka-events".into())
                .spawn(move || serve(producer, queue, &signal, &shared))?
        };
        Ok(Poller {
            shared,
            signal,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        wake(&self.signal);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The producer's main queue (delivery reports, errors, logs), held for the thread's lifetime.
struct MainQueue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka queue handles are thread-safe; this one is used by the poll thread only and
// destroyed once.
unsafe impl Send for MainQueue {}

impl MainQueue {
    fn of(producer: &BaseProducer<SinkContext>) -> MainQueue {
        // SAFETY: the client pointer is valid while the producer lives; returns a new reference.
        MainQueue(unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) })
    }

    fn len(&self) -> usize {
        // SAFETY: a valid queue handle.
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: valid handle from rd_kafka_queue_get_main; a negative fd disables the signal.
        unsafe {
            rd::rd_kafka_queue_io_event_enable(self.0, -1, std::ptr::null(), 0);
            rd::rd_kafka_queue_destroy(self.0);
        }
    }
}

fn wake(fd: &OwnedFd) {
    let v = WAKE.to_ne_bytes();
    // SAFETY: writes 8 bytes from a valid buffer to an eventfd we own.
    let _ = unsafe { libc::write(fd.as_raw_fd(), v.as_ptr().cast(), v.len()) };
}

/// Waits for the signal (at most `timeout`) and clears it.
fn wait(fd: &OwnedFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if n > 0 {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a valid buffer; the fd is non-blocking.
        let _ = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }
}

fn serve(
    producer: Arc<BaseProducer<SinkContext>>,
    queue: MainQueue,
    signal: &OwnedFd,
    shared: &Shared,
) {
    loop {
        // Each zero-timeout poll serves one event and re-arms the signal; an event queued after the
        // last one served writes the signal again, so none is left waiting for the safety net.
        while queue.len() > 0 {
            producer.poll(Duration::ZERO);
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        wait(signal, SAFETY_NET);
        shared.wakeups.fetch_add(1, Ordering::Relaxed);
    }
    drop(queue);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;

    fn context(retry_tx: tokio::sync::mpsc::UnboundedSender<crate::sink::Retry>) -> SinkContext {
        SinkContext {
            metrics: crate::telemetry::Metrics::new(false),
            retry_tx,
            health: Default::default(),
            requests_seen: Default::default(),
        }
    }

    fn producer(bootstrap: &str) -> KafkaProducer {
        let (retry_tx, _retry_rx) = tokio::sync::mpsc::unbounded_channel();
        let base: BaseProducer<SinkContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "300")
            .create_with_context(context(retry_tx))
            .unwrap();
        KafkaProducer::start(base).unwrap()
    }

    /// With nothing to ship, the poll thread sleeps on its signal: it wakes once per safety-net
    /// period at most, where rdkafka's thread polls every 100 ms and spins at each deadline.
    #[test]
    fn an_idle_producer_sleeps_instead_of_polling() {
        let p = producer("127.0.0.1:1");
        std::thread::sleep(Duration::from_millis(300));
        let before = p.wakeups();
        std::thread::sleep(SAFETY_NET * 2 + Duration::from_millis(200));
        let woken = p.wakeups() - before;
        // Unreachable broker: librdkafka may log/err a few times; a 100 ms poll loop would be ~22.
        assert!(
            woken <= 8,
            "the poll thread woke {woken} times in {:?} with nothing queued",
            SAFETY_NET * 2
        );
    }

    /// Delivery reports are served without any caller polling: a record for an unreachable broker
    /// times out, and its report reaches the context (which sends it back for a retry).
    #[test]
    fn delivery_reports_are_served_by_the_thread() {
        let (retry_tx, mut retry_rx) = tokio::sync::mpsc::unbounded_channel();
        let base: BaseProducer<SinkContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200")
            .create_with_context(context(retry_tx))
            .unwrap();
        let p = KafkaProducer::start(base).unwrap();
        let route = Arc::new(crate::sink::Route {
            topic: "t".into(),
            key: None,
            headers: vec![],
            partition_seed: 0,
            path: "/x".into(),
            counters: crate::telemetry::Metrics::new(false).topic("t"),
        });
        let progress = crate::state::progress::FileProgress::new(Default::default());
        let file = Arc::new(tempfile::tempfile().unwrap());
        let ticket = progress.issue(
            crate::state::progress::Mark {
                offset: 2,
                tail_hash: Default::default(),
            },
            vec![2],
            file,
            2,
        );
        let opaque = Arc::new(crate::sink::InFlight { route, ticket });
        let rec = rdkafka::producer::BaseRecord::<(), [u8], _>::with_opaque_to("t", opaque)
            .payload(&b"x\n"[..])
            .partition(0);
        p.send(rec).map_err(|(e, _)| e).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match retry_rx.try_recv() {
                Ok(_) => break,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no delivery report served within 10 s: {e}"),
            }
        }
    }
}
