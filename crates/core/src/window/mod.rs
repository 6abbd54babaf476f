//! Event-time windows: which window an event belongs to, when a window fires,
//! and when an event is too late for it.
//!
//! When a window emits is up to its trigger plugin (see `trigger`). The
//! default, `builtin/event-time`, is Flink's event-time trigger: a window
//! `[start, end)` fires when the watermark reaches `end`, and an event that
//! arrives after its window fired but within the allowed lateness updates the
//! window, which is emitted again as `late`. Whatever the trigger, an event
//! whose windows all have `watermark >= end + allowed_lateness` on its arrival
//! is late and goes to the late-data output.

mod operator;
pub mod persist;
mod session;
mod sliding;
mod store;
mod trigger;
mod tumbling;

pub use operator::{EventOutcome, FiringTag, WindowOperator};
pub use store::{PluginHealth, Swap};
pub use trigger::{Interest, TRIGGER_ERROR, TriggerRecord, Triggers, now_ms};

use std::sync::Arc;

use sluice_config::{WindowConfig, millis};

use crate::decode::KeyId;
use crate::plugin::grouped::OutputValue;

pub use crate::plugin::Window;

/// Why a window's result is being emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitKind {
    /// The watermark passed the window's end.
    OnTime,
    /// Before the watermark reached the end (early triggers).
    Early,
    /// After the window fired, because a late event within the allowed lateness updated it.
    Late,
}

impl EmitKind {
    /// The name result records use.
    pub fn as_str(self) -> &'static str {
        match self {
            EmitKind::OnTime => "on_time",
            EmitKind::Early => "early",
            EmitKind::Late => "late",
        }
    }
}

/// One emission of one window for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// The key.
    pub key: KeyId,
    /// The window.
    pub window: Window,
    /// Why it is emitted.
    pub emit: EmitKind,
    /// Per aggregation, its outputs in declared order (all `None` for an
    /// aggregation that failed).
    pub outputs: Vec<Vec<Option<OutputValue>>>,
    /// `(aggregation index, why)` for each aggregation whose plugin failed
    /// for this window, in aggregation order; empty when all succeeded.
    ///
    /// Kept beside the outputs rather than instead of them, so a record has
    /// the same columns whatever failed.
    pub errors: Vec<(usize, Arc<str>)>,
}

impl WindowResult {
    /// The outputs as numbers, per aggregation: integers and floats as
    /// `f64`, every other kind (and a missing value) as `None`. What gap
    /// filling, trigger previews and the status page's charts work with.
    pub fn numbers(&self) -> Vec<Vec<Option<f64>>> {
        self.outputs
            .iter()
            .map(|agg| {
                agg.iter()
                    .map(|v| v.as_ref().and_then(OutputValue::number))
                    .collect()
            })
            .collect()
    }
}

/// The start of the window of length `size` (shifted by `offset`) holding `t`.
pub(crate) fn align(t: i64, size: i64, offset: i64) -> i64 {
    t - (t - offset).rem_euclid(size)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The window shapes, with sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// See [`WindowConfig::Tumbling`].
    Tumbling {
        /// Window length.
        size: i64,
        /// Shift from the epoch.
        offset: i64,
    },
    /// See [`WindowConfig::Sliding`]; kept as panes of `gcd(size, slide)`.
    Sliding {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
        /// Shift from the epoch.
        offset: i64,
    },
    /// See [`WindowConfig::Session`].
    Session {
        /// Inactivity that closes a session.
        gap: i64,
    },
}

impl From<&WindowConfig> for WindowSpec {
    /// The window shape of a config, in milliseconds.
    fn from(window: &WindowConfig) -> Self {
        match *window {
            WindowConfig::Tumbling { size, offset } => WindowSpec::Tumbling {
                size: millis(size),
                offset: millis(offset),
            },
            WindowConfig::Sliding {
                size,
                slide,
                offset,
            } => WindowSpec::Sliding {
                size: millis(size),
                slide: millis(slide),
                offset: millis(offset),
            },
            WindowConfig::Session { gap } => WindowSpec::Session { gap: millis(gap) },
        }
    }
}

impl WindowSpec {
    /// Whether the shape needs plugins that can merge states.
    pub fn needs_merge(&self) -> bool {
        !matches!(self, WindowSpec::Tumbling { .. })
    }

    /// The longest an event's window reaches past the event: the size, or
    /// a session's gap (the session of the event alone). Every window
    /// holding an event at `t` ends by `t + span`.
    pub fn span(&self) -> i64 {
        match *self {
            WindowSpec::Tumbling { size, .. } | WindowSpec::Sliding { size, .. } => size,
            WindowSpec::Session { gap } => gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_handles_offsets_and_negative_times() {
        assert_eq!(align(12_345, 10_000, 0), 10_000);
        assert_eq!(align(10_000, 10_000, 0), 10_000);
        assert_eq!(align(-1, 10_000, 0), -10_000);
        assert_eq!(align(12_345, 10_000, 3_000), 3_000);
        assert_eq!(align(13_000, 10_000, 3_000), 13_000);
        assert_eq!(gcd(10_000, 4_000), 2_000);
    }
}
