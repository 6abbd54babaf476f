//! `builtin/count` with a wrong merge (it keeps the larger count instead of
//! adding): same name and state format, so only the law checker stands
//! between it and a running pipeline in the hot-reload test.

use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// Counts events, but merges wrongly.
pub struct CountBadMerge;

impl Aggregator for CountBadMerge {
    type Config = NoConfig;
    type State = u64;
    const INFO: Info = Info::mergeable("count", "0.4.0", "Number of events (merge is wrong).");

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(CountBadMerge)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of events")]
    }

    fn create(&self) -> u64 {
        0
    }

    fn add(&self, n: &mut u64, values: &[f64], _times: &[i64]) {
        *n += values.len() as u64;
    }

    fn merge(&self, n: &mut u64, other: &u64) -> Result<(), String> {
        *n = (*n).max(*other);
        Ok(())
    }

    fn finish(&self, n: &u64) -> Vec<Option<f64>> {
        vec![Some(*n as f64)]
    }
}

export_aggregator_v1!(CountBadMerge);
