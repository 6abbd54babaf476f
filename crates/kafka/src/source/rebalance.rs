//! Rebalances: librdkafka's callbacks note what was revoked and assigned
//! (and commit the safe offsets before partitions go), and the poll loop
//! acts on the note between batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::commit::{PartitionProgress, parse_metadata};
use super::queue::MessageQueue;
use super::{KafkaSource, REQUEST_TIMEOUT, Reassignment, kafka_error};
use crate::KafkaError;

/// What the rebalance callback saw, for the poll loop to act on.
#[derive(Debug, Default)]
pub(super) struct RebalanceLog {
    pub(super) revoked: bool,
    pub(super) assigned: Vec<(String, i32)>,
}

/// The rebalance log and a flag that says it holds something: the poll
/// loop asks after every poll, and reading a flag costs less than taking
/// the lock.
#[derive(Debug, Default)]
pub(super) struct Rebalances {
    pub(super) log: Mutex<RebalanceLog>,
    pub(super) pending: AtomicBool,
}

impl Rebalances {
    /// Notes a revocation or an assignment.
    pub(super) fn record(&self, change: impl FnOnce(&mut RebalanceLog)) {
        if let Ok(mut log) = self.log.lock() {
            change(&mut log);
            self.pending
                .store(log.revoked || !log.assigned.is_empty(), Ordering::Release);
        }
    }

    /// Whether anything was noted since the last [`Self::take`].
    pub(super) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// What was noted: whether partitions were revoked, and those assigned.
    pub(super) fn take(&self) -> Option<(bool, Vec<(String, i32)>)> {
        let mut log = self.log.lock().ok()?;
        self.pending.store(false, Ordering::Release);
        Some((
            std::mem::take(&mut log.revoked),
            std::mem::take(&mut log.assigned),
        ))
    }
}

/// Commits the latest safe offsets when partitions are taken away, so that
/// the next owner replays as little as possible.
pub(super) struct SourceContext {
    pub(super) rebalances: Arc<Rebalances>,
    /// Where assigned partitions' messages go; `None` once the source is
    /// being dropped (the queue goes before the consumer).
    pub(super) messages: Arc<Mutex<Option<MessageQueue>>>,
    pub(super) safe: Arc<Mutex<Option<TopicPartitionList>>>,
    pub(super) lag: Arc<Mutex<HashMap<(String, i32), PartitionStats>>>,
}

/// What librdkafka's last statistics said of one partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartitionStats {
    /// The partition's end offset as the last fetch saw it (-1: unknown).
    pub(super) high: i64,
    /// The next offset librdkafka fetches (-1: unknown).
    pub(super) next_fetch: i64,
    /// Messages between the group's committed offset and the end (-1: unknown).
    pub(super) committed_lag: i64,
}

impl ClientContext for SourceContext {
    /// librdkafka's periodic statistics (during poll): each partition's end
    /// offset and committed lag, known without a request to the brokers.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(mut lag) = self.lag.lock() else {
            return;
        };
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 {
                    let stats = PartitionStats {
                        high: p.hi_offset,
                        next_fetch: p.next_offset,
                        committed_lag: p.consumer_lag,
                    };
                    lag.insert((topic.clone(), partition), stats);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance
            && let Ok(slot) = self.messages.lock()
            && let Some(queue) = slot.as_ref()
        {
            // Before the assignment starts fetching, so that no message of
            // these partitions goes to the consumer's own queue.
            let rk = consumer.client().native_ptr();
            for e in tpl.elements() {
                queue.forward(rk, e.topic(), e.partition());
            }
        }
        if let Rebalance::Revoke(_) = rebalance {
            if let Some(tpl) = self.safe.lock().ok().and_then(|mut s| s.take()) {
                // Best effort: a failed commit only means a longer replay.
                let _ = consumer.commit(&tpl, CommitMode::Sync);
            }
            self.rebalances.record(|log| log.revoked = true);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.rebalances.record(|log| {
                log.assigned.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            });
        }
    }
}

impl KafkaSource {
    /// Handles what rebalances did since the last call.
    pub fn take_reassignment(&mut self) -> Result<Reassignment, KafkaError> {
        let (revoked, assigned) = self.rebalances.take().ok_or_else(|| KafkaError {
            what: "rebalancing".into(),
            message: "the rebalance log is poisoned".into(),
        })?;
        let mut out = Reassignment {
            revoked,
            ..Reassignment::default()
        };
        if revoked {
            for p in &mut self.progress {
                *p = PartitionProgress::fresh();
            }
            self.owned.clear();
        }
        if assigned.is_empty() {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in &assigned {
            tpl.add_partition(topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, REQUEST_TIMEOUT)
            .map_err(kafka_error("reading committed offsets"))?;
        for elem in committed.elements() {
            let Some(i) = self.index_of(elem.topic(), elem.partition()) else {
                continue;
            };
            // Every partition with a commit starts from it explicitly, so
            // that nothing fetched under an earlier assignment is read on;
            // one whose message a rebalancing poll left starts from the
            // beginning when nothing was committed.
            let left = self
                .rewind
                .iter()
                .position(|(t, p)| t == elem.topic() && *p == elem.partition());
            if let Some(at) = left {
                self.rewind.swap_remove(at);
            }
            let from = match elem.offset() {
                Offset::Offset(o) => Some(Offset::Offset(o)),
                _ => left.map(|_| Offset::Beginning),
            };
            if let Some(from) = from {
                self.consumer
                    .seek(elem.topic(), elem.partition(), from, REQUEST_TIMEOUT)
                    .map_err(kafka_error("rewinding after a rebalance"))?;
            }
            if self.owned.len() <= i {
                self.owned.resize(self.partitions.len().max(i + 1), false);
            }
            self.owned[i] = true;
            let progress = &mut self.progress[i];
            *progress = PartitionProgress::fresh();
            let committed = parse_metadata(elem.metadata());
            tracing::debug!(
                topic = elem.topic(),
                partition = elem.partition(),
                "assigned at committed offset {:?} ({})",
                elem.offset(),
                elem.metadata()
            );
            out.assigned
                .push((i, committed.as_ref().and_then(|c| c.token)));
            if let Some(c) = committed {
                progress.replay_end = c.end;
                out.resumed.push((i, c.watermark));
            }
        }
        // A left message of a partition not assigned to us again needs no rewind.
        self.rewind.clear();
        Ok(out)
    }
}
