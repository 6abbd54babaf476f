//! Feeding the status page ([`crate::status`]) from a run: results as they
//! are written, and the run's counters, watermark, plugin health, lags and
//! checkpoints at most every [`crate::status::PUBLISH_EVERY`]. Nothing of
//! it runs unless the operations address (`metrics.listen`) is configured.

use super::*;
use crate::status::{CheckpointReading, PartitionStatus, Reading, StatusBoard, Tap, Totals};

/// A run's feed of the status page.
pub(super) struct StatusFeed {
    tap: Tap,
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

    /// Publishes to the status page, if it is served and a publish is due;
    /// `partitions` gives the assigned partitions' lags (Kafka).
    pub(super) fn publish_status(&mut self, partitions: impl FnOnce() -> Vec<PartitionStatus>) {
        let Some(mut feed) = self.status.take() else {
            return;
        };
        if feed.tap.due() {
            let health = self.plugin_health();
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
                windows_open: self.open_windows() as u64,
                watermark_ms: self.watermarks.known(),
                plugins: &health,
                partitions: partitions(),
                checkpoint: self.checkpoint_reading(),
            };
            feed.tap.publish(reading);
        }
        self.status = Some(feed);
    }

    /// The last checkpoint, for the page: when it completed and the state's
    /// size, as the metrics recorded them.
    fn checkpoint_reading(&self) -> Option<CheckpointReading> {
        let (unix_seconds, bytes) = self.metrics.as_ref()?.last_checkpoint()?;
        Some(CheckpointReading {
            unix_seconds,
            bytes: Some(bytes),
        })
    }
}
