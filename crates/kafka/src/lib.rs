//! Kafka in and out for sluice, on librdkafka: a consumer-group [`source`]
//! that reads in batches and tracks each partition's position and
//! rebalances, and an idempotent [`sink`] that knows what a restored run
//! has already written.
//!
//! Every `unsafe` call into librdkafka's C API that rust-rdkafka does not
//! wrap is in this crate.

#![warn(missing_docs)]

pub mod reach;
pub mod sink;
pub mod source;

pub use reach::reach_brokers;
pub use sink::KafkaWriter;
pub use source::{KafkaRecord, KafkaSource, Reassignment};

/// The Kafka cluster refused or failed a request: the environment's problem
/// (brokers down, topic missing), to be retried after it is fixed.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {what}: {message}")]
pub struct KafkaError {
    /// What the host was doing.
    pub what: String,
    /// librdkafka's explanation.
    pub message: String,
}
