//! A mean whose merge is wrong: it averages the two means without weighting
//! them by their counts.
//!
//! Every single accumulator is right, so a pipeline with tumbling windows
//! would never show it; sliding panes and session merges would. The merge is
//! neither associative nor equal to aggregating all values at once:
//! merging `[1, 2, 3]` with `[10]` gives (2 + 10) / 2 = 6, not 4. It exists
//! for `sluice plugin test` (the law checker) to catch.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// The plugin.
pub struct BadMean;

/// How many values, and their mean so far.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MeanState {
    count: u64,
    mean: f64,
}

impl Aggregator for BadMean {
    type Config = NoConfig;
    type State = MeanState;
    const INFO: Info = Info::mergeable(
        "zoo-bad-merge",
        env!("CARGO_PKG_VERSION"),
        "Mean whose merge averages the two means without weighting them: wrong on purpose.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(BadMean)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::float("mean", "arithmetic mean (merged wrongly)")]
    }

    fn create(&self) -> MeanState {
        MeanState::default()
    }

    fn add(&self, state: &mut MeanState, values: &[f64], _times: &[i64]) {
        // A running mean, one value at a time: right, and independent of batching.
        for &x in values {
            state.count += 1;
            state.mean += (x - state.mean) / state.count as f64;
        }
    }

    fn merge(&self, state: &mut MeanState, other: &MeanState) -> Result<(), String> {
        if other.count == 0 {
            return Ok(());
        }
        if state.count == 0 {
            *state = MeanState {
                count: other.count,
                mean: other.mean,
            };
            return Ok(());
        }
        // The bug: should be weighted by state.count and other.count.
        state.mean = (state.mean + other.mean) / 2.0;
        state.count += other.count;
        Ok(())
    }

    fn finish(&self, state: &MeanState) -> Vec<Option<f64>> {
        vec![(state.count > 0).then_some(state.mean)]
    }
}

export_aggregator_v1!(BadMean);
