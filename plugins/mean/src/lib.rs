//! `builtin/mean`: the arithmetic mean of a field over a window. With a
//! boolean field (true = 1, false = 0) it is a rate, such as an error rate.

use serde::{Deserialize, Serialize};
use sluice_sdk::stats::CompensatedSum;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Averages values.
pub struct Mean;

/// How many values, and their compensated sum.
#[derive(Default, Serialize, Deserialize)]
pub struct MeanState {
    count: u64,
    sum: CompensatedSum,
}

impl Aggregator for Mean {
    type Config = NoConfig;
    type State = MeanState;
    const INFO: Info = Info::mergeable(
        "mean",
        env!("CARGO_PKG_VERSION"),
        "Arithmetic mean of the values in the window; null for a window without values.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Mean)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::float("mean", "arithmetic mean")]
    }

    fn create(&self) -> MeanState {
        MeanState::default()
    }

    fn add(&self, state: &mut MeanState, values: &[f64], _times: &[i64]) {
        state.count += values.len() as u64;
        state.sum.add_all(values);
    }

    fn merge(&self, state: &mut MeanState, other: &MeanState) -> Result<(), String> {
        state.count += other.count;
        state.sum.merge(&other.sum);
        Ok(())
    }

    fn finish(&self, state: &MeanState) -> Vec<Option<f64>> {
        vec![(state.count > 0).then(|| state.sum.value() / state.count as f64)]
    }
}

export_aggregator!(Mean);
