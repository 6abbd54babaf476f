//! `builtin/stats`: count, sum, mean, min, max, variance, standard deviation
//! and quantiles of a field in one plugin call per batch, for dashboards that
//! want the whole picture of a latency or token column.

use serde::{Deserialize, Serialize};
use sluice_sdk::sketch::{QuantileSketch, Quantiles};
use sluice_sdk::stats::Moments;
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// All summary statistics at once.
pub struct Stats {
    quantiles: Quantiles,
    relative_accuracy: f64,
}

/// `{ "quantiles": [0.5, 0.9, 0.95, 0.99], "relative_accuracy": 0.01 }`, both
/// optional; `"quantiles": []` keeps no sketch (smaller state, faster).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default = "default_quantiles")]
    quantiles: Vec<f64>,
    #[serde(default = "default_accuracy")]
    relative_accuracy: f64,
}

fn default_quantiles() -> Vec<f64> {
    vec![0.5, 0.9, 0.95, 0.99]
}

fn default_accuracy() -> f64 {
    0.01
}

/// Moments, and a sketch when quantiles are asked for: boxed, so that a
/// window without one costs its moments alone (a `Box` serializes as what
/// it holds, so the snapshot bytes are those of an unboxed sketch).
#[derive(Serialize, Deserialize)]
pub struct StatsState {
    moments: Moments,
    sketch: Option<Box<QuantileSketch>>,
}

const MOMENT_OUTPUTS: [(&str, &str); 9] = [
    ("count", "number of values"),
    ("sum", "sum of the values"),
    ("mean", "arithmetic mean"),
    ("min", "smallest value"),
    ("max", "largest value"),
    ("var_pop", "population variance"),
    ("var_samp", "sample variance"),
    ("stddev_pop", "population standard deviation"),
    ("stddev_samp", "sample standard deviation"),
];

impl Aggregator for Stats {
    type Config = StatsConfig;
    type State = StatsState;
    const INFO: Info = Info::mergeable(
        "stats",
        env!("CARGO_PKG_VERSION"),
        "count, sum, mean, min, max, var_pop, var_samp, stddev_pop, stddev_samp and \
         quantiles (as builtin/percentiles) of the values in the window.",
    )
    .with_config_help(
        r#"{"quantiles": [0.5, 0.9, 0.95, 0.99], "relative_accuracy": 0.01}; [] for no quantiles"#,
    );

    fn new(config: StatsConfig) -> Result<Self, String> {
        QuantileSketch::new(config.relative_accuracy)?;
        Ok(Stats {
            quantiles: Quantiles::new(config.quantiles)?,
            relative_accuracy: config.relative_accuracy,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        let moments = MOMENT_OUTPUTS.iter().map(|&(name, description)| {
            if name == "count" {
                Output::integer(name, description)
            } else {
                Output::float(name, description)
            }
        });
        let quantiles = self
            .quantiles
            .names()
            .iter()
            .zip(self.quantiles.values())
            .map(|(name, q)| Output::float(name.as_str(), format!("quantile {q}")));
        moments.chain(quantiles).collect()
    }

    fn create(&self) -> StatsState {
        let sketch = (!self.quantiles.is_empty()).then(|| {
            // `new` checked the accuracy, so this cannot fail.
            Box::new(
                QuantileSketch::new(self.relative_accuracy).unwrap_or_else(|e| unreachable!("{e}")),
            )
        });
        StatsState {
            moments: Moments::default(),
            sketch,
        }
    }

    fn add(&self, state: &mut StatsState, values: &[f64], _times: &[i64]) {
        state.moments.add_all(values);
        if let Some(sketch) = &mut state.sketch {
            sketch.add_all(values);
        }
    }

    fn merge(&self, state: &mut StatsState, other: &StatsState) -> Result<(), String> {
        if let (Some(sketch), Some(theirs)) = (&mut state.sketch, &other.sketch) {
            sketch.merge(theirs)?;
        }
        state.moments.merge(&other.moments);
        Ok(())
    }

    fn finish(&self, state: &StatsState) -> Vec<Option<f64>> {
        let m = &state.moments;
        let mut out = vec![
            Some(m.count() as f64),
            Some(m.sum()),
            m.mean(),
            m.min(),
            m.max(),
            m.var_pop(),
            m.var_samp(),
            m.stddev_pop(),
            m.stddev_samp(),
        ];
        out.extend(
            self.quantiles
                .values()
                .iter()
                .map(|&q| state.sketch.as_ref().and_then(|s| s.quantile(q))),
        );
        out
    }
}

export_aggregator!(Stats);
