//! `builtin/rate`: events per second over the window, for throughput
//! dashboards (requests per second of a service, tokens per second).
//!
//! A plugin does not see its window's bounds, so the window length is part
//! of the configuration; the rate over the span between the first and the
//! last event is reported beside it, which needs no configuration and shows
//! a burst inside a mostly idle window.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator};

/// Counts events and the span of their times.
pub struct Rate {
    window_seconds: Option<f64>,
}

/// `{ "window_seconds": 60 }`: the window length, to divide the count by.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    window_seconds: Option<f64>,
}

/// Count and earliest and latest event time (ms); all combine by sum, min and max.
#[derive(Serialize, Deserialize)]
pub struct RateState {
    count: u64,
    first: i64,
    last: i64,
}

impl Aggregator for Rate {
    type Config = RateConfig;
    type State = RateState;
    const INFO: Info = Info::mergeable(
        "rate",
        env!("CARGO_PKG_VERSION"),
        "Events per second: count / window_seconds (null when window_seconds is not \
         configured), and (count - 1) / seconds between the first and last event time \
         (null for fewer than two events or a zero span).",
    )
    .with_config_help(r#"{"window_seconds": 60}, the window length (optional)"#);

    fn new(config: RateConfig) -> Result<Self, String> {
        if let Some(w) = config.window_seconds
            && !(w > 0.0 && w.is_finite())
        {
            return Err(format!("window_seconds: must be positive, not {w}"));
        }
        Ok(Rate {
            window_seconds: config.window_seconds,
        })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::integer("count", "events in the window"),
            Output::float("per_second", "count / window_seconds"),
            Output::float(
                "span_per_second",
                "(count - 1) / seconds from the first to the last event",
            ),
        ]
    }

    fn create(&self) -> RateState {
        RateState {
            count: 0,
            first: i64::MAX,
            last: i64::MIN,
        }
    }

    fn add(&self, state: &mut RateState, values: &[f64], times: &[i64]) {
        state.count += values.len() as u64;
        for &t in times {
            state.first = state.first.min(t);
            state.last = state.last.max(t);
        }
    }

    fn merge(&self, state: &mut RateState, other: &RateState) -> Result<(), String> {
        state.count += other.count;
        state.first = state.first.min(other.first);
        state.last = state.last.max(other.last);
        Ok(())
    }

    fn finish(&self, state: &RateState) -> Vec<Option<f64>> {
        let count = state.count as f64;
        let span_ms = state.last.saturating_sub(state.first);
        let span_rate =
            (state.count >= 2 && span_ms > 0).then(|| (count - 1.0) / (span_ms as f64 / 1000.0));
        vec![
            Some(count),
            self.window_seconds.map(|w| count / w),
            span_rate,
        ]
    }
}

export_aggregator!(Rate);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_by_the_window_and_by_the_span() {
        let rate = Rate::new(serde_json::from_str(r#"{"window_seconds":10}"#).expect("json"))
            .expect("valid");
        let mut state = rate.create();
        assert_eq!(rate.finish(&state), vec![Some(0.0), Some(0.0), None]);
        // 5 events over 2 s: 4 intervals in 2 s.
        rate.add(&mut state, &[1.0; 5], &[1000, 1500, 2000, 2500, 3000]);
        assert_eq!(rate.finish(&state), vec![Some(5.0), Some(0.5), Some(2.0)]);
    }

    #[test]
    fn a_non_positive_window_is_refused() {
        for config in [r#"{"window_seconds":0}"#, r#"{"window_seconds":-1}"#] {
            assert!(Rate::new(serde_json::from_str(config).expect("json")).is_err());
        }
    }
}
