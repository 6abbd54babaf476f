//! `fill:`: gap filling of tumbling windows (the filler itself is
//! `sluice_core::fill`).

use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, WindowConfig, de_duration};

/// `fill: { strategy: linear, max_gap: 60s }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillConfig {
    /// How a missing window's values are made up.
    pub strategy: FillStrategy,
    /// The longest stretch after a key's last real window that is filled.
    #[serde(deserialize_with = "de_duration")]
    pub max_gap: Duration,
}

/// How a missing window's values are made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillStrategy {
    /// Every output 0.
    Zero,
    /// The outputs of the key's last real window.
    Forward,
    /// Each output on the straight line between the real windows on either side.
    Linear,
    /// Each output's mean over the key's real windows so far.
    Mean,
    /// No filling (as if `fill:` were absent).
    None,
}

/// Refuses `fill:` on anything but a tumbling window, and a `max_gap` that
/// cannot hold one window.
pub fn validate(fill: Option<&FillConfig>, window: &WindowConfig) -> Result<(), ConfigError> {
    let Some(fill) = fill else { return Ok(()) };
    if fill.strategy == FillStrategy::None {
        return Ok(());
    }
    let WindowConfig::Tumbling { size, .. } = window else {
        return Err(ConfigError(
            "key `fill`: gap filling needs tumbling windows (a regular series of \
             non-overlapping windows); sliding windows overlap and session windows \
             have no fixed length"
                .into(),
        ));
    };
    if fill.max_gap < *size {
        return Err(ConfigError(format!(
            "key `fill.max_gap`: {} is shorter than one window ({}), so nothing would be filled",
            humantime::format_duration(fill.max_gap),
            humantime::format_duration(*size)
        )));
    }
    Ok(())
}
