//! A Kafka topic as an output: window results keyed by their window key, late
//! records and dead letters with their reason in a header.
//!
//! The producer is idempotent (no duplicates from its own retries) and
//! retries failed deliveries itself; a delivery that still fails is kept as
//! an error that stops the run before offsets covering it are committed, so a
//! record is never dropped: it is produced again after the restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::config::KafkaOutputConfig;
use crate::error::KafkaError;

/// How long a flush may wait for acknowledgements before the run stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Remembers the first delivery that failed for good.
#[derive(Default)]
struct DeliveryWatch {
    failed: Arc<Mutex<Option<String>>>,
}

impl ClientContext for DeliveryWatch {}

impl ProducerContext for DeliveryWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result
            && let Ok(mut failed) = self.failed.lock()
        {
            failed.get_or_insert_with(|| error.to_string());
        }
    }
}

/// An idempotent producer writing one topic.
pub struct KafkaWriter {
    producer: ThreadedProducer<DeliveryWatch>,
    topic: String,
    failed: Arc<Mutex<Option<String>>>,
    records: u64,
}

impl KafkaWriter {
    /// Connects a producer for `config.topic` at `brokers`.
    pub fn create(config: &KafkaOutputConfig, brokers: &str) -> Result<Self, KafkaError> {
        let watch = DeliveryWatch::default();
        let failed = Arc::clone(&watch.failed);
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let producer = client.create_with_context(watch).map_err(|e| KafkaError {
            what: format!("creating a producer for topic {}", config.topic),
            message: e.to_string(),
        })?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            failed,
            records: 0,
        })
    }

    /// Queues one record. A full local queue is backpressure: wait for the
    /// broker to take some, then try again, never drop.
    pub fn send(
        &mut self,
        key: Option<&str>,
        value: &str,
        reason: Option<&str>,
    ) -> Result<(), KafkaError> {
        self.check()?;
        let mut record = BaseRecord::<str, str>::to(&self.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(reason) = reason {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "reason",
                value: Some(reason),
            }));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(KafkaError {
                        what: format!("producing to topic {}", self.topic),
                        message: e.to_string(),
                    });
                }
            }
        }
        self.records += 1;
        Ok(())
    }

    /// Waits until every queued record is acknowledged; fails if any
    /// delivery failed for good.
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| KafkaError {
            what: format!("flushing topic {}", self.topic),
            message: e.to_string(),
        })?;
        self.check()
    }

    /// Records sent so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn check(&self) -> Result<(), KafkaError> {
        let failed = self.failed.lock().ok().and_then(|f| f.clone());
        match failed {
            Some(message) => Err(KafkaError {
                what: format!("delivering to topic {}", self.topic),
                message,
            }),
            None => Ok(()),
        }
    }
}
