//! `builtin/zscore`: outliers of a window, as the number of values whose
//! z-score against the window's mean and standard deviation exceeds a
//! threshold, the largest z-score, and how surprising that largest value
//! would be under a normal distribution (a two-sided tail p-value, from statrs).
//!
//! A value's z-score needs the mean and deviation of the whole window, which
//! are known only when it fires, so the state keeps the window's values
//! (sorted, so that the count of outliers is two binary searches and the
//! result does not depend on arrival or merge order). Memory grows with the
//! window's events (8 bytes each).

use serde::{Deserialize, Serialize};
use sluice_sdk::stats::Moments;
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};
use statrs::distribution::{ContinuousCDF, Normal};

/// Counts values far from the window's mean.
pub struct ZScore {
    threshold: f64,
    normal: Normal,
}

/// `{ "threshold": 3 }` (default 3): |z| above it counts as an outlier.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreConfig {
    #[serde(default = "default_threshold")]
    threshold: f64,
}

fn default_threshold() -> f64 {
    3.0
}

/// The window's values in ascending order.
#[derive(Default, Serialize, Deserialize)]
pub struct Values {
    sorted: Vec<f64>,
}

impl Values {
    fn insert_all(&mut self, more: &[f64]) {
        self.sorted.extend_from_slice(more);
        self.sorted.sort_by(f64::total_cmp);
    }
}

impl Aggregator for ZScore {
    type Config = ZScoreConfig;
    type State = Values;
    const INFO: Info = Info::mergeable(
        "zscore",
        env!("CARGO_PKG_VERSION"),
        "z = (x - mean) / stddev_pop over the window's values. outliers: values \
         with |z| > threshold; max_z: the largest |z|; p_value: 2 * P(Z > max_z) \
         for a standard normal Z, to 9 significant digits; mean and stddev as used. \
         z is undefined (null, and no outliers) for fewer than two values or a zero \
         deviation. Keeps every value of the window, so memory grows with the \
         window's events.",
    )
    .with_config_help(r#"{"threshold": 3}, optional"#);

    fn new(config: ZScoreConfig) -> Result<Self, String> {
        if !(config.threshold > 0.0 && config.threshold.is_finite()) {
            return Err(format!(
                "threshold: must be positive, not {}",
                config.threshold
            ));
        }
        let normal = Normal::new(0.0, 1.0).map_err(|e| format!("standard normal: {e}"))?;
        Ok(ZScore {
            threshold: config.threshold,
            normal,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::integer("outliers", "values with |z| above the threshold"),
            Output::float("max_z", "largest |z| in the window"),
            Output::float("p_value", "two-sided normal tail probability of max_z"),
            Output::float("mean", "mean of the window's values"),
            Output::float("stddev", "population standard deviation"),
        ]
    }

    fn create(&self) -> Values {
        Values::default()
    }

    fn add(&self, state: &mut Values, values: &[f64], _times: &[i64]) {
        state.insert_all(values);
    }

    fn merge(&self, state: &mut Values, other: &Values) -> Result<(), String> {
        state.insert_all(&other.sorted);
        Ok(())
    }

    fn finish(&self, state: &Values) -> Vec<Option<f64>> {
        // Moments over the sorted values: the same sequence whatever the
        // arrival or merge order, so the same bits.
        let mut moments = Moments::default();
        moments.add_all(&state.sorted);
        let (mean, stddev) = (moments.mean(), moments.stddev_pop());
        let (Some(m), Some(sd), Some(lo), Some(hi)) = (mean, stddev, moments.min(), moments.max())
        else {
            return vec![Some(0.0), None, None, mean, stddev];
        };
        if sd <= 0.0 || moments.count() < 2 {
            return vec![Some(0.0), None, None, mean, stddev];
        }
        let max_z = ((hi - m) / sd).max((m - lo) / sd);
        // z > t  <=>  x > m + t*sd, counted without rounding trouble by
        // comparing z itself at the edges of the sorted slice.
        let z = |x: f64| ((x - m) / sd).abs();
        let above = state.sorted.len()
            - state
                .sorted
                .partition_point(|&x| x <= m || z(x) <= self.threshold);
        let below = state
            .sorted
            .partition_point(|&x| x < m && z(x) > self.threshold);
        let p_value = significant(2.0 * self.normal.sf(max_z), 9);
        vec![
            Some((above + below) as f64),
            Some(max_z),
            Some(p_value),
            mean,
            stddev,
        ]
    }
}

/// `x` rounded to `digits` significant digits.
///
/// statrs's normal tail is accurate to about 1e-10 relative; the p-value is
/// printed with the digits it can vouch for, not with noise in the last ones.
fn significant(x: f64, digits: usize) -> f64 {
    format!("{x:.*e}", digits.saturating_sub(1))
        .parse()
        .unwrap_or(x)
}

export_aggregator!(ZScore);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_values_beyond_the_threshold_on_both_sides() {
        let zs =
            ZScore::new(serde_json::from_str(r#"{"threshold":1}"#).expect("json")).expect("valid");
        let mut state = zs.create();
        // mean 5, population stddev 2: z = -1.5, -0.5, -0.5, -0.5, 0, 0, 1, 2 (x = 2,4,4,4,5,5,7,9).
        zs.add(
            &mut state,
            &[9.0, 2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0],
            &[0; 8],
        );
        let out = zs.finish(&state);
        assert_eq!(&out[..2], &[Some(2.0), Some(2.0)]);
        assert_eq!(&out[3..], &[Some(5.0), Some(2.0)]);
        // 2 * P(Z > 2) = erfc(2 / sqrt 2) = 0.04550026389635842, to 9 digits.
        assert_eq!(out[2], Some(0.045_500_263_9));
    }

    #[test]
    fn constant_or_single_values_have_no_z() {
        let zs = ZScore::new(serde_json::from_str("{}").expect("json")).expect("valid");
        let mut state = zs.create();
        zs.add(&mut state, &[3.0, 3.0], &[0, 1]);
        assert_eq!(
            zs.finish(&state),
            vec![Some(0.0), None, None, Some(3.0), Some(0.0)]
        );
    }
}
