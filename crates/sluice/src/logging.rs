//! Diagnostic logs: what the host did that is not data (plugin failures,
//! rebalances, commits, shutdown), as text for people or JSON lines for a log
//! pipeline, on stderr. Results, late records and dead letters never go
//! here: they are data, written by the sinks.

use sluice_config::{LogConfig, LogFormat, LogLevel};
use tracing::level_filters::LevelFilter;

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
