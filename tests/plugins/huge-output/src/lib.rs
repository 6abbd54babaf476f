//! Returns a huge list from `finish` once it has seen a negative value.
//!
//! Counts values like `builtin/count` until it meets a negative value, so a
//! test can make one window misbehave and watch the others stay correct.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator_v1};

/// `{"entries": N}`: how many values a poisoned `finish` returns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "ten_million")]
    entries: usize,
}

fn ten_million() -> usize {
    10_000_000
}

/// The plugin.
pub struct Zoo {
    entries: usize,
}

/// A count, and whether a negative value has been seen.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
    poisoned: bool,
}

impl Aggregator for Zoo {
    type Config = Config;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "zoo-huge-output",
        env!("CARGO_PKG_VERSION"),
        "Returns a huge list from `finish` once it has seen a negative value.",
    );

    fn new(config: Config) -> Result<Self, String> {
        Ok(Zoo {
            entries: config.entries,
        })
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
        }
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        state.poisoned |= other.poisoned;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        if state.poisoned {
            vec![Some(1.0); self.entries]
        } else {
            vec![Some(state.count as f64)]
        }
    }
}

export_aggregator_v1!(Zoo);
