//! Returns a fraction (or, with `{"value": "nan"}`, NaN) for its integer
//! output once it has seen a negative value: 13.5 where the WIT promises
//! an integral count.
//!
//! Counts values like `builtin/count` until it meets a negative value, so a
//! test can make one window misbehave and watch the others stay correct.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator_v1};

/// `{"value": "half"}` (the default): the count plus 0.5; `"nan"`: NaN.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    value: Wrong,
}

/// Which wrong value a poisoned `finish` returns.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Wrong {
    /// The count plus a half.
    #[default]
    Half,
    /// Not a number.
    Nan,
}

/// The plugin.
pub struct Zoo {
    value: Wrong,
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
        "zoo-wrong-type",
        env!("CARGO_PKG_VERSION"),
        "Returns a fraction for its integer output once it has seen a negative value.",
    );

    fn new(config: Config) -> Result<Self, String> {
        Ok(Zoo {
            value: config.value,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of values")]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        state.poisoned |= values.iter().any(|v| *v < 0.0);
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        state.poisoned |= other.poisoned;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        let count = state.count as f64;
        vec![Some(match (state.poisoned, self.value) {
            (false, _) => count,
            (true, Wrong::Half) => count + 0.5,
            (true, Wrong::Nan) => f64::NAN,
        })]
    }
}

export_aggregator_v1!(Zoo);
