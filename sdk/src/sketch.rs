//! Mergeable quantile estimates with a relative-error guarantee.
//!
//! Built on DDSketch (the `sketches-ddsketch` crate): values fall into
//! logarithmic buckets of width set by the relative accuracy `alpha`, so the
//! estimate of any quantile is within `alpha * |x|` of the exact order
//! statistic `x`, however skewed the data, and two sketches merge exactly by
//! adding bucket counts. Latency distributions are long-tailed, which is the
//! case a relative bound serves and a rank bound (t-digest, KLL) does not.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// Buckets per sign kept before the lowest ones collapse. With `alpha = 0.01`
/// this covers 1e-9 to beyond 1e8 at full accuracy.
const MAX_BINS: u32 = 4096;

/// Magnitudes below this count as zero.
const MIN_VALUE: f64 = 1e-9;

/// A quantile sketch: the estimate of quantile `q` is within `alpha` relative
/// error of the exact order statistic of rank `floor(q * (n - 1))` (0-based)
/// of the values added, as long as every value's magnitude lies between
/// 1e-9 and `1e-9 * (1 + alpha)^4096` (beyond 1e8 for the default accuracy).
#[derive(Clone, Serialize, Deserialize)]
pub struct QuantileSketch {
    sketch: DDSketch,
}

impl QuantileSketch {
    /// An empty sketch with relative accuracy `alpha`, which must lie in (0, 1).
    pub fn new(alpha: f64) -> Result<Self, String> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(format!("relative_accuracy must be in (0, 1), got {alpha}"));
        }
        Ok(QuantileSketch {
            sketch: DDSketch::new(Config::new(alpha, MAX_BINS, MIN_VALUE)),
        })
    }

    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.sketch.add(x);
    }

    /// Folds in another sketch of the same accuracy.
    pub fn merge(&mut self, other: &QuantileSketch) -> Result<(), String> {
        self.sketch
            .merge(&other.sketch)
            .map_err(|e| format!("cannot merge sketches: {e}"))
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.sketch.count() as u64
    }

    /// The estimate of quantile `q` in [0, 1]; `None` for an empty sketch.
    ///
    /// Clamped to the exact minimum and maximum, which the sketch tracks: a
    /// bucket's representative value can lie just outside the data, and a p50
    /// below the window's `min` would puzzle a dashboard reader. Clamping only
    /// moves an estimate towards the exact value, so the bound still holds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let estimate = self.sketch.quantile(q).ok().flatten()?;
        match (self.sketch.min(), self.sketch.max()) {
            (Some(min), Some(max)) => Some(estimate.clamp(min, max)),
            _ => Some(estimate),
        }
    }
}

/// A list of quantiles to report, validated and named for output.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiles {
    qs: Vec<f64>,
    names: Vec<String>,
}

impl Quantiles {
    /// Checks that every quantile is in [0, 1] and that their names differ.
    pub fn new(qs: Vec<f64>) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::with_capacity(qs.len());
        for &q in &qs {
            if !(0.0..=1.0).contains(&q) {
                return Err(format!("quantiles: {q} is not in [0, 1]"));
            }
            let name = quantile_name(q);
            if names.contains(&name) {
                return Err(format!("quantiles: {q} is listed twice (as {name})"));
            }
            names.push(name);
        }
        Ok(Quantiles { qs, names })
    }

    /// The quantiles, in configured order.
    pub fn values(&self) -> &[f64] {
        &self.qs
    }

    /// Output names such as `p50`, `p99.9`, in the same order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether no quantile is asked for.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }
}

/// `0.5` -> `p50`, `0.999` -> `p99.9`, `0.125` -> `p12.5`.
pub fn quantile_name(q: f64) -> String {
    let percent = format!("{:.6}", q * 100.0);
    let trimmed = percent.trim_end_matches('0').trim_end_matches('.');
    format!("p{trimmed}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        let names: Vec<String> = [0.5, 0.95, 0.99, 0.999, 0.125, 0.0, 1.0]
            .iter()
            .map(|&q| quantile_name(q))
            .collect();
        assert_eq!(names, ["p50", "p95", "p99", "p99.9", "p12.5", "p0", "p100"]);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Quantiles::new(vec![1.5]).is_err());
        assert!(Quantiles::new(vec![0.5, 0.5]).is_err());
        assert!(QuantileSketch::new(0.0).is_err());
        assert!(QuantileSketch::new(f64::NAN).is_err());
    }

    proptest! {
        #[test]
        fn estimate_is_within_the_relative_bound(
            mut values in prop::collection::vec(prop_oneof![-1e6..-1e-3f64, 1e-3..1e6f64], 1..500),
            q in 0.0..=1.0f64,
        ) {
            let mut sketch = QuantileSketch::new(0.01).unwrap();
            values.iter().for_each(|&v| sketch.add(v));
            values.sort_by(f64::total_cmp);
            let exact = values[(q * (values.len() - 1) as f64) as usize];
            let got = sketch.quantile(q).unwrap();
            prop_assert!((got - exact).abs() <= 0.01 * exact.abs() * (1.0 + 1e-12), "q={q}: {got} vs {exact}");
        }
    }
}
