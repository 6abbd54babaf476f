//! `builtin/count` declaring state format 2: a correct plugin whose open
//! windows could not move to it, so the hot-reload test expects it refused.

use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Counts events, with snapshots in "format 2" (the bytes are the same; the
/// declared format is what the host goes by).
pub struct CountFormat2;

impl Aggregator for CountFormat2 {
    type Config = NoConfig;
    type State = u64;
    const INFO: Info = Info {
        state_version: 2,
        ..Info::mergeable("count", "0.3.0", "Number of events (state format 2).")
    };

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(CountFormat2)
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

export_aggregator!(CountFormat2);
