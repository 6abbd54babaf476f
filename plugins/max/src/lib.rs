//! `builtin/max`: the largest value of a field over a window.

use sluice_sdk::stats::max_of;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Keeps the largest value.
pub struct Max;

impl Aggregator for Max {
    type Config = NoConfig;
    type State = Option<f64>;
    const INFO: Info = Info::mergeable(
        "max",
        env!("CARGO_PKG_VERSION"),
        "Largest value in the window.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Max)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::float("max", "largest value")]
    }

    fn create(&self) -> Option<f64> {
        None
    }

    fn add(&self, max: &mut Option<f64>, values: &[f64], _times: &[i64]) {
        for &x in values {
            *max = Some(max.map_or(x, |m| max_of(m, x)));
        }
    }

    fn merge(&self, max: &mut Option<f64>, other: &Option<f64>) -> Result<(), String> {
        self.add(max, other.as_slice(), &[]);
        Ok(())
    }

    fn finish(&self, max: &Option<f64>) -> Vec<Option<f64>> {
        vec![*max]
    }
}

export_aggregator!(Max);
