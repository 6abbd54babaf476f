//! `builtin/ema`: exponential moving average of a field over the window's
//! values taken in event-time order, for a smoothed "latest level" that is
//! less noisy than the last value and more recent than the mean.
//!
//! Events arrive out of order, so the average cannot be folded in as values
//! come: the state keeps the window's `(time, value)` pairs and the average
//! is computed over them in time order when the window fires. Keeping the
//! pairs also makes the state mergeable: two windows' pairs are one sorted
//! sequence, whichever is merged into which. The cost is memory linear in the
//! window's events (16 bytes each).

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// An exponential moving average with a fixed smoothing factor.
pub struct Ema {
    alpha: f64,
}

/// `{ "alpha": 0.2 }` or `{ "span": 9 }` (alpha = 2 / (span + 1)); one of them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    alpha: Option<f64>,
    span: Option<f64>,
}

/// The window's values with their event times, sorted by (time, value).
#[derive(Default, Serialize, Deserialize)]
pub struct EmaState {
    points: Vec<(i64, f64)>,
}

/// Event-time order; equal times in value order, so that the result does not
/// depend on arrival order at all (a redelivery or a different interleaving
/// of partitions gives the same average).
fn order(a: &(i64, f64), b: &(i64, f64)) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
}

impl EmaState {
    fn insert_all(&mut self, more: impl IntoIterator<Item = (i64, f64)>) {
        let before = self.points.len();
        self.points.extend(more);
        // Mostly in order already: only sort when the new tail breaks the order.
        let sorted = self.points[before.saturating_sub(1)..]
            .windows(2)
            .all(|w| order(&w[0], &w[1]).is_le());
        if !sorted {
            self.points.sort_by(order);
        }
    }
}

impl Aggregator for Ema {
    type Config = EmaConfig;
    type State = EmaState;
    const INFO: Info = Info::mergeable(
        "ema",
        env!("CARGO_PKG_VERSION"),
        "Exponential moving average of the window's values in event-time order \
         (equal times in value order): s1 = x1, sk = alpha * xk + (1 - alpha) * s(k-1). \
         Also the last value in that order. Keeps every (time, value) pair of the \
         window, so memory grows with the window's events.",
    )
    .with_config_help(
        r#"{"alpha": 0.2} or {"span": 9} meaning alpha = 2 / (span + 1); 0 < alpha <= 1"#,
    );

    fn new(config: EmaConfig) -> Result<Self, String> {
        let alpha = match (config.alpha, config.span) {
            (Some(alpha), None) => alpha,
            (None, Some(span)) if span >= 1.0 && span.is_finite() => 2.0 / (span + 1.0),
            (None, Some(span)) => return Err(format!("span: must be at least 1, not {span}")),
            (Some(_), Some(_)) => return Err("give either alpha or span, not both".into()),
            (None, None) => return Err("alpha or span: one is required".into()),
        };
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(format!("alpha: must be in (0, 1], not {alpha}"));
        }
        Ok(Ema { alpha })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::float("ema", "exponential moving average in event-time order"),
            Output::float("last", "the value with the latest event time"),
        ]
    }

    fn create(&self) -> EmaState {
        EmaState::default()
    }

    fn add(&self, state: &mut EmaState, values: &[f64], times: &[i64]) {
        state.insert_all(times.iter().copied().zip(values.iter().copied()));
    }

    fn merge(&self, state: &mut EmaState, other: &EmaState) -> Result<(), String> {
        state.insert_all(other.points.iter().copied());
        Ok(())
    }

    fn finish(&self, state: &EmaState) -> Vec<Option<f64>> {
        let mut values = state.points.iter().map(|&(_, x)| x);
        let Some(first) = values.next() else {
            return vec![None, None];
        };
        let (ema, last) = values.fold((first, first), |(s, _), x| {
            (self.alpha * x + (1.0 - self.alpha) * s, x)
        });
        vec![Some(ema), Some(last)]
    }
}

export_aggregator!(Ema);

#[cfg(test)]
mod tests {
    use super::*;

    fn ema(config: &str, points: &[(i64, f64)]) -> Vec<Option<f64>> {
        let ema = Ema::new(serde_json::from_str(config).expect("config")).expect("valid");
        let mut state = ema.create();
        let (times, values): (Vec<i64>, Vec<f64>) = points.iter().copied().unzip();
        ema.add(&mut state, &values, &times);
        ema.finish(&state)
    }

    #[test]
    fn averages_in_event_time_order_not_arrival_order() {
        // In time order: 10, 20, 40. s = 10; 0.5*20+0.5*10 = 15; 0.5*40+0.5*15 = 27.5.
        let got = ema(r#"{"alpha":0.5}"#, &[(3, 40.0), (1, 10.0), (2, 20.0)]);
        assert_eq!(got, vec![Some(27.5), Some(40.0)]);
    }

    #[test]
    fn span_means_two_over_span_plus_one() {
        // span 3: alpha 0.5, as above.
        let got = ema(r#"{"span":3}"#, &[(1, 10.0), (2, 20.0), (3, 40.0)]);
        assert_eq!(got, vec![Some(27.5), Some(40.0)]);
        assert_eq!(ema(r#"{"span":3}"#, &[]), vec![None, None]);
    }

    #[test]
    fn bad_configs_are_refused() {
        for config in [
            r#"{}"#,
            r#"{"alpha":0}"#,
            r#"{"alpha":1.5}"#,
            r#"{"alpha":0.5,"span":3}"#,
            r#"{"span":0.5}"#,
        ] {
            let parsed: EmaConfig = serde_json::from_str(config).expect("json");
            assert!(Ema::new(parsed).is_err(), "{config}");
        }
    }
}
