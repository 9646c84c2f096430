//! librdkafka's batch produce call, which rdkafka does not wrap.
//!
//! `BaseProducer::send` costs, per record, a C string of the topic name, a topic lookup by name
//! under a lock and an argument list to parse. `rd_kafka_produce_batch` enqueues a whole batch for one
//! partition with one topic lookup. The records carry the same delivery opaque as `send` would give
//! them, so delivery reports reach `ProducerContext::delivery` unchanged.

use std::ffi::{c_int, c_void, CString};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::IntoOpaque;

use rdkafka::producer::ProducerContext;

use super::{KafkaProducer, SinkContext};

/// What each record carries for its delivery report: the producer context's own opaque type, so the
/// pointer handed to librdkafka here is the one `ProducerContext::delivery` receives back.
type Opaque = <SinkContext as ProducerContext>::DeliveryOpaque;

/// librdkafka's "let the partitioner choose" partition.
const PARTITION_UA: i32 = -1;

/// An application handle on one topic of the producer.
pub struct TopicHandle {
    ptr: NonNull<rd::rd_kafka_topic_t>,
    /// The handle must not outlive its client.
    _producer: Arc<KafkaProducer>,
}

// SAFETY: librdkafka topic handles may be used from any thread (every librdkafka handle is
// thread-safe); this one is only used for produce calls and destroyed once, on drop.
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

impl TopicHandle {
    /// `None` when librdkafka refuses the name; the caller then falls back to `send`, which reports why.
    pub fn new(producer: &Arc<KafkaProducer>, topic: &str) -> Option<TopicHandle> {
        let name = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `producer` lives; a null topic config means the
        // producer's default topic configuration, the same one `send` uses.
        let ptr = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        NonNull::new(ptr).map(|ptr| TopicHandle {
            ptr,
            _producer: producer.clone(),
        })
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new and destroyed exactly once; records already enqueued
        // hold their own reference to the topic.
        unsafe { rd::rd_kafka_topic_destroy(self.ptr.as_ptr()) };
    }
}

/// What one batch call did with the records it was given.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The producer queue filled up at this record: it and every later one were not enqueued.
    pub queue_full_at: Option<usize>,
    /// Records refused for another reason (each judged by the caller), by index, before
    /// `queue_full_at`.
    pub refused: Vec<(usize, RDKafkaErrorCode)>,
}

/// Enqueues `lines` (copied) for `partition`, or for the partitioner when `None`, each with a clone
/// of `opaque` for its delivery report. Records not enqueued get their opaque back here.
pub fn produce_batch(
    topic: &TopicHandle,
    partition: Option<i32>,
    key: Option<&[u8]>,
    lines: &[Bytes],
    opaque: &Opaque,
) -> Outcome {
    let (key_ptr, key_len) = key.map_or((ptr::null_mut(), 0), |k| {
        (k.as_ptr() as *mut c_void, k.len())
    });
    let mut msgs: Vec<rd::rd_kafka_message_t> = lines
        .iter()
        .map(|line| rd::rd_kafka_message_t {
            err: RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            rkt: ptr::null_mut(),
            partition: partition.unwrap_or(PARTITION_UA),
            payload: line.as_ptr() as *mut c_void,
            len: line.len(),
            key: key_ptr,
            key_len,
            offset: 0,
            _private: opaque.clone().into_ptr(),
        })
        .collect();
    let mut outcome = Outcome::default();
    if msgs.is_empty() {
        return outcome;
    }
    // SAFETY: `msgs` is a valid array of `msgs.len()` records whose payloads and key stay borrowed for
    // the call only: RD_KAFKA_MSG_F_COPY makes librdkafka copy them (keys are always copied).
    unsafe {
        rd::rd_kafka_produce_batch(
            topic.ptr.as_ptr(),
            partition.unwrap_or(PARTITION_UA),
            rd::RD_KAFKA_MSG_F_COPY,
            msgs.as_mut_ptr(),
            msgs.len() as c_int,
        )
    };
    for (i, m) in msgs.iter().enumerate() {
        if m.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            continue;
        }
        // SAFETY: librdkafka did not take this record, so its opaque reference is still ours.
        drop(unsafe { Opaque::from_ptr(m._private) });
        let code = RDKafkaErrorCode::from(m.err);
        if code == RDKafkaErrorCode::QueueFull {
            // librdkafka fails every record after the first full-queue one, so order is kept.
            outcome.queue_full_at.get_or_insert(i);
        } else if outcome.queue_full_at.is_none() {
            outcome.refused.push((i, code));
        }
    }
    outcome
}
