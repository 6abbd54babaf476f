//! `builtin/count`: the number of events in a window.

use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Counts events.
pub struct Count;

impl Aggregator for Count {
    type Config = NoConfig;
    type State = u64;
    const INFO: Info = Info::mergeable(
        "count",
        env!("CARGO_PKG_VERSION"),
        "Number of events in the window that carried the aggregation's field.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Count)
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
        *n += other;
        Ok(())
    }

    fn finish(&self, n: &u64) -> Vec<Option<f64>> {
        vec![Some(*n as f64)]
    }
}

export_aggregator!(Count);
