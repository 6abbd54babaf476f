//! `builtin/variance`: population and sample variance of a field over a
//! window, computed with Welford's update and merged with Chan's formula so
//! that large offsets (timestamps, big latencies) do not cancel out.

use sluice_sdk::stats::Moments;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Variance of values.
pub struct Variance;

impl Aggregator for Variance {
    type Config = NoConfig;
    type State = Moments;
    const INFO: Info = Info::mergeable(
        "variance",
        env!("CARGO_PKG_VERSION"),
        "Population (n) and sample (n - 1) variance of the values in the window.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Variance)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::float("var_pop", "population variance; null without values"),
            Output::float(
                "var_samp",
                "sample variance; null with fewer than two values",
            ),
        ]
    }

    fn create(&self) -> Moments {
        Moments::default()
    }

    fn add(&self, m: &mut Moments, values: &[f64], _times: &[i64]) {
        m.add_all(values);
    }

    fn merge(&self, m: &mut Moments, other: &Moments) -> Result<(), String> {
        m.merge(other);
        Ok(())
    }

    fn finish(&self, m: &Moments) -> Vec<Option<f64>> {
        vec![m.var_pop(), m.var_samp()]
    }
}

export_aggregator!(Variance);
