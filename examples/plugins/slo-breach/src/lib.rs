//! A custom sluice plugin: how many requests in a window broke a latency SLO.
//!
//! Written against `sluice-sdk` the way a user would write their own: a
//! config struct, a state type, and the `Aggregator` methods. Build it with
//! `cargo build --target wasm32-wasip2 --profile plugin -p sluice-example-slo-breach`
//! and point a pipeline at the `.wasm` file (see `examples/llm-latency.yaml`).

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// Counts values above a threshold.
pub struct SloBreach {
    threshold: f64,
}

/// `{ "threshold": 2000 }`: a value strictly above it is a breach.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    threshold: f64,
}

/// Requests seen and requests over the threshold.
#[derive(Default, Serialize, Deserialize)]
pub struct Tally {
    total: u64,
    breaches: u64,
}

impl Aggregator for SloBreach {
    type Config = Config;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "slo-breach",
        env!("CARGO_PKG_VERSION"),
        "Counts the values above an SLO threshold and their share of all values.",
    )
    .with_config_help(r#"{"threshold": 2000} (required): values above it are breaches"#);

    fn new(config: Config) -> Result<Self, String> {
        if !config.threshold.is_finite() {
            return Err("threshold: must be a finite number".into());
        }
        Ok(SloBreach {
            threshold: config.threshold,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::integer("total", "values seen"),
            Output::integer("breaches", "values above the threshold"),
            Output::float("breach_ratio", "breaches / total; null for no values"),
        ]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, tally: &mut Tally, values: &[f64], _times: &[i64]) {
        tally.total += values.len() as u64;
        tally.breaches += values.iter().filter(|&&v| v > self.threshold).count() as u64;
    }

    fn merge(&self, tally: &mut Tally, other: &Tally) -> Result<(), String> {
        tally.total += other.total;
        tally.breaches += other.breaches;
        Ok(())
    }

    fn finish(&self, tally: &Tally) -> Vec<Option<f64>> {
        let ratio = (tally.total > 0).then(|| tally.breaches as f64 / tally.total as f64);
        vec![Some(tally.total as f64), Some(tally.breaches as f64), ratio]
    }
}

export_aggregator!(SloBreach);
