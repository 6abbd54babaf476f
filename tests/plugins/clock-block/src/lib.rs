//! Waits on the monotonic clock in `add` on a negative value, calling
//! `wasi:clocks/monotonic-clock` and `wasi:io/poll` directly.
//!
//! Counts values like `builtin/count` until it meets a negative value, so a
//! test can make one window misbehave and watch the others stay correct.
//! On a negative value it blocks on a pollable for `u64::MAX` nanoseconds,
//! polls a list of far-off pollables, sleeps 3 s through `std`, and then
//! (unless the config says `"then": "count"`) waits in a loop for the clock
//! to move, which a stopped clock never does. A host whose WASI calls block
//! in real time hangs on the first wait.

use serde::{Deserialize, Serialize};
use sluice_sdk::{Aggregator, Info, Output, export_aggregator_v1};

/// `{"then": "wait"}` (the default): after the waits, loop until the clock
/// moves; `{"then": "count"}`: count the value like any other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    then: Then,
}

/// What the plugin does once its waits have returned.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Wait for the clock to move, for ever.
    #[default]
    Wait,
    /// Count the value.
    Count,
}

/// The plugin.
pub struct Zoo {
    then: Then,
}

/// A count, and whether a negative value has been seen.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    count: u64,
    poisoned: bool,
}

#[cfg(target_arch = "wasm32")]
fn wait(then: Then) {
    use wasip2::clocks::monotonic_clock;
    // For ever, by the WIT's own reckoning.
    monotonic_clock::subscribe_duration(u64::MAX).block();
    // An instant that never comes, and 3 s, polled together.
    let never = monotonic_clock::subscribe_instant(u64::MAX);
    let soon = monotonic_clock::subscribe_duration(3_000_000_000);
    let _ = wasip2::io::poll::poll(&[&never, &soon]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    if then == Then::Wait {
        let start = monotonic_clock::now();
        while monotonic_clock::now() == start {
            monotonic_clock::subscribe_duration(1_000_000_000).block();
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn wait(_: Then) {}

impl Aggregator for Zoo {
    type Config = Config;
    type State = Tally;
    const INFO: Info = Info::mergeable(
        "zoo-clock-block",
        env!("CARGO_PKG_VERSION"),
        "Waits on the monotonic clock in `add` on a negative value.",
    );

    fn new(config: Config) -> Result<Self, String> {
        Ok(Zoo { then: config.then })
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::integer("count", "number of values")]
    }

    fn create(&self) -> Tally {
        Tally::default()
    }

    fn add(&self, state: &mut Tally, values: &[f64], _times: &[i64]) {
        if values.iter().any(|v| *v < 0.0) {
            state.poisoned = true;
            wait(self.then);
        }
        state.count += values.len() as u64;
    }

    fn merge(&self, state: &mut Tally, other: &Tally) -> Result<(), String> {
        state.count += other.count;
        state.poisoned |= other.poisoned;
        Ok(())
    }

    fn finish(&self, state: &Tally) -> Vec<Option<f64>> {
        vec![Some(state.count as f64)]
    }
}

export_aggregator_v1!(Zoo);
