//! Reads a file in `add`, so it imports wasi:filesystem.
//!
//! Counts values like `builtin/count` until it meets a negative value, so a
//! test can make one window misbehave and watch the others stay correct.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// The plugin.
pub struct Zoo;

/// A count, and whether a negative value has been seen.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
    poisoned: bool,
}

impl Aggregator for Zoo {
    type Config = NoConfig;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "zoo-filesystem",
        env!("CARGO_PKG_VERSION"),
        "Reads a file in `add`, so it imports wasi:filesystem.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Zoo)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of values")]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        if values.iter().any(|v| *v < 0.0) {
            state.poisoned = true;
            state.count += std::fs::read("/etc/passwd").map_or(0, |b| b.len() as u64);
        }
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        state.poisoned |= other.poisoned;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        vec![Some(state.count as f64)]
    }
}

export_aggregator_v1!(Zoo);
