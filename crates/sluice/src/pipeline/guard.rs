//! Checks that make an obviously wrong run say so: too many dead letters (a
//! field-name typo dead-letters every event), dead letters arriving too
//! fast (a binary file read as lines), event times that cannot be right
//! (seconds read as milliseconds, one event from a clock centuries ahead).
//!
//! Bad input never stops a run by itself (each bad event is dead-lettered
//! with its reason); these checks look at the run as a whole. Warnings
//! change nothing in the output. `on_share: fail` and `max_per_second` stop
//! the run with an [`InputError`] (exit code 3).

use std::time::Instant;

use chrono::Datelike as _;

use crate::error::InputError;
use sluice_config::{DeadLetterLimits, ShareAction, TimeFormat};
use sluice_core::RunSummary;
use sluice_core::source::Origin;

/// Event times from this instant on (the year 2500, UTC, in epoch
/// milliseconds) are taken for a wrong time format or a broken clock, and
/// said so once. Compared as an integer: the check is on every event.
const IMPLAUSIBLE_MS: i64 = 16_725_225_600_000;

/// The burst a dead-letter rate limit lets through, in seconds of its rate.
const BURST_SECONDS: u64 = 10;

/// The dead-letter limits of a run and what it has seen against them.
#[derive(Debug)]
pub(super) struct DeadLetterGuard {
    limits: DeadLetterLimits,
    /// Why the first dead letter was one: the likeliest clue to a flood.
    first_reason: Option<String>,
    /// Whether the share warning has been given (it is given once while
    /// the run goes on, and once more at the end).
    warned: bool,
    /// Token bucket of the rate limit: dead letters it still lets through,
    /// as of `refilled`.
    tokens: f64,
    refilled: Instant,
}

impl DeadLetterGuard {
    pub fn new(limits: &DeadLetterLimits) -> Self {
        let burst = limits
            .max_per_second
            .map_or(0, |r| r.saturating_mul(BURST_SECONDS));
        Self {
            limits: limits.clone(),
            first_reason: None,
            warned: false,
            tokens: burst as f64,
            refilled: Instant::now(),
        }
    }

    /// Raw bytes a dead letter keeps.
    pub fn max_raw(&self) -> usize {
        usize::try_from(self.limits.max_raw_bytes).unwrap_or(usize::MAX)
    }

    /// Counts one dead letter against the rate limit; an error once dead
    /// letters come faster than it allows (beyond its burst).
    pub fn on_dead_letter(&mut self, reason: &str, total: u64) -> Result<(), InputError> {
        if self.first_reason.is_none() {
            self.first_reason = Some(reason.to_string());
        }
        let Some(rate) = self.limits.max_per_second else {
            return Ok(());
        };
        let now = Instant::now();
        let burst = rate.saturating_mul(BURST_SECONDS) as f64;
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Err(InputError(format!(
                "dead letters come faster than dead_letter_limits.max_per_second allows ({rate} \
                 a second, with a burst of {}): {total} so far, the last because {reason}; \
                 stopping before they fill the disk (is the source the input you meant?)",
                rate.saturating_mul(BURST_SECONDS)
            )));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Judges the share of dead letters in `summary`: once `min_events`
    /// events have been read, and at the end of the input (`at_end`)
    /// whatever their number. Warns (once while running, again at the end)
    /// or, with `on_share: fail`, returns the error that stops the run.
    pub fn judge(&mut self, summary: &RunSummary, at_end: bool) -> Result<(), InputError> {
        let (dead, read) = (summary.dead_lettered, summary.events_read);
        if read == 0 || (read < self.limits.min_events && !at_end) {
            return Ok(());
        }
        let share = dead as f64 / read as f64;
        if share <= self.limits.max_share || (self.warned && !at_end) {
            return Ok(());
        }
        let message = format!(
            "{dead} of {read} events read ({:.1}%) went to the dead-letter output, more than \
             dead_letter_limits.max_share ({}%); the first because {}. A field name or time \
             format that does not match the input does this",
            share * 100.0,
            self.limits.max_share * 100.0,
            self.first_reason
                .as_deref()
                .unwrap_or("(not seen in this run)")
        );
        match self.limits.on_share {
            ShareAction::Fail => Err(InputError(format!(
                "{message}; stopping (dead_letter_limits.on_share: fail)"
            ))),
            ShareAction::Warn => {
                self.warned = true;
                tracing::warn!("{message}");
                Ok(())
            }
        }
    }
}

/// Warnings about event times that cannot be right.
#[derive(Debug)]
pub(super) struct TimeGuard {
    format: TimeFormat,
    /// A jump of the largest event time seen by more than this is warned of.
    jump: i64,
    /// The largest event time seen so far in this process.
    latest: Option<i64>,
    year_warned: bool,
    jump_warned: bool,
}

impl TimeGuard {
    /// Checks for `format`, warning of jumps ahead by more than `jump` ms.
    pub fn new(format: TimeFormat, jump: i64) -> Self {
        Self {
            format,
            jump: jump.max(1),
            latest: None,
            year_warned: false,
            jump_warned: false,
        }
    }

    /// Looks at one event's time (`at` says where the event came from):
    /// warns once of a time beyond the year 2500, naming the format
    /// that would make sense of it, and once of a time that jumps far ahead
    /// of every earlier one (its watermark would make the events after it
    /// late).
    pub fn observe(&mut self, time: i64, at: &Origin<'_>, max_future: bool) {
        let at = Place(at);
        if !self.year_warned && time >= IMPLAUSIBLE_MS {
            self.year_warned = true;
            let year = chrono::DateTime::from_timestamp_millis(time).map(|t| t.year());
            let hint = self.better_format(time).map_or(String::new(), |f| {
                format!(" The values look like `{}`.", format_key(f))
            });
            tracing::warn!(
                "the event at {at} has time {time} ms, in the year {}: is \
                 `event.time.format: {}` right?{hint}",
                year.map_or_else(|| "(out of range)".to_string(), |y| y.to_string()),
                format_key(self.format)
            );
        }
        match self.latest {
            Some(latest) if time > latest => {
                if !self.jump_warned && time - latest > self.jump {
                    self.jump_warned = true;
                    let bound = if max_future {
                        ""
                    } else {
                        " Set `watermark.max_future` to dead-letter events so far ahead instead."
                    };
                    tracing::warn!(
                        "the event at {at} has time {time} ms, {} ahead of every event before \
                         it: if its clock is wrong, the watermark it sets makes the events \
                         after it late.{bound}",
                        humantime::format_duration(std::time::Duration::from_millis(
                            u64::try_from(time - latest).unwrap_or(u64::MAX)
                        ))
                    );
                }
                self.latest = Some(time);
            }
            None => self.latest = Some(time),
            Some(_) => {}
        }
    }

    /// A format under which the raw value behind `time` falls between 1990
    /// and 2200, if one does.
    fn better_format(&self, time: i64) -> Option<TimeFormat> {
        let scale = |f: TimeFormat| match f {
            TimeFormat::EpochSeconds => Some(1e3),
            TimeFormat::EpochMillis => Some(1.0),
            TimeFormat::EpochMicros => Some(1e-3),
            TimeFormat::EpochNanos => Some(1e-6),
            TimeFormat::Rfc3339 | TimeFormat::KafkaTimestamp => None,
        };
        let ours = scale(self.format)?;
        [
            TimeFormat::EpochSeconds,
            TimeFormat::EpochMillis,
            TimeFormat::EpochMicros,
            TimeFormat::EpochNanos,
        ]
        .into_iter()
        .find(|&f| {
            scale(f).is_some_and(|theirs| {
                let ms = time as f64 / ours * theirs;
                ms.is_finite()
                    && chrono::DateTime::from_timestamp_millis(ms as i64)
                        .is_some_and(|t| (1990..=2200).contains(&t.year()))
            })
        })
    }
}

/// Where an event came from, in words: `line 12`, `topic t partition 0 offset 7`.
struct Place<'a>(&'a Origin<'a>);

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self.0 {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "topic {topic:?} partition {partition} offset {offset}"),
        }
    }
}

/// A time format as the config spells it.
fn format_key(format: TimeFormat) -> &'static str {
    match format {
        TimeFormat::EpochSeconds => "epoch_seconds",
        TimeFormat::EpochMillis => "epoch_millis",
        TimeFormat::EpochMicros => "epoch_micros",
        TimeFormat::EpochNanos => "epoch_nanos",
        TimeFormat::Rfc3339 => "rfc3339",
        TimeFormat::KafkaTimestamp => "kafka_timestamp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_time_unit_is_named() {
        let guard = TimeGuard::new(TimeFormat::EpochSeconds, 1);
        // Milliseconds read as seconds: the year ~55,800.
        assert_eq!(
            guard.better_format(1_700_000_000_000 * 1000),
            Some(TimeFormat::EpochMillis)
        );
        let guard = TimeGuard::new(TimeFormat::EpochMillis, 1);
        assert_eq!(
            guard.better_format(1_700_000_000_000_000),
            Some(TimeFormat::EpochMicros)
        );
    }

    #[test]
    fn the_share_is_judged_after_min_events_and_at_the_end() {
        let limits = DeadLetterLimits {
            on_share: ShareAction::Fail,
            min_events: 100,
            ..DeadLetterLimits::default()
        };
        let mut guard = DeadLetterGuard::new(&limits);
        let summary = |read, dead| RunSummary {
            events_read: read,
            dead_lettered: dead,
            ..RunSummary::default()
        };
        assert!(guard.judge(&summary(50, 50), false).is_ok());
        assert!(guard.judge(&summary(100, 10), false).is_ok());
        assert!(guard.judge(&summary(100, 11), false).is_err());
        assert!(guard.judge(&summary(5, 1), true).is_err());
    }

    #[test]
    fn the_rate_limit_lets_a_burst_through_then_stops() {
        let limits = DeadLetterLimits {
            max_per_second: Some(10),
            ..DeadLetterLimits::default()
        };
        let mut guard = DeadLetterGuard::new(&limits);
        let mut stopped = None;
        for i in 0..1000 {
            if guard.on_dead_letter("bad", i).is_err() {
                stopped = Some(i);
                break;
            }
        }
        // Ten seconds' worth, and a little refill while the loop ran.
        assert!(
            stopped.is_some_and(|n| (100..110).contains(&n)),
            "{stopped:?}"
        );
    }
}
