//! The bounded channel from tailers (and host-metric samplers) to the sink, with one addition:
//! while the sink holds trickle batches ([`super::hold`]) it does not listen to every send.
//!
//! Tailers run on their own runtime; each send the sink listens to wakes it across runtimes (an
//! eventfd write, a futex, a worker taken out of its park), and with 1,000 trickling files that was
//! about a fifth of the agent's idle CPU — for batches that then wait up to `idle_flush` anyway. So
//! while something is held the sink waits only for the due time, and a sender wakes it when its
//! send takes the channel's last slot (so the channel is never left full: a host-metric sample
//! that finds it full is dropped) or when it sends a batch that is not trickle (those go at once,
//! as before).
//! Everything still passes through the one FIFO channel, so one file's batches stay in order.

use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::sync::Notify;

use super::hold::SMALL_BATCH_LINES;
use super::Batch;

/// A channel of `capacity` batches.
pub fn channel(capacity: usize) -> (BatchSender, BatchReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let wanted = Arc::new(Notify::new());
    (
        BatchSender {
            tx,
            wanted: wanted.clone(),
        },
        BatchReceiver { rx, wanted },
    )
}

#[derive(Clone, Debug)]
pub struct BatchSender {
    tx: mpsc::Sender<Batch>,
    /// Wakes a sink that is not listening to sends.
    wanted: Arc<Notify>,
}

impl From<mpsc::Sender<Batch>> for BatchSender {
    /// A sender over a plain channel (tests and tools reading the receiver themselves).
    fn from(tx: mpsc::Sender<Batch>) -> BatchSender {
        BatchSender {
            tx,
            wanted: Arc::new(Notify::new()),
        }
    }
}

impl BatchSender {
    /// A slot now, or why not. A full channel wakes the sink, which then takes everything waiting.
    pub fn try_reserve(&self) -> Result<BatchPermit<'_>, TrySendError<()>> {
        match self.tx.try_reserve() {
            Ok(permit) => Ok(BatchPermit {
                permit,
                sender: self,
            }),
            Err(e) => {
                if matches!(e, TrySendError::Full(())) {
                    self.wanted.notify_one();
                }
                Err(e)
            }
        }
    }

    /// Waits for a slot (after [`BatchSender::try_reserve`] found none, so the sink was woken).
    pub async fn reserve(&self) -> Result<BatchPermit<'_>, mpsc::error::SendError<()>> {
        let permit = self.tx.reserve().await?;
        Ok(BatchPermit {
            permit,
            sender: self,
        })
    }
}

pub struct BatchPermit<'a> {
    permit: mpsc::Permit<'a, Batch>,
    sender: &'a BatchSender,
}

impl BatchPermit<'_> {
    pub fn send(self, batch: Batch) {
        let urgent = batch.lines.len() >= SMALL_BATCH_LINES;
        self.permit.send(batch);
        if urgent || self.sender.tx.capacity() == 0 {
            self.sender.wanted.notify_one();
        }
    }
}

pub struct BatchReceiver {
    rx: mpsc::Receiver<Batch>,
    wanted: Arc<Notify>,
}

impl BatchReceiver {
    /// The next batch; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// Notified when a sender wants the sink: the channel is full, or a batch that is not trickle
    /// was sent.
    pub fn wanted(&self) -> Arc<Notify> {
        self.wanted.clone()
    }

    /// Every batch waiting now, oldest first; `None` if the channel is closed and empty.
    pub fn drain(&mut self) -> Option<Vec<Batch>> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(b) => out.push(b),
                Err(TryRecvError::Empty) => return Some(out),
                Err(TryRecvError::Disconnected) if out.is_empty() => return None,
                Err(TryRecvError::Disconnected) => return Some(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::hold::tests::batch;
    use std::time::Duration;

    /// Whether the sink was woken (a stored notification completes at the first poll).
    async fn wanted_now(n: &Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, n.notified())
            .await
            .is_ok()
    }

    /// A trickle send leaves a holding sink asleep; the send that takes the last slot, and a batch
    /// that is not trickle, wake it.
    #[tokio::test]
    async fn only_the_last_slot_and_a_big_batch_want_the_sink() {
        let (tx, mut rx) = channel(3);
        let wanted = rx.wanted();
        tx.try_reserve().unwrap().send(batch(1));
        tx.try_reserve().unwrap().send(batch(1));
        assert!(!wanted_now(&wanted).await, "a trickle send woke the sink");
        tx.try_reserve().unwrap().send(batch(1));
        assert!(wanted_now(&wanted).await, "the channel was left full");
        assert!(tx.try_reserve().is_err());
        assert!(
            wanted_now(&wanted).await,
            "a sender found it full and did not say so"
        );
        assert_eq!(rx.drain().map(|b| b.len()), Some(3));

        tx.try_reserve().unwrap().send(batch(SMALL_BATCH_LINES));
        assert!(
            wanted_now(&wanted).await,
            "a big batch waited for the trickle's due time"
        );
        let lens: Vec<usize> = rx.drain().unwrap().iter().map(|b| b.lines.len()).collect();
        assert_eq!(lens, [SMALL_BATCH_LINES]);
        drop(tx);
        assert!(rx.drain().is_none(), "closed and empty");
    }
}
