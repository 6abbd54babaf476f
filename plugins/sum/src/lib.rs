//! `builtin/sum`: the sum of a field over a window, with compensated
//! summation so that long windows of small values (costs in USD) stay exact
//! to the last digits.

use sluice_sdk::stats::CompensatedSum;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Sums values.
pub struct Sum;

impl Aggregator for Sum {
    type Config = NoConfig;
    type State = CompensatedSum;
    const INFO: Info = Info::mergeable(
        "sum",
        env!("CARGO_PKG_VERSION"),
        "Sum of the values in the window (Neumaier-compensated).",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Sum)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::float("sum", "sum of the values")]
    }

    fn create(&self) -> CompensatedSum {
        CompensatedSum::default()
    }

    fn add(&self, sum: &mut CompensatedSum, values: &[f64], _times: &[i64]) {
        sum.add_all(values);
    }

    fn merge(&self, sum: &mut CompensatedSum, other: &CompensatedSum) -> Result<(), String> {
        sum.merge(other);
        Ok(())
    }

    fn finish(&self, sum: &CompensatedSum) -> Vec<Option<f64>> {
        vec![Some(sum.value())]
    }
}

export_aggregator!(Sum);
