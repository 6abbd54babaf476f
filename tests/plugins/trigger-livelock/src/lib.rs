//! A hostile trigger that never lets the watermark step end: fires like
//! `builtin/event-time`, but each window's first element asks for a timer
//! one millisecond after the window's start, and every call for a timer asks
//! for another, at the same instant (`{"step": 0}`, the default: already
//! due) or `step` milliseconds later (a chain through every millisecond up
//! to the watermark). Each call is fast, so no call limit stops it.

use serde::Deserialize;
use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, export_trigger};

/// `{"step": ms}`: how far after the instant it is called for each new timer is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    step: i64,
}

/// The trigger.
pub struct Livelock {
    step: i64,
}

impl Trigger for Livelock {
    type Config = Config;
    type State = ();
    const INFO: Info = Info::mergeable(
        "zoo-trigger-livelock",
        env!("CARGO_PKG_VERSION"),
        "Test trigger that asks for a timer at the instant it is called for.",
    );

    fn new(config: Config) -> Result<Self, String> {
        Ok(Livelock { step: config.step })
    }

    fn on_elements(&self, _: &mut (), window: Window, _: &Elements, watermark: i64) -> Decision {
        if watermark >= window.end {
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(Interest::Late).with_event_timer(window.start + 1)
        }
    }

    fn on_event_time(&self, _: &mut (), window: Window, time: i64, _: i64) -> Decision {
        let again = Decision::wait(Interest::Late).with_event_timer(time + self.step);
        if time >= window.end {
            Decision {
                action: sluice_sdk::trigger::Action::Fire,
                ..again
            }
        } else {
            again
        }
    }

    fn merge(&self, _: &mut (), _: &(), _: Window) -> Decision {
        Decision::wait(Interest::Late)
    }
}

export_trigger!(Livelock);
