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
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
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

/// Enqueues one record carrying its own `headers` on `topic` (no lookup by name, unlike `send`),
/// for records whose headers differ one from the next (the batch call takes none). librdkafka
/// takes the headers only when it takes the record: on failure they and the opaque come back with
/// the error code.
pub fn produce_with_headers(
    producer: &KafkaProducer,
    topic: &TopicHandle,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: OwnedHeaders,
    opaque: Opaque,
) -> Result<(), (RDKafkaErrorCode, OwnedHeaders, Opaque)> {
    use rd::rd_kafka_vtype_t as V;
    let vu = |vtype: V, u: rd::rd_kafka_vu_s__bindgen_ty_1| rd::rd_kafka_vu_t { vtype, u };
    let mem = |bytes: &[u8]| rd::rd_kafka_vu_s__bindgen_ty_1 {
        mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
            ptr: bytes.as_ptr() as *mut c_void,
            size: bytes.len(),
        },
    };
    // `as_borrowed` is the native headers pointer seen as a zero-sized type (how rdkafka itself
    // reads it); ownership passes to librdkafka only on success, below.
    let hdrs = headers.as_borrowed() as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t;
    let opaque_ptr = opaque.into_ptr();
    // On the stack: one call per record, so no allocation for its argument list.
    let null = vu(
        V::RD_KAFKA_VTYPE_END,
        rd::rd_kafka_vu_s__bindgen_ty_1 { i: 0 },
    );
    let mut vus = [
        vu(
            V::RD_KAFKA_VTYPE_RKT,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                rkt: topic.ptr.as_ptr(),
            },
        ),
        vu(
            V::RD_KAFKA_VTYPE_PARTITION,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                i32_: partition.unwrap_or(PARTITION_UA),
            },
        ),
        vu(V::RD_KAFKA_VTYPE_VALUE, mem(payload)),
        vu(
            V::RD_KAFKA_VTYPE_OPAQUE,
            rd::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque_ptr },
        ),
        vu(
            V::RD_KAFKA_VTYPE_MSGFLAGS,
            rd::rd_kafka_vu_s__bindgen_ty_1 {
                i: rd::RD_KAFKA_MSG_F_COPY,
            },
        ),
        vu(
            V::RD_KAFKA_VTYPE_HEADERS,
            rd::rd_kafka_vu_s__bindgen_ty_1 { headers: hdrs },
        ),
        null,
    ];
    let mut count = vus.len() - 1;
    if let Some(k) = key {
        vus[count] = vu(V::RD_KAFKA_VTYPE_KEY, mem(k));
        count += 1;
    }
    // SAFETY: every pointer in `vus` is valid for the call; RD_KAFKA_MSG_F_COPY makes librdkafka
    // copy the value and key; the topic handle outlives the call.
    let err =
        unsafe { rd::rd_kafka_produceva(producer.client().native_ptr(), vus.as_ptr(), count) };
    if err.is_null() {
        // librdkafka owns the headers now and frees them with the message.
        std::mem::forget(headers);
        return Ok(());
    }
    // SAFETY: a non-null error is ours to read and destroy; the record was not taken, so its
    // opaque reference is still ours.
    let code = unsafe {
        let code = RDKafkaErrorCode::from(rd::rd_kafka_error_code(err));
        rd::rd_kafka_error_destroy(err);
        code
    };
    Err((code, headers, unsafe { Opaque::from_ptr(opaque_ptr) }))
}
