//! `builtin/stddev`: population and sample standard deviation of a field over a
//! window, computed with Welford's update and merged with Chan's formula so
//! that large offsets (timestamps, big latencies) do not cancel out.

use sluice_sdk::stats::Moments;
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator};

/// Standard deviation of values.
pub struct Stddev;

impl Aggregator for Stddev {
    type Config = NoConfig;
    type State = Moments;
    const INFO: Info = Info::mergeable(
        "stddev",
        env!("CARGO_PKG_VERSION"),
        "Population (n) and sample (n - 1) standard deviation of the values in the window.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Stddev)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::float(
                "stddev_pop",
                "population standard deviation; null without values",
            ),
            Output::float(
                "stddev_samp",
                "sample standard deviation; null with fewer than two values",
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
        vec![m.stddev_pop(), m.stddev_samp()]
    }
}

export_aggregator!(Stddev);
