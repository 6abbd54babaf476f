//! `builtin/min`: the smallest value of a field over a window.

use sluice_sdk::stats::min_of;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Keeps the smallest value.
pub struct Min;

impl Aggregator for Min {
    type Config = NoConfig;
    type State = Option<f64>;
    const INFO: Info = Info::mergeable(
        "min",
        env!("CARGO_PKG_VERSION"),
        "Smallest value in the window.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Min)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::float("min", "smallest value")]
    }

    fn create(&self) -> Option<f64> {
        None
    }

    fn add(&self, min: &mut Option<f64>, values: &[f64], _times: &[i64]) {
        for &x in values {
            *min = Some(min.map_or(x, |m| min_of(m, x)));
        }
    }

    fn merge(&self, min: &mut Option<f64>, other: &Option<f64>) -> Result<(), String> {
        self.add(min, other.as_slice(), &[]);
        Ok(())
    }

    fn finish(&self, min: &Option<f64>) -> Vec<Option<f64>> {
        vec![*min]
    }
}

export_aggregator!(Min);
