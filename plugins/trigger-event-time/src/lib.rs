//! `builtin/event-time`: the default trigger. A window fires once when the
//! watermark passes its end, then once more for every late element that
//! arrives within the allowed lateness.
//!
//! It keeps no state (so the host keeps none for it between calls) and asks
//! to hear only of late elements, so an on-time event costs no trigger call.

use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, NoConfig, export_trigger};

/// Fires on the watermark.
pub struct EventTime;

impl Trigger for EventTime {
    type Config = NoConfig;
    type State = ();
    const INFO: Info = Info::mergeable(
        "event-time",
        env!("CARGO_PKG_VERSION"),
        "Fires when the watermark passes the window's end, then once per late element \
         within the allowed lateness.",
    )
    .stateless();

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(EventTime)
    }

    fn on_elements(&self, _: &mut (), window: Window, _: &Elements, watermark: i64) -> Decision {
        if watermark >= window.end {
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(Interest::Late)
        }
    }

    fn on_event_time(&self, _: &mut (), window: Window, time: i64, _: i64) -> Decision {
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

export_trigger!(EventTime);

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { start: 0, end: 10 };

    fn batch() -> Elements {
        Elements {
            count: 1,
            min_time: 5,
            max_time: 5,
            preview: Vec::new(),
        }
    }

    #[test]
    fn fires_at_the_end_and_for_late_elements_only() {
        let t = EventTime;
        assert_eq!(
            t.on_elements(&mut (), W, &batch(), 3).action,
            sluice_sdk::trigger::Action::Continue
        );
        assert_eq!(
            t.on_event_time(&mut (), W, 10, 10).action,
            sluice_sdk::trigger::Action::Fire
        );
        assert_eq!(
            t.on_elements(&mut (), W, &batch(), 12).action,
            sluice_sdk::trigger::Action::Fire
        );
        assert_eq!(
            t.on_elements(&mut (), W, &batch(), 3).interest,
            Interest::Late
        );
    }
}
