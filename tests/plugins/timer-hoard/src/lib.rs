//! A hostile trigger that hoards timers: fires like `builtin/event-time`,
//! but hears of every element and asks, each time, for 64 new event-time
//! timers far in the future (the most one decision may set). No decision
//! breaks a rule, yet a window's pending timers grow with its elements.

use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, NoConfig, export_trigger};

/// Timers one decision asks for.
const PER_DECISION: i64 = 64;

/// The trigger.
pub struct Hoard;

impl Trigger for Hoard {
    type Config = NoConfig;
    /// Timers asked for so far in the window.
    type State = i64;
    const INFO: Info = Info::mergeable(
        "zoo-timer-hoard",
        env!("CARGO_PKG_VERSION"),
        "Test trigger that asks for 64 new timers on every element.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Hoard)
    }

    fn on_elements(
        &self,
        asked: &mut i64,
        window: Window,
        _: &Elements,
        watermark: i64,
    ) -> Decision {
        let mut d = if watermark >= window.end {
            Decision::fire(Interest::After(1))
        } else {
            Decision::wait(Interest::After(1))
        };
        for _ in 0..PER_DECISION {
            *asked += 1;
            d = d.with_event_timer(i64::MAX / 2 + *asked);
        }
        d
    }

    fn on_event_time(&self, _: &mut i64, window: Window, time: i64, _: i64) -> Decision {
        if time == window.end {
            Decision::fire(Interest::After(1))
        } else {
            Decision::wait(Interest::After(1))
        }
    }

    fn merge(&self, asked: &mut i64, other: &i64, _: Window) -> Decision {
        *asked += *other;
        Decision::wait(Interest::After(1))
    }
}

export_trigger!(Hoard);
