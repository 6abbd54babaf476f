//! A custom trigger: alert before the window closes.
//!
//! Fires a window early, once, as soon as its running value of a watched
//! result column (say `latency_pct.p99`) goes above a threshold, so an alert
//! reaches the dashboard while the window is still open instead of at its
//! end. It checks every `check_every` elements, reading the column through
//! the host's preview, and otherwise fires like the default event-time
//! trigger: on time at the window's end, and once per late element.
//!
//! ```yaml
//! trigger:
//!   plugin: ../out/plugins/p99_alert.wasm
//!   config: { column: latency_pct.p99, above: 2000, check_every: 50 }
//! ```

use serde::{Deserialize, Serialize};
use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, export_trigger};

/// The configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The result column to watch, `<aggregation>.<output>`.
    pub column: String,
    /// Fire early when the column's value goes above this.
    pub above: f64,
    /// Look at the column every this many elements (each look costs the
    /// host one `finish` call per aggregation).
    #[serde(default = "default_check_every")]
    pub check_every: u32,
}

fn default_check_every() -> u32 {
    100
}

/// The alerting trigger.
pub struct P99Alert {
    config: Config,
}

/// Per window: whether the alert went out.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    alerted: bool,
}

impl P99Alert {
    /// While the window is open and has not alerted, look every N elements;
    /// then only late elements matter.
    fn interest(&self, state: &State) -> Interest {
        if state.alerted {
            Interest::Late
        } else {
            Interest::After(self.config.check_every)
        }
    }
}

impl Trigger for P99Alert {
    type Config = Config;
    type State = State;
    const INFO: Info = Info::mergeable(
        "p99-alert",
        env!("CARGO_PKG_VERSION"),
        "Fires a window early, once, when a watched result column (such as latency p99) \
         goes above a threshold; otherwise fires on the watermark.",
    )
    .with_config_help(r#"{"column": "latency_pct.p99", "above": 2000, "check_every": 100}"#);

    fn new(config: Config) -> Result<Self, String> {
        if config.check_every == 0 {
            return Err("key `check_every`: must be at least 1".into());
        }
        if !config.above.is_finite() {
            return Err("key `above`: must be a finite number".into());
        }
        Ok(P99Alert { config })
    }

    fn watches(&self) -> Vec<String> {
        vec![self.config.column.clone()]
    }

    fn on_elements(
        &self,
        state: &mut State,
        window: Window,
        batch: &Elements,
        watermark: i64,
    ) -> Decision {
        if watermark >= window.end {
            return Decision::fire(Interest::Late);
        }
        let crossed = batch
            .preview
            .first()
            .copied()
            .flatten()
            .is_some_and(|value| value > self.config.above);
        if crossed && !state.alerted {
            state.alerted = true;
            Decision::fire(self.interest(state))
        } else {
            Decision::wait(self.interest(state))
        }
    }

    fn on_event_time(&self, state: &mut State, window: Window, time: i64, _: i64) -> Decision {
        if time >= window.end {
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(self.interest(state))
        }
    }

    fn merge(&self, state: &mut State, other: &State, _: Window) -> Decision {
        state.alerted |= other.alerted;
        Decision::wait(self.interest(state))
    }
}

export_trigger!(P99Alert);
