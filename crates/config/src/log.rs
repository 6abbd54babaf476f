//! `log:`: the format and level of the host's diagnostic log.

use serde::Deserialize;

/// How logs are written, from the pipeline's `log:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// The most detailed level written.
    pub level: LogLevel,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with its fields.
    Json,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Problems the run survives (plugin failures, quarantines).
    Warn,
    /// Also what the run does (rebalances, shutdown).
    #[default]
    Info,
    /// Also every commit.
    Debug,
}
