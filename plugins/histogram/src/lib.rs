//! `builtin/histogram`: counts of values per bucket, with fixed or
//! exponentially growing bucket bounds, in the cumulative `le` form that
//! Prometheus and Grafana heatmaps read.

use serde::Deserialize;
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// A histogram over configured upper bounds.
pub struct Histogram {
    /// Upper bounds, strictly increasing and finite; `+Inf` is implicit.
    bounds: Vec<f64>,
}

/// Either `{ "buckets": [10, 50, 100] }` (upper bounds) or
/// `{ "exponential": { "start": 1, "factor": 2, "count": 10 } }`
/// (bounds start, start*factor, ..., count of them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    buckets: Option<Vec<f64>>,
    exponential: Option<Exponential>,
}

/// Bounds `start * factor^i` for `i` in `0..count`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    start: f64,
    factor: f64,
    count: u32,
}

/// Most buckets a histogram may have: each is one output column.
const MAX_BUCKETS: usize = 256;

impl Histogram {
    fn bucket_of(&self, x: f64) -> usize {
        // The first bound >= x; values above every bound go to the +Inf bucket.
        self.bounds.partition_point(|&b| b < x)
    }
}

/// `le_100`, `le_0.5`, `le_neg5`: output names may not hold `-`.
fn bound_name(b: f64) -> String {
    let text = format!("{b}");
    format!("le_{}", text.replace('-', "neg"))
}

impl Aggregator for Histogram {
    type Config = HistogramConfig;
    type State = Vec<u64>;
    const INFO: Info = Info::mergeable(
        "histogram",
        env!("CARGO_PKG_VERSION"),
        "Cumulative bucket counts: le_B is the number of values <= B for each \
         configured upper bound B, and le_inf the number of all values.",
    )
    .with_config_help(
        r#"{"buckets": [10, 50, 100]} or {"exponential": {"start": 1, "factor": 2, "count": 10}}"#,
    );

    fn new(config: HistogramConfig) -> Result<Self, String> {
        let bounds = match (config.buckets, config.exponential) {
            (Some(buckets), None) => buckets,
            (None, Some(e)) => {
                if !(e.start > 0.0 && e.start.is_finite()) {
                    return Err(format!(
                        "exponential.start: must be positive, not {}",
                        e.start
                    ));
                }
                if !(e.factor > 1.0 && e.factor.is_finite()) {
                    return Err(format!(
                        "exponential.factor: must be above 1, not {}",
                        e.factor
                    ));
                }
                (0..e.count)
                    .map(|i| e.start * e.factor.powi(i as i32))
                    .collect()
            }
            (Some(_), Some(_)) => return Err("give either buckets or exponential, not both".into()),
            (None, None) => return Err("buckets or exponential: one is required".into()),
        };
        if bounds.is_empty() || bounds.len() > MAX_BUCKETS {
            return Err(format!(
                "buckets: give 1 to {MAX_BUCKETS} bounds, not {}",
                bounds.len()
            ));
        }
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "buckets: bounds must be finite and increasing: {bounds:?}"
            ));
        }
        let names: std::collections::HashSet<String> =
            bounds.iter().map(|&b| bound_name(b)).collect();
        if names.len() != bounds.len() {
            return Err(format!(
                "buckets: bounds {bounds:?} print to the same output name"
            ));
        }
        Ok(Histogram { bounds })
    }

    fn outputs(&self) -> Vec<Output> {
        self.bounds
            .iter()
            .map(|&b| Output::integer(bound_name(b), format!("values <= {b}")))
            .chain([Output::integer("le_inf", "all values")])
            .collect()
    }

    fn create(&self) -> Vec<u64> {
        vec![0; self.bounds.len() + 1]
    }

    fn add(&self, counts: &mut Vec<u64>, values: &[f64], _times: &[i64]) {
        for &x in values {
            if let Some(n) = counts.get_mut(self.bucket_of(x)) {
                *n += 1;
            }
        }
    }

    fn merge(&self, counts: &mut Vec<u64>, other: &Vec<u64>) -> Result<(), String> {
        if counts.len() != other.len() {
            return Err(format!(
                "histograms with {} and {} buckets cannot be merged",
                counts.len(),
                other.len()
            ));
        }
        counts.iter_mut().zip(other).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn finish(&self, counts: &Vec<u64>) -> Vec<Option<f64>> {
        counts
            .iter()
            .scan(0u64, |total, &n| {
                *total += n;
                Some(Some(*total as f64))
            })
            .collect()
    }
}

export_aggregator!(Histogram);

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(config: &str) -> Result<Histogram, String> {
        Histogram::new(serde_json::from_str(config).map_err(|e| e.to_string())?)
    }

    #[test]
    fn counts_are_cumulative_and_bounds_inclusive() {
        let h = histogram(r#"{"buckets":[10,50,100]}"#).expect("valid");
        let names: Vec<String> = h.outputs().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["le_10", "le_50", "le_100", "le_inf"]);
        let mut counts = h.create();
        h.add(
            &mut counts,
            &[1.0, 10.0, 10.5, 99.0, 100.0, 1000.0],
            &[0; 6],
        );
        let want = [2.0, 3.0, 5.0, 6.0].map(Some);
        assert_eq!(h.finish(&counts), want);
    }

    #[test]
    fn exponential_bounds_multiply() {
        let h = histogram(r#"{"exponential":{"start":0.5,"factor":2,"count":3}}"#).expect("valid");
        let names: Vec<String> = h.outputs().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["le_0.5", "le_1", "le_2", "le_inf"]);
    }

    #[test]
    fn bad_bounds_are_refused() {
        for config in [
            r#"{"buckets":[]}"#,
            r#"{"buckets":[5,5]}"#,
            r#"{"buckets":[10,1]}"#,
            r#"{}"#,
            r#"{"exponential":{"start":1,"factor":1,"count":3}}"#,
            r#"{"buckets":[1],"exponential":{"start":1,"factor":2,"count":3}}"#,
        ] {
            assert!(histogram(config).is_err(), "{config}");
        }
        assert_eq!(bound_name(-5.0), "le_neg5");
    }
}
