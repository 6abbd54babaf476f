//! Which offsets are safe to commit: each partition's processed offsets are
//! held in chunks until no open window needs them, and every commit carries
//! the watermark and position reached as metadata for the next owner.

use std::collections::VecDeque;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::{KafkaSource, kafka_error};
use crate::KafkaError;

/// Events per bookkeeping chunk: offsets are tracked in runs, not one by one.
pub(super) const CHUNK: u32 = 32;

/// A run of consecutive offsets of one partition and the latest event time in it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) max_time: i64,
    pub(super) len: u32,
}

/// The commit state of one partition.
#[derive(Debug, Default)]
pub(super) struct PartitionProgress {
    /// Offsets read but not yet safe to commit, oldest first.
    pub(super) held: VecDeque<Chunk>,
    /// The next offset to read.
    pub(super) next: Option<i64>,
    /// Offsets below this were processed by a previous owner: replays.
    pub(super) replay_end: i64,
    /// When the partition was last seen delivering: set at the idleness
    /// check that follows its messages, not per message (a clock read per
    /// message was a visible share of the poll loop), so it lags by at most
    /// the check interval.
    pub(super) last_message: Option<Instant>,
    /// Whether it delivered a message since the last idleness check.
    pub(super) delivered: bool,
}

impl PartitionProgress {
    /// A partition just assigned: its idle clock starts now, so that it is
    /// not taken for idle before its first fetch could have returned.
    pub(super) fn fresh() -> Self {
        Self {
            last_message: Some(Instant::now()),
            ..Self::default()
        }
    }
}

impl KafkaSource {
    /// Notes that the message at `offset` of partition `i`, with event time
    /// `time` (`i64::MIN` for one that held no state), was processed.
    pub fn processed(&mut self, i: usize, offset: i64, time: i64) {
        let Some(p) = self.progress.get_mut(i) else {
            return;
        };
        p.next = Some(offset + 1);
        match p.held.back_mut() {
            Some(c) if c.len < CHUNK && c.last + 1 == offset => {
                c.last = offset;
                c.max_time = c.max_time.max(time);
                c.len += 1;
            }
            _ => p.held.push_back(Chunk {
                first: offset,
                last: offset,
                max_time: time,
                len: 1,
            }),
        }
    }

    /// The offsets safe to commit, given that no open window starts before
    /// `oldest_open` and the pipeline watermark is `watermark`; they are
    /// remembered for a commit on revocation. `token` names the state
    /// directory whose checkpoint covers them, when the run keeps one.
    ///
    /// Call only after every output has been flushed and acknowledged.
    pub fn plan_commit(
        &mut self,
        oldest_open: Option<i64>,
        watermark: i64,
        token: Option<u64>,
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (i, p) in self.progress.iter_mut().enumerate() {
            while let Some(front) = p.held.front() {
                if oldest_open.is_none_or(|start| front.max_time < start) {
                    p.held.pop_front();
                } else {
                    break;
                }
            }
            let Some(next) = p.next else { continue };
            let commit = p.held.front().map_or(next, |c| c.first);
            // Mid-replay, the previous owner's position still marks the
            // events whose effects are written.
            let end = next.max(p.replay_end);
            let (topic, partition) = &self.partitions[i];
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(commit))
                .is_ok()
                && let Some(mut elem) = tpl.find_partition(topic, *partition)
            {
                elem.set_metadata(match token {
                    Some(token) => format!("w={watermark};end={end};ck={token}"),
                    None => format!("w={watermark};end={end}"),
                });
            }
        }
        if let Ok(mut safe) = self.safe.lock() {
            *safe = Some(tpl.clone());
        }
        tpl
    }

    /// Commits `offsets` synchronously.
    pub fn commit(&self, offsets: &TopicPartitionList) -> Result<(), KafkaError> {
        if offsets.count() == 0 {
            return Ok(());
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            for e in offsets.elements() {
                tracing::debug!(
                    "committing {}/{} at {:?} ({})",
                    e.topic(),
                    e.partition(),
                    e.offset(),
                    e.metadata()
                );
            }
        }
        match self.consumer.commit(offsets, CommitMode::Sync) {
            // The group is rebalancing, or this member's generation just
            // ended: the commit is skipped, not failed. Committed offsets only
            // lag a little more, and the revoke callback or the next commit
            // after the rebalance moves them on.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId,
            )) => {
                tracing::info!("offset commit skipped: the group is rebalancing");
                Ok(())
            }
            other => other.map_err(kafka_error("committing offsets")),
        }
    }
}

/// What a commit's metadata says.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Committed {
    /// The pipeline watermark when it was made.
    pub(super) watermark: i64,
    /// The next offset that had been read.
    pub(super) end: i64,
    /// The checkpoint token of the state directory covering it.
    pub(super) token: Option<u64>,
}

/// Reads `w=<watermark>;end=<offset>[;ck=<token>]` written by
/// [`KafkaSource::plan_commit`].
pub(super) fn parse_metadata(metadata: &str) -> Option<Committed> {
    let mut watermark = None;
    let mut end = None;
    let mut token = None;
    for part in metadata.split(';') {
        match part.split_once('=') {
            Some(("w", v)) => watermark = v.parse().ok(),
            Some(("end", v)) => end = v.parse().ok(),
            Some(("ck", v)) => token = v.parse().ok(),
            _ => {}
        }
    }
    Some(Committed {
        watermark: watermark?,
        end: end?,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::{Committed, parse_metadata};

    #[test]
    fn commit_metadata_round_trips() {
        assert_eq!(
            parse_metadata("w=1700000000000;end=42"),
            Some(Committed {
                watermark: 1_700_000_000_000,
                end: 42,
                token: None
            })
        );
        assert_eq!(
            parse_metadata("w=-9223372036854775808;end=0;ck=77"),
            Some(Committed {
                watermark: i64::MIN,
                end: 0,
                token: Some(77)
            })
        );
        assert_eq!(parse_metadata(""), None);
        assert_eq!(parse_metadata("end=5"), None);
    }
}
