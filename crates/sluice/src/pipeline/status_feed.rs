//! Feeding the status page ([`crate::status`]) from a run: results as they
//! are written, and the run's counters, watermark, plugin health, lags and
//! checkpoints at most every [`crate::status::PUBLISH_EVERY`]. Nothing of
//! it runs unless the operations address (`metrics.listen`) is configured.

use super::*;
use crate::status::{CheckpointReading, PartitionStatus, Reading, StatusBoard, Tap, Totals};

/// A run's feed of the status page.
pub(super) struct StatusFeed {
    tap: Tap,
    /// The checkpoint id the run would write next, when last looked at.
    checkpoint_id: Option<u64>,
    /// The last checkpoint this run took, as the page shows it.
    last_checkpoint: Option<CheckpointReading>,
}

impl StatusFeed {
    /// Takes note of a result written for `key` (its JSON text);
    /// `aggregations` names the aggregations, for the result's errors.
    pub(super) fn result(
        &mut self,
        key: &str,
        result: &WindowResult,
        filled: bool,
        aggregations: &[String],
    ) {
        self.tap.result(key, result, filled, aggregations);
    }

    /// A reload changed an aggregation's outputs: the results' columns are
    /// now `columns`.
    pub(super) fn set_columns(&mut self, columns: Vec<String>) {
        self.tap.set_columns(columns);
    }
}

impl Flow {
    /// Starts feeding `board` with this run's results and counters.
    pub(super) fn attach_status(&mut self, board: Arc<StatusBoard>) {
        let columns = self.output_columns();
        self.status = Some(StatusFeed {
            tap: Tap::new(board, columns),
            checkpoint_id: self.checkpoints.as_ref().map(|c| c.next_id),
            last_checkpoint: None,
        });
    }

    /// The results' output names (`agg.output`), in the order results carry them.
    pub(super) fn output_columns(&self) -> Vec<String> {
        self.agg_names
            .iter()
            .enumerate()
            .flat_map(|(a, name)| {
                self.operator
                    .plugin_outputs(a)
                    .iter()
                    .map(move |o| format!("{name}.{}", o.name))
            })
            .collect()
    }

    /// Publishes to the status page, if it is served and a publish is due
    /// (or `now`, for what comes only now and then: consumer lags);
    /// `partitions` gives the assigned partitions' lags (Kafka).
    pub(super) fn publish_status(
        &mut self,
        now: bool,
        partitions: impl FnOnce(&Flow) -> Vec<PartitionStatus>,
    ) {
        let Some(mut feed) = self.status.take() else {
            return;
        };
        if feed.tap.due() || now {
            let health = self.operator.plugin_health();
            let watermark = self.watermarks.current();
            let s = &self.summary;
            let reading = Reading {
                totals: Totals {
                    events_in: s.events_read,
                    results_out: s.windows_emitted,
                    late: s.late,
                    dead_lettered: s.dead_lettered,
                    duplicates: s.duplicates,
                    filled: s.filled,
                    replayed_skipped: s.replayed_skipped,
                },
                windows_open: self.operator.open_windows() as u64,
                watermark_ms: (watermark != sluice_core::watermark::MIN_WATERMARK
                    && watermark != sluice_core::watermark::END_OF_INPUT)
                    .then_some(watermark),
                plugins: &health,
                partitions: partitions(self),
                checkpoint: self.checkpoint_reading(&mut feed),
            };
            feed.tap.publish(reading);
        }
        self.status = Some(feed);
    }

    /// The last checkpoint, for the page.
    ///
    /// The page's one accessor of checkpoint facts: the time is that of the
    /// first publish after the checkpoint counter moved, and the size is
    /// not known here. Once the metrics carry
    /// `sluice_last_checkpoint_timestamp_seconds` and `sluice_state_bytes`,
    /// both are read from there instead.
    fn checkpoint_reading(&self, feed: &mut StatusFeed) -> Option<CheckpointReading> {
        let next = self.checkpoints.as_ref().map(|c| c.next_id);
        if next != feed.checkpoint_id {
            feed.checkpoint_id = next;
            feed.last_checkpoint = Some(CheckpointReading {
                unix_seconds: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                bytes: None,
            });
        }
        feed.last_checkpoint
    }
}

/// The lags of the partitions that have had events, for the page (consumer
/// lag too when `with_lag`; the page keeps the last known one otherwise).
pub(super) fn kafka_partitions(
    flow: &Flow,
    source: &sluice_kafka::KafkaSource,
    with_lag: bool,
) -> Vec<PartitionStatus> {
    let now = now_ms();
    (0..source.partition_count())
        .filter_map(|i| {
            let (topic, partition) = source.partition_name(i)?;
            let seen = flow.watermarks.max_seen(i);
            if seen == sluice_core::watermark::MIN_WATERMARK {
                return None;
            }
            let watermark = seen.saturating_sub(flow.watermark_delay);
            let lag_ms = now.saturating_sub(watermark).max(0);
            Some(PartitionStatus {
                topic: topic.to_string(),
                partition,
                watermark_lag: Some(Duration::from_millis(lag_ms as u64)),
                consumer_lag: with_lag.then(|| source.consumer_lag(i)).flatten(),
            })
        })
        .collect()
}
