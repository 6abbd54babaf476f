//! A hostile trigger: fires like `builtin/event-time`, except that at the
//! end of a window starting on a whole minute it panics (a trap), and on the
//! first element of a window starting half a minute in it loops forever (a
//! timeout). The host must fire those windows on time by its own rule and
//! report the error.

use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, NoConfig, export_trigger};

/// The event-time rule with traps.
pub struct TriggerTrap;

fn cursed(window: Window) -> bool {
    window.start.rem_euclid(60_000) == 0
}

fn hangs(window: Window) -> bool {
    window.start.rem_euclid(60_000) == 30_000
}

impl Trigger for TriggerTrap {
    type Config = NoConfig;
    type State = ();
    const INFO: Info = Info::mergeable(
        "trigger-trap",
        env!("CARGO_PKG_VERSION"),
        "Test trigger that traps on windows starting on a whole minute.",
    );

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(TriggerTrap)
    }

    fn on_elements(&self, _: &mut (), window: Window, _: &Elements, watermark: i64) -> Decision {
        if hangs(window) {
            // The hang is the point: this trigger must be cut by the deadline.
            #[allow(clippy::empty_loop)]
            loop {}
        }
        if watermark >= window.end {
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(Interest::Late)
        }
    }

    fn on_event_time(&self, _: &mut (), window: Window, time: i64, _: i64) -> Decision {
        if time >= window.end && cursed(window) {
            panic!("trigger-trap: cursed window {}", window.start);
        }
        if time >= window.end {
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(Interest::Late)
        }
    }

    fn merge(&self, _: &mut (), _: &(), _: Window) -> Decision {
        Decision::wait(Interest::Late)
    }
}

export_trigger!(TriggerTrap);
