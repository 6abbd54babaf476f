//! A Kafka source: a consumer group over one or more topics, with the
//! bookkeeping that lets offsets be committed only for events whose effects
//! are safely written.
//!
//! Recovery is by replay, not by moving state: committed offsets lag to the
//! oldest event still inside an open window, so whoever owns a partition next
//! (this process after a restart, or another member after a rebalance)
//! rebuilds those windows by reading again from the committed offset. Each
//! commit carries, as offset metadata, the watermark and the position reached
//! when it was made; a new owner seeds its watermark from it and skips replayed
//! events whose windows were already emitted, so nothing is counted twice.

mod commit;
mod queue;
mod rebalance;

use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use commit::PartitionProgress;
use queue::MessageQueue;
use rebalance::{Rebalances, SourceContext};

use sluice_config::KafkaSourceConfig;

use crate::KafkaError;

/// How long a metadata or offset request may take before the run gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One message, borrowed from the consumer until the next poll.
pub struct KafkaRecord<'a> {
    /// Index of its partition among all partitions of the source's topics.
    pub partition: usize,
    /// Offset within the partition.
    pub offset: i64,
    /// The message value (empty for a null value).
    pub payload: &'a [u8],
    /// The message timestamp, epoch milliseconds, if it has one.
    pub timestamp: Option<i64>,
    /// Whether a previous owner already processed this message.
    pub replayed: bool,
}

/// What the poll loop must do after a rebalance.
#[derive(Debug, Default)]
pub struct Reassignment {
    /// Partitions were taken away: drop all window state without emitting.
    pub revoked: bool,
    /// Newly assigned partitions with the watermark their previous owner
    /// committed, to seed the watermark with.
    pub resumed: Vec<(usize, i64)>,
    /// Every newly assigned partition, with the checkpoint token of its
    /// last commit (`None`: no commit, or one without a token).
    pub assigned: Vec<(usize, Option<u64>)>,
}

/// A consumer group member over the configured topics.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    /// Fetched messages (see [`MessageQueue`]), shared with the rebalance
    /// callbacks, and the buffer a batch of them is read into.
    messages: Arc<Mutex<Option<MessageQueue>>>,
    queue: Option<MessageQueue>,
    batch: Vec<*mut rdsys::rd_kafka_message_t>,
    partitions: Vec<(String, i32)>,
    /// Per topic: its name, the index of its partition 0, its partition count.
    topics: Vec<(String, usize, usize)>,
    progress: Vec<PartitionProgress>,
    /// End offsets to stop at, for a bounded source.
    stop_at: Option<Vec<i64>>,
    rebalances: Arc<Rebalances>,
    safe: Arc<Mutex<Option<TopicPartitionList>>>,
    lag: Arc<Mutex<HashMap<(String, i32), rebalance::PartitionStats>>>,
    idle_timeout: Duration,
    /// Partitions whose message was left in a rebalancing poll.
    rewind: Vec<(String, i32)>,
    /// Which partitions this member owns now. The others are another
    /// member's: they never hold this member's watermark back.
    owned: Vec<bool>,
    /// Since when consumption is paused because an output is backlogged.
    paused: Option<Instant>,
    /// How often it was paused, and for how long in all.
    pauses: u64,
    paused_for: Duration,
    /// Messages left because their partition was no longer ours.
    stale: u64,
}

fn kafka_error(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
    let what = what.into();
    move |e| KafkaError {
        what,
        message: e.to_string(),
    }
}

impl KafkaSource {
    /// Joins the consumer group at `brokers` and learns the topics' partitions.
    pub fn open(config: &KafkaSourceConfig, brokers: &str) -> Result<Self, KafkaError> {
        let rebalances = Arc::new(Rebalances::default());
        let messages = Arc::new(Mutex::new(None));
        let safe = Arc::new(Mutex::new(None));
        let lag = Arc::new(Mutex::new(HashMap::new()));
        let context = SourceContext {
            rebalances: Arc::clone(&rebalances),
            messages: Arc::clone(&messages),
            safe: Arc::clone(&safe),
            lag: Arc::clone(&lag),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("group.id", &config.group)
            // Offsets are committed by hand, only for events whose effects are written.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Statistics (consumer lag) every second, delivered during poll.
            .set("statistics.interval.ms", "1000")
            // librdkafka postpones a partition's next fetch by this much once
            // its local queue passes a threshold (default 1 s). A consumer
            // that processes slower than the broker delivers, as this one
            // does, then stalls for up to a second at a time with an empty
            // queue: the Kafka bench lost 0.8 s of 1.3 s that way.
            .set("fetch.queue.backoff.ms", "20");
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(context)
            .map_err(kafka_error("creating the consumer"))?;

        let mut partitions = Vec::new();
        let mut topic_index = Vec::new();
        for topic in &config.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(kafka_error(format!(
                    "reading the metadata of topic {topic}"
                )))?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if count == 0 {
                return Err(KafkaError {
                    what: format!("subscribing to topic {topic}"),
                    message: "the topic does not exist or has no partitions".into(),
                });
            }
            topic_index.push((topic.clone(), partitions.len(), count));
            partitions.extend((0..count as i32).map(|p| (topic.clone(), p)));
        }
        let stop_at = if config.stop_at_end {
            let mut ends = Vec::with_capacity(partitions.len());
            for (topic, p) in &partitions {
                let (_, high) = consumer
                    .fetch_watermarks(topic, *p, REQUEST_TIMEOUT)
                    .map_err(kafka_error(format!(
                        "reading the end offset of {topic}/{p}"
                    )))?;
                ends.push(high);
            }
            Some(ends)
        } else {
            None
        };
        // Before subscribing: the first assignment forwards to it.
        let queue = MessageQueue::new(consumer.client().native_ptr());
        if let Ok(mut slot) = messages.lock() {
            *slot = queue;
        }
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(kafka_error("subscribing"))?;
        let progress = partitions
            .iter()
            .map(|_| PartitionProgress::fresh())
            .collect();
        Ok(Self {
            consumer,
            messages,
            queue,
            batch: Vec::new(),
            partitions,
            topics: topic_index,
            progress,
            stop_at,
            rebalances,
            safe,
            lag,
            idle_timeout: config.idle_timeout,
            rewind: Vec::new(),
            owned: Vec::new(),
            paused: None,
            pauses: 0,
            paused_for: Duration::ZERO,
            stale: 0,
        })
    }

    /// Topic and partition number of partition index `i`.
    pub fn partition_name(&self, i: usize) -> Option<(&str, i32)> {
        self.partitions.get(i).map(|(t, p)| (t.as_str(), *p))
    }

    /// Messages of partition `i` not yet processed: its end offset, as
    /// librdkafka's last statistics (at most a second old) report it, minus
    /// the next offset this member processes; 0 once everything is
    /// processed. Before its first message, the end minus the next offset
    /// to fetch (an empty partition has 0 from its first fetch on), or the
    /// group's committed lag. `None` while none of these is known.
    pub fn consumer_lag(&self, i: usize) -> Option<i64> {
        let key = self.partitions.get(i)?;
        let stats = *self.lag.lock().ok()?.get(key)?;
        let next = self.progress.get(i).and_then(|p| p.next);
        match next.or((stats.next_fetch >= 0).then_some(stats.next_fetch)) {
            Some(next) if stats.high >= 0 => Some((stats.high - next).max(0)),
            _ => (stats.committed_lag >= 0).then_some(stats.committed_lag),
        }
    }

    /// Whether partition `i` is assigned to this member now.
    pub fn is_assigned(&self, i: usize) -> bool {
        self.owned.get(i).copied().unwrap_or(false)
    }

    /// How many partitions the source's topics have (the watermark tracks each).
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Sets the end offsets of a bounded source after the fact (the embedded
    /// broker's feed knows them only when it has written its input).
    pub fn stop_at_current_end(&mut self) -> Result<(), KafkaError> {
        let mut ends = Vec::with_capacity(self.partitions.len());
        for (topic, p) in &self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, *p, REQUEST_TIMEOUT)
                .map_err(kafka_error(format!(
                    "reading the end offset of {topic}/{p}"
                )))?;
            ends.push(high);
        }
        self.stop_at = Some(ends);
        Ok(())
    }

    /// Whether a bounded source has read everything up to its end offsets.
    pub fn at_end(&self) -> bool {
        self.stop_at.as_ref().is_some_and(|ends| {
            ends.iter()
                .zip(&self.progress)
                .all(|(&end, p)| end <= 0 || p.next.is_some_and(|n| n >= end))
        })
    }

    /// Whether partition `i` has nothing more to give a bounded source.
    pub fn partition_done(&self, i: usize) -> bool {
        match (&self.stop_at, self.progress.get(i)) {
            (Some(ends), Some(p)) => {
                let end = ends[i];
                end <= 0 || p.next.is_some_and(|n| n >= end)
            }
            _ => false,
        }
    }

    /// Whether a rebalance happened since the last [`Self::take_reassignment`].
    pub fn rebalanced(&self) -> bool {
        self.rebalances.pending()
    }

    /// Stops fetching from every assigned partition (an output is
    /// backlogged) while polls go on serving the group. Called again after
    /// a rebalance, it pauses the newly assigned partitions too.
    pub fn pause(&mut self) -> Result<(), KafkaError> {
        self.consumer
            .pause(&self.assignment()?)
            .map_err(kafka_error("pausing partitions"))?;
        if self.paused.is_none() {
            self.paused = Some(Instant::now());
            self.pauses += 1;
        }
        Ok(())
    }

    /// Fetches again after [`KafkaSource::pause`]; the pause does not count
    /// towards any partition's idleness.
    pub fn resume(&mut self) -> Result<(), KafkaError> {
        let Some(since) = self.paused.take() else {
            return Ok(());
        };
        self.paused_for += since.elapsed();
        self.consumer
            .resume(&self.assignment()?)
            .map_err(kafka_error("resuming partitions"))?;
        let now = Instant::now();
        for p in &mut self.progress {
            p.last_message = Some(now);
        }
        Ok(())
    }

    fn assignment(&self) -> Result<TopicPartitionList, KafkaError> {
        self.consumer
            .assignment()
            .map_err(kafka_error("reading the assignment"))
    }

    /// Whether consumption is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// How many times consumption was paused for backpressure, and for how
    /// long in all.
    pub fn pauses(&self) -> (u64, Duration) {
        (self.pauses, self.paused_for)
    }

    /// How many messages arrived for a partition no longer ours and were
    /// left to its owner.
    pub fn stale(&self) -> u64 {
        self.stale
    }

    /// Where a checkpoint resumes: `(topic, partition, next offset)` of each
    /// owned partition that has a position.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.progress
            .iter()
            .enumerate()
            .filter(|(i, _)| self.owned.get(*i).copied().unwrap_or(false))
            .filter_map(|(i, p)| {
                let (topic, partition) = &self.partitions[i];
                Some((topic.clone(), *partition, p.next?))
            })
            .collect()
    }

    /// The index of `topic`/`partition` among the source's partitions.
    pub fn index_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.index_in(self.topic_named(topic)?, partition)
    }

    /// Index of partition `partition` of the `t`-th configured topic.
    fn index_in(&self, t: usize, partition: i32) -> Option<usize> {
        let (_, base, count) = self.topics.get(t)?;
        let p = usize::try_from(partition).ok().filter(|p| p < count)?;
        Some(base + p)
    }

    /// Continues partition `i` at `offset`, a checkpoint's position: the
    /// checkpoint's state already holds everything before it, so nothing
    /// after it is a replay.
    pub fn resume_at(&mut self, i: usize, offset: i64) -> Result<(), KafkaError> {
        let (topic, partition) = &self.partitions[i];
        self.consumer
            .seek(topic, *partition, Offset::Offset(offset), REQUEST_TIMEOUT)
            .map_err(kafka_error(format!(
                "resuming {topic}/{partition} at the checkpoint's offset {offset}"
            )))?;
        let progress = &mut self.progress[i];
        progress.next = Some(offset);
        progress.replay_end = 0;
        Ok(())
    }

    /// Serves the consumer group (rebalances, commit results, statistics)
    /// and hands up to `max` fetched messages to `f`, waiting up to
    /// `timeout` for the first. Returns how many messages it took from the
    /// consumer, counting those it does not hand on: messages at or past a
    /// bounded source's end offsets, and those of partitions no longer ours.
    ///
    /// After a rebalance it takes nothing more until
    /// [`Self::take_reassignment`] has run.
    pub fn poll(
        &mut self,
        timeout: Duration,
        max: usize,
        mut f: impl FnMut(KafkaRecord<'_>),
    ) -> Result<usize, KafkaError> {
        // With partitions assigned, the wait is for their messages; without,
        // for the group's next assignment.
        let assigned = self.owned.contains(&true);
        let wait = if assigned { Duration::ZERO } else { timeout };
        let mut taken = 0;
        if let Some(result) = self.consumer.poll(wait) {
            // A message on the consumer's own queue: its partition's
            // messages are not forwarded to the message queue (none should
            // be, see `MessageQueue::forward`), so it is taken from here.
            let message = result.map_err(kafka_error("consuming"))?;
            taken += 1;
            if self.rebalanced() {
                // The poll that ran the rebalance callbacks also returned a
                // message, perhaps fetched before the rebalance from further
                // on. Leave it: its partition is rewound to its committed
                // offset once the old windows are dropped (see
                // `take_reassignment`).
                self.rewind
                    .push((message.topic().to_string(), message.partition()));
                return Ok(taken);
            }
            // Copied out of the message, which borrows the consumer: this
            // path is not the one messages normally take.
            let topic = self.topic_of(|| Some(message.topic()));
            let (partition, offset) = (message.partition(), message.offset());
            let payload = message.payload().unwrap_or_default().to_vec();
            let timestamp = message.timestamp().to_millis();
            drop(message);
            if let Some((i, replayed)) = topic.and_then(|t| self.accept(t, partition, offset)) {
                f(KafkaRecord {
                    partition: i,
                    offset,
                    payload: &payload,
                    timestamp,
                    replayed,
                });
            }
        }
        let Some(queue) = self.queue else {
            return Ok(taken);
        };
        if self.rebalanced() || !assigned || taken >= max {
            return Ok(taken);
        }
        // librdkafka's batch read waits for all `max` messages or the
        // timeout. So the wait, if any, is for the first message alone
        // (else a slow stream's events would sit out the timeout), and
        // the rest is whatever is there already.
        if taken == 0 && !timeout.is_zero() {
            taken = self.take_batch(queue, timeout, 1, &mut f)?;
            if taken == 0 {
                return Ok(0);
            }
        }
        if taken < max {
            taken += self.take_batch(queue, Duration::ZERO, max - taken, &mut f)?;
        }
        Ok(taken)
    }

    /// Takes up to `max` messages from the message queue, waiting up to
    /// `wait` for all of them, and hands those to be handed on to `f`.
    fn take_batch(
        &mut self,
        queue: MessageQueue,
        wait: Duration,
        max: usize,
        f: &mut impl FnMut(KafkaRecord<'_>),
    ) -> Result<usize, KafkaError> {
        let wait = c_int::try_from(wait.as_millis()).unwrap_or(c_int::MAX);
        let mut batch = std::mem::take(&mut self.batch);
        batch.resize(max, std::ptr::null_mut());
        // SAFETY: the queue is live until this source is dropped, and
        // `batch` has room for the `max` messages asked for.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(queue.0.as_ptr(), wait, batch.as_mut_ptr(), max)
        };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        let mut failed = None;
        for &m in &batch[..n] {
            // SAFETY: librdkafka handed over `n` valid messages, each
            // destroyed only after this loop.
            let message = unsafe { &*m };
            if message.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let code = rdkafka::types::RDKafkaErrorCode::from(message.err);
                failed = Some(kafka_error("consuming")(
                    rdkafka::error::KafkaError::MessageConsumption(code),
                ));
                break;
            }
            let accepted = self
                .topic_of(|| {
                    // SAFETY: a message's topic handle and its name live as
                    // long as the message.
                    unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(message.rkt)) }
                        .to_str()
                        .ok()
                })
                .and_then(|t| self.accept(t, message.partition, message.offset));
            let Some((i, replayed)) = accepted else {
                continue;
            };
            let payload = if message.payload.is_null() {
                &[][..]
            } else {
                // SAFETY: librdkafka's payload pointer and length, valid
                // while the message is.
                unsafe { std::slice::from_raw_parts(message.payload.cast::<u8>(), message.len) }
            };
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a valid message, as above.
            let stamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
            let timestamp = (stamp != -1
                && kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
                .then_some(stamp);
            f(KafkaRecord {
                partition: i,
                offset: message.offset,
                payload,
                timestamp,
                replayed,
            });
        }
        for &m in &batch[..n] {
            // SAFETY: each message librdkafka handed over, destroyed once.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        self.batch = batch;
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Which configured topic a message is from; `name` reads its name,
    /// which with a single topic is not needed (a C string checked as UTF-8
    /// for each message).
    fn topic_of<'m>(&self, name: impl FnOnce() -> Option<&'m str>) -> Option<usize> {
        if self.topics.len() == 1 {
            return Some(0);
        }
        self.topic_named(name()?)
    }

    /// Which configured topic is called `name`.
    fn topic_named(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|(t, _, _)| t == name)
    }

    /// Whether a fetched message of the `t`-th topic's `partition` at
    /// `offset` is handed on, and if so its partition index and whether it
    /// is a replay.
    fn accept(&mut self, t: usize, partition: i32, offset: i64) -> Option<(usize, bool)> {
        // A partition added after start is not tracked by this run.
        let i = self.index_in(t, partition)?;
        if !self.owned.get(i).copied().unwrap_or(false) {
            // Fetched under an assignment that has since been revoked: its
            // window state is gone, and whoever owns the partition now reads
            // it again from the committed offset. Taking it would move this
            // partition's watermark past the events that replay will bring.
            self.stale += 1;
            return None;
        }
        if let Some(ends) = &self.stop_at
            && offset >= ends[i]
        {
            self.progress[i].next = Some(offset);
            return None;
        }
        let progress = &mut self.progress[i];
        progress.delivered = true;
        Some((i, offset < progress.replay_end))
    }

    /// Partitions that have delivered nothing for the idle timeout (or that
    /// another member owns), and those that are active: `(index, idle)` for
    /// every partition of the source.
    pub fn idleness(&mut self, now: Instant) -> Vec<(usize, bool)> {
        for p in &mut self.progress {
            if std::mem::take(&mut p.delivered) {
                p.last_message = Some(now);
            }
        }
        (0..self.progress.len())
            .map(|i| {
                // A paused partition is not idle: it has messages we do not take.
                let quiet = self.paused.is_none()
                    && self.progress[i]
                        .last_message
                        .is_none_or(|t| now.duration_since(t) >= self.idle_timeout);
                let foreign = !self.owned.get(i).copied().unwrap_or(false);
                (i, quiet || foreign || self.partition_done(i))
            })
            .collect()
    }

    /// Leaves the group cleanly (avoids a hang seen in librdkafka when a
    /// consumer is dropped right after a manual commit).
    ///
    /// Polls until the revocation the unsubscribe brings has been served,
    /// then until the consumer has closed, each for at most 100 ms: the
    /// client's own drop polls in steps of 100 ms and so always took that.
    pub fn close(self) {
        let _ = self.rebalances.take();
        self.consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(10));
            if self.rebalances.pending() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(100);
        if self.consumer.close_queue().is_ok() {
            while !self.consumer.closed() && Instant::now() < deadline {
                let _ = self.consumer.poll(Duration::from_millis(1));
            }
        }
    }
}

impl Drop for KafkaSource {
    /// Destroys the message queue before the consumer (a field, dropped
    /// after this), which must outlive it.
    fn drop(&mut self) {
        if let Ok(mut slot) = self.messages.lock() {
            *slot = None;
        }
        if let Some(queue) = self.queue.take() {
            // SAFETY: the handle's last use: the rebalance callbacks no
            // longer see it, and the consumer is still alive.
            unsafe { rdsys::rd_kafka_queue_destroy(queue.0.as_ptr()) };
        }
    }
}
