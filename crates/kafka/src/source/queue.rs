//! The one queue all assigned partitions' messages are forwarded to, through
//! librdkafka's C API (rust-rdkafka does not wrap queue forwarding).

use std::ffi::CString;
use std::ptr::NonNull;

use rdkafka::bindings as rdsys;

/// librdkafka's queue that every assigned partition's messages are
/// forwarded to, so that the poll loop takes them in batches.
///
/// Polling the consumer message by message read the clock three times for
/// each message and wrapped it in an event: about half of the poll loop's
/// own time (docs/performance.md, Kafka). A batch read does that once per batch.
/// Rebalances, commit results and statistics stay on the consumer's queue,
/// which the loop still polls before each batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct MessageQueue(pub(super) NonNull<rdsys::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues may be used from any thread; the handle is
// destroyed once, by `KafkaSource`'s drop, after every use.
unsafe impl Send for MessageQueue {}
unsafe impl Sync for MessageQueue {}

impl MessageQueue {
    /// A new queue of the client `rk`.
    pub(super) fn new(rk: *mut rdsys::rd_kafka_t) -> Option<Self> {
        // SAFETY: `rk` is a live client handle.
        NonNull::new(unsafe { rdsys::rd_kafka_queue_new(rk) }).map(Self)
    }

    /// Sends the messages of `topic`/`partition` here from now on. librdkafka
    /// keeps this forwarding over later fetch starts, but drops it when
    /// the partition is revoked: each assignment forwards again.
    pub(super) fn forward(&self, rk: *mut rdsys::rd_kafka_t, topic: &str, partition: i32) {
        let Ok(topic) = CString::new(topic) else {
            return;
        };
        // SAFETY: `rk` is the live client this queue belongs to; the
        // partition's queue handle is released right after use.
        unsafe {
            let partition = rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition);
            if !partition.is_null() {
                rdsys::rd_kafka_queue_forward(partition, self.0.as_ptr());
                rdsys::rd_kafka_queue_destroy(partition);
            }
        }
    }
}
