//! A Kafka topic as an output: window results keyed by their window key, late
//! records and dead letters with their reason in a header.
//!
//! The producer is idempotent (no duplicates from its own retries) and
//! retries failed deliveries itself; a delivery that still fails is kept as
//! an error that stops the run before offsets covering it are committed, so a
//! record is never dropped: it is produced again after the restart.
//!
//! With checkpoints, a topic takes part in them as an output file does. A
//! file is cut back to its checkpointed length and the replay writes the rest
//! again; a topic cannot be cut back, so a restored run reads back what was
//! written after the checkpointed offsets and does not produce those records
//! a second time when the replay emits them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use sluice_config::KafkaOutputConfig;
use sluice_core::state::TopicPosition;

use crate::KafkaError;

/// How long a flush may wait for acknowledgements before the run stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a metadata request or the read-back at a restore may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// Remembers the first delivery that failed for good, and per partition the
/// offset after the last record delivered.
#[derive(Default)]
struct DeliveryWatch {
    failed: Arc<Mutex<Option<String>>>,
    delivered: Arc<Mutex<HashMap<i32, i64>>>,
}

impl ClientContext for DeliveryWatch {}

impl ProducerContext for DeliveryWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((error, _)) => {
                if let Ok(mut failed) = self.failed.lock() {
                    failed.get_or_insert_with(|| error.to_string());
                }
            }
            Ok(message) => {
                if let Ok(mut delivered) = self.delivered.lock() {
                    let end = delivered.entry(message.partition()).or_insert(0);
                    *end = (*end).max(message.offset() + 1);
                }
            }
        }
    }
}

/// What a writer keeps for checkpoints: where the topic stood, and the
/// records a restored run must not produce again.
#[derive(Default)]
struct Tracking {
    /// Per partition, the end offset when the run started (or after the
    /// read-back of a restore).
    ends: HashMap<i32, i64>,
    /// Read back at a restore and not yet emitted again, with their copies.
    pending: HashMap<(Option<String>, String), u32>,
    /// Records not produced because they had been before the restore.
    suppressed: u64,
}

/// An idempotent producer writing one topic.
pub struct KafkaWriter {
    producer: ThreadedProducer<DeliveryWatch>,
    topic: String,
    failed: Arc<Mutex<Option<String>>>,
    delivered: Arc<Mutex<HashMap<i32, i64>>>,
    /// Present when the run keeps checkpoints.
    tracking: Option<Tracking>,
    /// Records emitted while the producer's queue was full, oldest first.
    overflow: std::collections::VecDeque<(Option<String>, String, Option<String>)>,
    records: u64,
}

impl KafkaWriter {
    /// Connects a producer for `config.topic` at `brokers`. With
    /// `checkpoints`, the writer learns where the topic ends; with `resume`
    /// (a restore), it reads back what was written after that position.
    pub fn create(
        config: &KafkaOutputConfig,
        brokers: &str,
        checkpoints: bool,
        resume: Option<&TopicPosition>,
    ) -> Result<Self, KafkaError> {
        let watch = DeliveryWatch::default();
        let failed = Arc::clone(&watch.failed);
        let delivered = Arc::clone(&watch.delivered);
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
        let tracking = if checkpoints || resume.is_some() {
            Some(track(&producer, config, brokers, resume)?)
        } else {
            None
        };
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            failed,
            delivered,
            tracking,
            overflow: std::collections::VecDeque::new(),
            records: 0,
        })
    }

    /// Where the topic stands for a checkpoint: call after [`Self::flush`],
    /// so that every record sent is acknowledged. `None` without tracking.
    pub fn position(&self) -> Option<TopicPosition> {
        let tracking = self.tracking.as_ref()?;
        let mut ends = tracking.ends.clone();
        if let Ok(delivered) = self.delivered.lock() {
            for (&p, &end) in delivered.iter() {
                let e = ends.entry(p).or_insert(end);
                *e = (*e).max(end);
            }
        }
        let mut ends: Vec<(i32, i64)> = ends.into_iter().collect();
        ends.sort_unstable();
        let mut pending: Vec<(Option<String>, String)> = tracking
            .pending
            .iter()
            .flat_map(|(record, &n)| std::iter::repeat_n(record.clone(), n as usize))
            .collect();
        pending.sort_unstable();
        Some(TopicPosition { ends, pending })
    }

    /// Records read back at the restore and not emitted again so far.
    pub fn pending(&self) -> usize {
        self.tracking
            .as_ref()
            .map_or(0, |t| t.pending.values().map(|&n| n as usize).sum())
    }

    /// Records not produced because the run before the restore had.
    pub fn suppressed(&self) -> u64 {
        self.tracking.as_ref().map_or(0, |t| t.suppressed)
    }

    /// Queues one record. A full local queue is backpressure: the record is
    /// kept (never dropped) and [`KafkaWriter::drain`] reports the output
    /// backlogged until the brokers have taken it, so the run pauses its
    /// consumer rather than blocking in here.
    pub fn send(
        &mut self,
        key: Option<&str>,
        value: &str,
        reason: Option<&str>,
    ) -> Result<(), KafkaError> {
        self.check()?;
        if let Some(tracking) = &mut self.tracking
            && !tracking.pending.is_empty()
        {
            let written = (key.map(str::to_owned), value.to_owned());
            if let Some(copies) = tracking.pending.get_mut(&written) {
                *copies -= 1;
                if *copies == 0 {
                    tracking.pending.remove(&written);
                }
                tracking.suppressed += 1;
                return Ok(());
            }
        }
        if !self.overflow.is_empty() || !self.produce(key, value, reason)? {
            // The local queue is full: keep the record, in order, until the
            // brokers take some (the poll loop pauses consumption meanwhile).
            self.overflow.push_back((
                key.map(str::to_owned),
                value.to_owned(),
                reason.map(str::to_owned),
            ));
            self.drain()?;
        }
        self.records += 1;
        Ok(())
    }

    /// Hands one record to the producer; `false` when its queue is full.
    fn produce(
        &self,
        key: Option<&str>,
        value: &str,
        reason: Option<&str>,
    ) -> Result<bool, KafkaError> {
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
        match self.producer.send(record) {
            Ok(()) => Ok(true),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(false),
            Err((e, _)) => Err(KafkaError {
                what: format!("producing to topic {}", self.topic),
                message: e.to_string(),
            }),
        }
    }

    /// Moves kept records to the producer while its queue takes them;
    /// returns whether some are still kept (the output is backlogged).
    pub fn drain(&mut self) -> Result<bool, KafkaError> {
        while let Some((key, value, reason)) = self.overflow.front() {
            if !self.produce(key.as_deref(), value, reason.as_deref())? {
                return Ok(true);
            }
            self.overflow.pop_front();
        }
        Ok(false)
    }

    /// Waits until every queued record is acknowledged; fails if any
    /// delivery failed for good.
    ///
    /// Waits by watching the count of records in flight, which the
    /// producer's polling thread brings down as delivery reports come: the
    /// client's own `flush` polls in steps of 100 ms, so every flush (each
    /// checkpoint or commit, and the end of a run) cost at least that.
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut sent = false;
        loop {
            let backlogged = self.drain()?;
            self.check()?;
            if !backlogged && self.producer.in_flight_count() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let message = if backlogged {
                    format!(
                        "the brokers took no record for {}s",
                        FLUSH_TIMEOUT.as_secs()
                    )
                } else {
                    format!(
                        "records were not acknowledged within {}s",
                        FLUSH_TIMEOUT.as_secs()
                    )
                };
                return Err(KafkaError {
                    what: format!("flushing topic {}", self.topic),
                    message,
                });
            }
            if !backlogged && !sent {
                // Sends what `linger.ms` holds back now rather than at its
                // end. With no wait this returns at once, mostly with
                // "timed out", which says nothing here.
                let _ = self.producer.flush(Duration::ZERO);
                sent = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
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

/// Learns the end offset of every partition of the topic and, for a
/// restore, reads back the records written after `resume`.
fn track(
    producer: &ThreadedProducer<DeliveryWatch>,
    config: &KafkaOutputConfig,
    brokers: &str,
    resume: Option<&TopicPosition>,
) -> Result<Tracking, KafkaError> {
    let topic = config.topic.as_str();
    let error = |what: &str| {
        let what = format!("{what} of topic {topic}");
        move |e: RdKafkaError| KafkaError {
            what,
            message: e.to_string(),
        }
    };
    let client = producer.client();
    let metadata = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(error("reading the metadata"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut tracking = Tracking::default();
    for &p in &partitions {
        let (_, high) = client
            .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
            .map_err(error("reading the end offsets"))?;
        tracking.ends.insert(p, high);
    }
    let Some(resume) = resume else {
        return Ok(tracking);
    };
    for record in &resume.pending {
        *tracking.pending.entry(record.clone()).or_insert(0) += 1;
    }
    // What was written after the checkpoint: from its offsets (from the
    // start of a partition it did not know) up to the ends just read.
    let from: HashMap<i32, i64> = resume.ends.iter().copied().collect();
    let mut tpl = TopicPartitionList::new();
    let mut left = 0usize;
    for &p in &partitions {
        let start = from.get(&p).copied().unwrap_or(0);
        if start < tracking.ends.get(&p).copied().unwrap_or(0) {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))
                .map_err(error("reading back"))?;
            left += 1;
        }
    }
    if left == 0 {
        return Ok(tracking);
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sluice-read-back")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(error("creating a read-back consumer"))?;
    consumer.assign(&tpl).map_err(error("reading back"))?;
    let mut next = from;
    let deadline = Instant::now() + READ_BACK_TIMEOUT;
    let mut read = 0u64;
    while partitions
        .iter()
        .any(|p| next.get(p).copied().unwrap_or(0) < tracking.ends.get(p).copied().unwrap_or(0))
    {
        if Instant::now() >= deadline {
            return Err(KafkaError {
                what: format!("reading back topic {topic}"),
                message: format!(
                    "the records written after the checkpoint did not arrive within {}s",
                    READ_BACK_TIMEOUT.as_secs()
                ),
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(error("reading back"))?;
        next.insert(message.partition(), message.offset() + 1);
        if message.offset()
            >= tracking
                .ends
                .get(&message.partition())
                .copied()
                .unwrap_or(0)
        {
            continue;
        }
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        *tracking.pending.entry((key, value)).or_insert(0) += 1;
        read += 1;
    }
    tracing::info!(
        topic,
        records = read,
        "read back {read} records written to {topic} after the checkpoint: the replay will not \
         produce them again"
    );
    Ok(tracking)
}
