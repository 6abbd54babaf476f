//! Kafka messages decoded on a helper thread while the poll loop fetches the
//! next ones.
//!
//! The poll loop is one thread by design (one watermark, one order of
//! events), and decoding the JSON values was a third of its time (see
//! docs/performance.md, Kafka). So the loop copies each polled value into a batch;
//! a full batch, or whatever is pending when the consumer has nothing more
//! at once, goes to a decoder thread and comes back, in order, to be run
//! through the pipeline while the loop polls the next. At most [`OUT`]
//! batches are out at a time.
//!
//! Whatever must see every polled message applied first (a rebalance, an
//! idleness check, a commit or checkpoint, shutdown, the end of a bounded
//! source) drains: it hands over the partial batch and applies everything
//! that is out. Decoding one message does not depend on any other, so the
//! results, watermarks and commits are those of decoding on the loop's own
//! thread.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sluice_core::decode::{Event, EventDecoder};
use sluice_core::source::Origin;
use sluice_core::source::read_ahead::DecodedBatch;
use sluice_kafka::{KafkaRecord, KafkaSource};

use super::Flow;
use crate::error::{Error, IoError};

/// Messages per batch: enough that the hand-over (a channel send and
/// receive) costs little per message, few enough that a batch decodes in
/// well under a millisecond.
const BATCH: usize = 256;

/// Batches out with the decoder at a time. With the decoder, the loop
/// and librdkafka's fetch thread sharing two cores, the decoder is often
/// descheduled for a while, and the loop stops and waits for it once this
/// many are out. Two were too few; since messages are read in batches the
/// loop fills them faster, and sixteen (4096 messages, under a MiB) gave
/// the Kafka bench 1.24x where eight gave 1.33-1.36x.
const OUT: usize = 16;

/// Where a polled message came from, kept beside its value.
#[derive(Debug, Clone, Copy)]
struct Message {
    /// Index of its partition in the source (which names its topic and
    /// partition number).
    partition: usize,
    offset: i64,
    timestamp: Option<i64>,
    replayed: bool,
}

/// Polled messages on their way through a decoder thread (see the module doc).
pub(super) struct DecodeAhead {
    /// The batch polls add to, and its messages.
    filling: DecodedBatch,
    filling_messages: Vec<Message>,
    /// The messages of the batches out, oldest first.
    out: VecDeque<Vec<Message>>,
    /// Applied batches and message lists, emptied for reuse: the loop and
    /// the decoder then fill them without allocating, and no buffer is
    /// freed on another thread than the one that grew it (glibc's malloc
    /// locks the other thread's arena for that).
    spare: Vec<DecodedBatch>,
    spare_messages: Vec<Vec<Message>>,
    to_decoder: Option<SyncSender<DecodedBatch>>,
    decoded: Receiver<DecodedBatch>,
    thread: Option<JoinHandle<()>>,
}

impl DecodeAhead {
    /// Starts a decoder thread with a copy of `decoder`.
    pub fn start(decoder: &EventDecoder) -> Result<Self, Error> {
        let (to_decoder, batches) = sync_channel::<DecodedBatch>(OUT);
        let (to_loop, decoded) = sync_channel(OUT);
        let mut decoder = decoder.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-decode".into())
            .spawn(move || {
                let mut event = Event::default();
                for mut batch in batches {
                    batch.decode(&mut decoder, &mut event);
                    if to_loop.send(batch).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| stopped(&format!("cannot start the decoder thread: {e}")))?;
        Ok(Self {
            filling: DecodedBatch::default(),
            filling_messages: Vec::with_capacity(BATCH),
            out: VecDeque::with_capacity(OUT),
            spare: Vec::with_capacity(OUT),
            spare_messages: Vec::with_capacity(OUT),
            to_decoder: Some(to_decoder),
            decoded,
            thread: Some(thread),
        })
    }

    /// Adds a polled message.
    pub fn push(&mut self, record: &KafkaRecord<'_>) {
        self.filling
            .push_message(0, record.payload, record.timestamp);
        self.filling_messages.push(Message {
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            replayed: record.replayed,
        });
    }

    /// How many more messages the filling batch takes before it is full
    /// (time to [`Self::send`] it).
    pub fn room(&self) -> usize {
        BATCH.saturating_sub(self.filling.len())
    }

    /// Whether any polled message is not through the pipeline yet.
    pub fn pending(&self) -> bool {
        !self.filling_messages.is_empty() || !self.out.is_empty()
    }

    /// Hands the filling batch to the decoder, first applying the oldest
    /// batch out if [`OUT`] are.
    pub fn send(&mut self, flow: &mut Flow, source: &mut KafkaSource) -> Result<(), Error> {
        if self.filling_messages.is_empty() {
            return Ok(());
        }
        if self.out.len() >= OUT {
            self.apply_oldest(flow, source)?;
        }
        let batch = std::mem::replace(&mut self.filling, self.spare.pop().unwrap_or_default());
        let next = self
            .spare_messages
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH));
        let messages = std::mem::replace(&mut self.filling_messages, next);
        let sent = self
            .to_decoder
            .as_ref()
            .is_some_and(|to| to.send(batch).is_ok());
        if !sent {
            return Err(stopped("the decoder thread has stopped"));
        }
        self.out.push_back(messages);
        Ok(())
    }

    /// The consumer had nothing at once: hands over the partial batch and
    /// applies the oldest batch out (waiting for it), leaving the newer one
    /// to decode while the loop polls again.
    pub fn step(&mut self, flow: &mut Flow, source: &mut KafkaSource) -> Result<(), Error> {
        self.send(flow, source)?;
        self.apply_oldest(flow, source)
    }

    /// Runs every polled message through the pipeline.
    pub fn drain(&mut self, flow: &mut Flow, source: &mut KafkaSource) -> Result<(), Error> {
        self.send(flow, source)?;
        while !self.out.is_empty() {
            self.apply_oldest(flow, source)?;
        }
        Ok(())
    }

    /// Takes the oldest batch back from the decoder and runs it through
    /// the pipeline, noting each message as processed.
    fn apply_oldest(&mut self, flow: &mut Flow, source: &mut KafkaSource) -> Result<(), Error> {
        let Some(mut messages) = self.out.pop_front() else {
            return Ok(());
        };
        let mut batch = self
            .decoded
            .recv()
            .map_err(|_| stopped("the decoder thread has stopped"))?;
        for (i, ((_, raw), m)) in batch.lines().zip(&messages).enumerate() {
            let decoded = batch.load(i, &mut flow.event);
            let (topic, partition) = source.partition_name(m.partition).unwrap_or(("?", -1));
            let origin = Origin::Kafka {
                topic,
                partition,
                offset: m.offset,
            };
            let time =
                flow.on_decoded(origin, m.partition, raw, m.timestamp, m.replayed, decoded)?;
            source.processed(m.partition, m.offset, time);
        }
        batch.clear();
        self.spare.push(batch);
        messages.clear();
        self.spare_messages.push(messages);
        Ok(())
    }
}

impl Drop for DecodeAhead {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has handed
        // back what it holds; taking those unblocks its last sends.
        self.to_decoder = None;
        while self.decoded.recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped(message: &str) -> Error {
    IoError {
        action: "decoding",
        path: "Kafka messages".into(),
        source: std::io::Error::other(message.to_string()),
    }
    .into()
}
