//! `builtin/count`: fires every `every_events` elements of a window (count
//! windows over a key when the window is long), purging by default so each
//! emission covers the elements since the previous one. At the window's end
//! the remainder, if any, fires too, so no element goes unreported.

use serde::{Deserialize, Serialize};
use sluice_sdk::trigger::{Action, Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, export_trigger};

/// The configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Elements per firing.
    pub every_events: u32,
    /// Empty the window after each firing (default true): each result then
    /// covers one batch of `every_events`; false makes them cumulative.
    #[serde(default = "yes")]
    pub purge: bool,
}

fn yes() -> bool {
    true
}

/// Fires on element counts.
pub struct Count {
    every: u32,
    purge: bool,
}

/// Elements since the last firing.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pending: u32,
}

impl Count {
    fn firing(&self) -> Action {
        if self.purge {
            Action::FireAndPurge
        } else {
            Action::Fire
        }
    }

    fn interest(&self, state: &State) -> Interest {
        Interest::After(self.every.saturating_sub(state.pending).max(1))
    }
}

impl Trigger for Count {
    type Config = Config;
    type State = State;
    const INFO: Info = Info::mergeable(
        "count",
        env!("CARGO_PKG_VERSION"),
        "Fires every N elements of a window (purging by default), and the remainder at \
         the window's end.",
    )
    .with_config_help(r#"{"every_events": 1000, "purge": true}"#);

    fn new(config: Config) -> Result<Self, String> {
        if config.every_events == 0 {
            return Err("key `every_events`: must be at least 1".into());
        }
        Ok(Count {
            every: config.every_events,
            purge: config.purge,
        })
    }

    fn on_elements(&self, state: &mut State, _: Window, batch: &Elements, _: i64) -> Decision {
        state.pending = state.pending.saturating_add(batch.count);
        if state.pending >= self.every {
            state.pending = 0;
            Decision::wait(self.interest(state)).with_action(self.firing())
        } else {
            Decision::wait(self.interest(state))
        }
    }

    fn on_event_time(&self, state: &mut State, window: Window, time: i64, _: i64) -> Decision {
        if time >= window.end && state.pending > 0 {
            state.pending = 0;
            Decision::wait(self.interest(state)).with_action(self.firing())
        } else {
            Decision::wait(self.interest(state))
        }
    }

    fn merge(&self, state: &mut State, other: &State, _: Window) -> Decision {
        state.pending = state.pending.saturating_add(other.pending);
        if state.pending >= self.every {
            state.pending = 0;
            Decision::wait(self.interest(state)).with_action(self.firing())
        } else {
            Decision::wait(self.interest(state))
        }
    }
}

export_trigger!(Count);

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { start: 0, end: 100 };

    fn batch(count: u32) -> Elements {
        Elements {
            count,
            min_time: 1,
            max_time: 1,
            preview: Vec::new(),
        }
    }

    #[test]
    fn fires_and_purges_every_n_then_the_remainder() {
        let c = Count::new(Config {
            every_events: 2,
            purge: true,
        })
        .unwrap();
        let mut s = State::default();
        assert_eq!(
            c.on_elements(&mut s, W, &batch(1), 0).interest,
            Interest::After(1)
        );
        assert_eq!(
            c.on_elements(&mut s, W, &batch(1), 0).action,
            Action::FireAndPurge
        );
        assert_eq!(
            c.on_event_time(&mut s, W, 100, 100).action,
            Action::Continue
        );
        c.on_elements(&mut s, W, &batch(1), 0);
        assert_eq!(
            c.on_event_time(&mut s, W, 100, 100).action,
            Action::FireAndPurge
        );
    }
}
