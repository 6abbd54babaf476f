//! `builtin/early`: event-time firing plus early results before the window
//! closes, every `every_events` elements (deterministic) and/or every `every`
//! of processing time (wall clock, so not reproducible run to run).
//!
//! Early results carry the window's cumulative result so far; the host marks
//! them `"emit": "early"`.

use serde::{Deserialize, Serialize};
use sluice_sdk::trigger::{Decision, Elements, Interest, Trigger, Window};
use sluice_sdk::{Info, export_trigger};

/// The configuration: at least one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wall-clock interval between early firings: `500ms`, `1s`, `2m`.
    #[serde(default)]
    pub every: Option<String>,
    /// Fire early after every this many elements of the window.
    #[serde(default)]
    pub every_events: Option<u32>,
}

/// Early firings on a count and/or a clock.
pub struct Early {
    every_ms: Option<u64>,
    every_events: Option<u32>,
}

/// Per window: elements since the last early firing, and whether a clock
/// timer is pending.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pending: u32,
    clock_set: bool,
}

/// Milliseconds in `500ms`, `1s`, `1.5s`, `2m`, `1h`.
fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("key `every`: {text:?} is not a duration such as 500ms or 1s"))?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        other => {
            return Err(format!(
                "key `every`: unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    let ms = (number * scale).round();
    if !(1.0..=1e12).contains(&ms) {
        return Err(format!("key `every`: {text:?} must be at least 1ms"));
    }
    Ok(ms as u64)
}

impl Early {
    /// Interest while the window is open: the remaining count, or late
    /// elements only when counting is off.
    fn interest(&self, state: &State) -> Interest {
        match self.every_events {
            Some(n) => Interest::After(n.saturating_sub(state.pending).max(1)),
            None => Interest::Late,
        }
    }

    /// Arms the clock for an open window that has none pending.
    fn arm(&self, state: &mut State, decision: Decision) -> Decision {
        match self.every_ms {
            Some(ms) if !state.clock_set => {
                state.clock_set = true;
                decision.with_processing_delay(ms)
            }
            _ => decision,
        }
    }
}

impl Trigger for Early {
    type Config = Config;
    type State = State;
    const INFO: Info = Info::mergeable(
        "early",
        env!("CARGO_PKG_VERSION"),
        "Event-time firing plus early cumulative results every N elements and/or every \
         interval of processing time.",
    )
    .with_config_help(
        r#"{"every": "1s"} (processing time) and/or {"every_events": 1000} (element count)"#,
    );

    fn new(config: Config) -> Result<Self, String> {
        let every_ms = config.every.as_deref().map(parse_duration).transpose()?;
        if config.every_events == Some(0) {
            return Err("key `every_events`: must be at least 1".into());
        }
        if every_ms.is_none() && config.every_events.is_none() {
            return Err("give `every` (processing time) and/or `every_events` (elements)".into());
        }
        Ok(Early {
            every_ms,
            every_events: config.every_events,
        })
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
        state.pending = state.pending.saturating_add(batch.count);
        let decision = match self.every_events {
            Some(n) if state.pending >= n => {
                state.pending = 0;
                Decision::fire(self.interest(state))
            }
            _ => Decision::wait(self.interest(state)),
        };
        self.arm(state, decision)
    }

    fn on_event_time(&self, state: &mut State, window: Window, time: i64, _: i64) -> Decision {
        if time >= window.end {
            *state = State::default();
            Decision::fire(Interest::Late)
        } else {
            Decision::wait(self.interest(state))
        }
    }

    fn on_processing_time(
        &self,
        state: &mut State,
        window: Window,
        _time: i64,
        watermark: i64,
    ) -> Decision {
        state.clock_set = false;
        if watermark >= window.end {
            // Closed: the on-time firing happened; no more clock firings.
            return Decision::wait(Interest::Late);
        }
        let decision = Decision::fire(self.interest(state));
        self.arm(state, decision)
    }

    fn merge(&self, state: &mut State, other: &State, window: Window) -> Decision {
        state.pending = state.pending.saturating_add(other.pending);
        let _ = window;
        let decision = Decision::wait(self.interest(state));
        if other.clock_set {
            state.clock_set = false;
        }
        self.arm(state, decision)
    }
}

export_trigger!(Early);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::trigger::Action;

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
    fn fires_every_n_elements_then_on_time() {
        let early = Early::new(Config {
            every: None,
            every_events: Some(3),
        })
        .unwrap();
        let mut s = State::default();
        let d = early.on_elements(&mut s, W, &batch(1), 0);
        assert_eq!(
            (d.action, d.interest),
            (Action::Continue, Interest::After(2))
        );
        let d = early.on_elements(&mut s, W, &batch(2), 0);
        assert_eq!((d.action, d.interest), (Action::Fire, Interest::After(3)));
        assert_eq!(
            early.on_event_time(&mut s, W, 100, 100).action,
            Action::Fire
        );
        assert_eq!(
            early.on_elements(&mut s, W, &batch(1), 120).action,
            Action::Fire
        );
    }

    #[test]
    fn clock_timer_is_armed_once_and_stops_after_the_end() {
        let early = Early::new(Config {
            every: Some("250ms".into()),
            every_events: None,
        })
        .unwrap();
        let mut s = State::default();
        let d = early.on_elements(&mut s, W, &batch(1), 0);
        assert_eq!(d.processing_delays, vec![250]);
        assert!(
            early
                .on_elements(&mut s, W, &batch(1), 0)
                .processing_delays
                .is_empty()
        );
        let d = early.on_processing_time(&mut s, W, 0, 50);
        assert_eq!(
            (d.action, d.processing_delays.clone()),
            (Action::Fire, vec![250])
        );
        let d = early.on_processing_time(&mut s, W, 0, 100);
        assert_eq!(d.action, Action::Continue);
        assert!(d.processing_delays.is_empty());
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(
            Early::new(Config {
                every: None,
                every_events: None
            })
            .is_err()
        );
        assert!(
            Early::new(Config {
                every: Some("1 parsec".into()),
                every_events: None
            })
            .is_err()
        );
        assert_eq!(parse_duration("1.5s"), Ok(1500));
    }
}
