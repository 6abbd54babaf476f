//! `builtin/count` under another state format: the count and the sum of the
//! event times, so its snapshots are not the bytes of format 1. Open windows
//! cannot move to it; a hot reload runs it beside the old version, which
//! finishes them. Its `generation` output is 3, so a result shows which
//! version finished its window (`count-v2` says 2, `builtin/count` has none).

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, NoConfig, Output, export_aggregator_v1};

/// Counts events, in state format 2.
pub struct CountFormat2;

/// Format 2: the count with the sum of the event times seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tally {
    events: u64,
    time_sum: i64,
}

impl Aggregator for CountFormat2 {
    type Config = NoConfig;
    type State = Tally;
    const INFO: Info = Info {
        state_version: 2,
        ..Info::mergeable(
            "count",
            "0.3.0",
            "Number of events (state format 2); `generation` is 3 (hot-reload test).",
        )
    };

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(CountFormat2)
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::integer("count", "number of events"),
            Output::integer("generation", "always 3: this is the third version"),
        ]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, tally: &mut Tally, values: &[f64], times: &[i64]) {
        tally.events += values.len() as u64;
        tally.time_sum = times.iter().fold(tally.time_sum, |s, t| s.wrapping_add(*t));
    }

    fn merge(&self, tally: &mut Tally, other: &Tally) -> Result<(), String> {
        tally.events += other.events;
        tally.time_sum = tally.time_sum.wrapping_add(other.time_sum);
        Ok(())
    }

    fn finish(&self, tally: &Tally) -> Vec<Option<f64>> {
        vec![Some(tally.events as f64), Some(3.0)]
    }
}

export_aggregator_v1!(CountFormat2);
