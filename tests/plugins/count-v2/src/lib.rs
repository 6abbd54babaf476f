//! A second version of `builtin/count` for the hot-reload test: the same
//! plugin name and state (a `u64`, state format 1), so open windows move to
//! it, plus an output `generation` that is always 2, so a result shows which
//! version finished its window.

use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// Counts events, and says it is the second version.
pub struct CountV2;

impl Aggregator for CountV2 {
    type Config = NoConfig;
    type State = u64;
    const INFO: Info = Info::mergeable(
        "count",
        "0.2.0",
        "Number of events in the window; `generation` is 2 (hot-reload test).",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(CountV2)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::integer("count", "number of events"),
            Output::integer("generation", "always 2: this is the second version"),
        ]
    }

    fn create(&self) -> u64 {
        0
    }

    fn add(&self, n: &mut u64, values: &[f64], _times: &[i64]) {
        *n += values.len() as u64;
    }

    fn merge(&self, n: &mut u64, other: &u64) -> Result<(), String> {
        *n += other;
        Ok(())
    }

    fn finish(&self, n: &u64) -> Vec<Option<f64>> {
        vec![Some(*n as f64), Some(2.0)]
    }
}

export_aggregator_v1!(CountV2);
