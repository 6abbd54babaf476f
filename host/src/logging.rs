//! Diagnostic logs: what the host did that is not data (plugin failures,
//! rebalances, commits, shutdown), as text for people or JSON lines for a log
//! pipeline, on stderr. Results, late records and dead letters never go
//! here: they are data, written by the sinks.

use serde::Deserialize;
use tracing::level_filters::LevelFilter;

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

/// Installs the process-wide log writer; a second call changes nothing.
pub fn init(config: &LogConfig) {
    let level = match config.level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    // Only fails when a subscriber is already installed, which is fine.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
