//! Diagnostic logs: what the host did that is not data (plugin failures,
//! rebalances, commits, shutdown), as text for people or JSON lines for a log
//! pipeline, on stderr. Results, late records and dead letters never go
//! here: they are data, written by the sinks.

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_config::{LogConfig, LogFormat, LogLevel};
use tracing::level_filters::LevelFilter;

/// Whether the run asked for JSON logs (`log: { format: json }`), so that
/// the last words of the process are JSON lines too.
static JSON: AtomicBool = AtomicBool::new(false);

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
    JSON.store(config.format == LogFormat::Json, Ordering::Relaxed);
}

/// Writes the run's last line on stderr: its summary (`error` false) or the
/// error that ended it. Plain text (`sluice: ...`, `sluice: error: ...`)
/// unless the run asked for JSON logs, then one JSON line shaped like the
/// other log lines (`timestamp`, `level`, `fields.message`, `target`),
/// whatever the log level, so that a log pipeline sees how the run ended.
pub fn last_words(message: &str, error: bool) {
    if JSON.load(Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": if error { "ERROR" } else { "INFO" },
            "fields": { "message": message },
            "target": "sluice",
        });
        eprintln!("{line}");
    } else if error {
        eprintln!("sluice: error: {message}");
    } else {
        eprintln!("sluice: {message}");
    }
}
