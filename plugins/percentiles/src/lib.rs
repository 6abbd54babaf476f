//! `builtin/percentiles`: configurable quantiles of a field over a window,
//! from a mergeable DDSketch with a relative-error bound (see
//! `sluice_sdk::sketch` for the exact guarantee).

use serde::Deserialize;
use sluice_sdk::sketch::{QuantileSketch, Quantiles};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// Estimates quantiles.
pub struct Percentiles {
    quantiles: Quantiles,
    relative_accuracy: f64,
}

/// `{ "quantiles": [0.5, 0.95, 0.99], "relative_accuracy": 0.01 }`, both optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentilesConfig {
    #[serde(default = "default_quantiles")]
    quantiles: Vec<f64>,
    #[serde(default = "default_accuracy")]
    relative_accuracy: f64,
}

fn default_quantiles() -> Vec<f64> {
    vec![0.5, 0.95, 0.99]
}

fn default_accuracy() -> f64 {
    0.01
}

impl Aggregator for Percentiles {
    type Config = PercentilesConfig;
    type State = QuantileSketch;
    const INFO: Info = Info::mergeable(
        "percentiles",
        env!("CARGO_PKG_VERSION"),
        "Quantiles of the values in the window, each within relative_accuracy \
         (default 1%) of the exact order statistic of rank floor(q * (n - 1)).",
    )
    .with_config_help(
        r#"{"quantiles": [0.5, 0.95, 0.99], "relative_accuracy": 0.01}; outputs are named p50, p95, p99, p99.9, ..."#,
    );

    fn new(config: PercentilesConfig) -> Result<Self, String> {
        if config.quantiles.is_empty() {
            return Err("quantiles: list at least one quantile".into());
        }
        QuantileSketch::new(config.relative_accuracy)?;
        Ok(Percentiles {
            quantiles: Quantiles::new(config.quantiles)?,
            relative_accuracy: config.relative_accuracy,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        self.quantiles
            .names()
            .iter()
            .zip(self.quantiles.values())
            .map(|(name, q)| Output::float(name.as_str(), format!("quantile {q}")))
            .collect()
    }

    fn create(&self) -> QuantileSketch {
        // `new` checked the accuracy, so this cannot fail.
        QuantileSketch::new(self.relative_accuracy).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn add(&self, sketch: &mut QuantileSketch, values: &[f64], _times: &[i64]) {
        sketch.add_all(values);
    }

    fn merge(&self, sketch: &mut QuantileSketch, other: &QuantileSketch) -> Result<(), String> {
        sketch.merge(other)
    }

    fn finish(&self, sketch: &QuantileSketch) -> Vec<Option<f64>> {
        self.quantiles
            .values()
            .iter()
            .map(|&q| sketch.quantile(q))
            .collect()
    }
}

export_aggregator!(Percentiles);
